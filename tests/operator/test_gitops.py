"""GitOps end to end: a model change committed to Git reaches Ready through real Flux controllers.

A git server on loopback (git's own http-backend) holds the models repository; Flux's
source-controller and kustomize-controller (built from their Go modules) run against the real
control plane with the GitRepository + Kustomization users apply (``gitops/flux/``); the operator
(the chart's Deployment) quantizes, gates and rolls out on the real node. The user's three
commits: a new model, a serving-only change, a change that fails the gate. Each transition's time
is recorded in the user guide.

The tests run in order on one repository (each needs the previous state).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.flux import FluxControllers, crd_files

from ..gitops.argocd import APPLICATION_EXAMPLE, application_crd, verdicts
from ..gitops.git_server import GitServer, commit_and_push
from .conftest import Cluster, OperatorRelease, demo_namespace, load_sample
from .test_demo_rollout import PIPELINE_TIMEOUT, detect

FLUX_EXAMPLE = Path(__file__).resolve().parents[2] / "gitops" / "flux" / "rtdetr-models.yaml"
NAME = "shapes-demo"
KUSTOMIZATIONS = "/apis/kustomize.toolkit.fluxcd.io/v1"


@dataclass
class GitOps:
    cluster: Cluster
    namespace: str
    flux: FluxControllers
    checkout: Path
    document: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def commit(self, message: str) -> str:
        path = self.checkout / "models" / f"{NAME}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(self.document))
        return commit_and_push(self.checkout, message)

    def kustomization(self) -> dict[str, Any]:
        found = self.cluster.get(f"{KUSTOMIZATIONS}/namespaces/{self.namespace}/kustomizations/rtdetr-models")
        assert found is not None
        return found

    def kustomization_ready(self) -> dict[str, Any] | None:
        self.flux.check_running()
        status = self.kustomization().get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)

    def wait_applied(self, commit: str, ready: str, timeout: float, watch: bool = False) -> tuple[dict[str, Any], float]:
        """Wait until the Kustomization reports Ready=``ready`` for ``commit``; with ``watch``,
        fail if it ever reported Ready=True for that commit while the model was not Ready."""
        started = time.monotonic()

        def check() -> dict[str, Any] | None:
            condition = self.kustomization_ready()
            revision = (self.kustomization().get("status") or {}).get("lastAttemptedRevision", "")
            if condition is None or commit not in revision:
                return None
            if watch and condition["status"] == "True":
                model_ready = self.cluster.condition(self.namespace, NAME, "Ready")
                assert model_ready is not None and model_ready["status"] == "True", (
                    f"Flux said Ready while the model is {model_ready}"
                )
            return condition if condition["status"] == ready else None

        condition = self.cluster.wait(check, timeout, f"Kustomization Ready={ready} for {commit[:8]}", interval=1)
        return condition, time.monotonic() - started


def wait_established(cluster: Cluster, *names: str) -> None:
    def established(name: str) -> bool:
        crd = cluster.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    cluster.wait(lambda: all(established(name) for name in names), 60, f"CRDs {names} established")


@pytest.fixture(scope="module")
def gitops(cluster: Cluster, operator: OperatorRelease, shapes_data: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitOps]:  # fmt: skip
    work = tmp_path_factory.mktemp("gitops")
    namespace = demo_namespace(cluster, shapes_data)
    for crd in crd_files():
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    wait_established(cluster, "gitrepositories.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io")
    flux = FluxControllers(cluster.plane.kubeconfig, work / "flux")
    server = GitServer(work / "git")
    try:
        checkout = server.repository("models", work / "checkout")
        document = load_sample("demo-shapes.yaml")
        document["metadata"]["namespace"] = namespace
        # The user's Flux objects, as shipped, pointed at this repository and namespace.
        for obj in yaml.safe_load_all(FLUX_EXAMPLE.read_text()):
            obj["metadata"]["namespace"] = namespace
            if obj["kind"] == "GitRepository":
                obj["spec"].update(url=f"{server.url}/models.git", interval="5s")
            else:
                obj["spec"].update(timeout="10m", retryInterval="5s")
            cluster.apply(obj)
        yield GitOps(cluster, namespace, flux, checkout, document)
    finally:
        flux.stop()
        server.stop()


def test_a_committed_model_reaches_ready_only_when_it_serves(gitops: GitOps) -> None:
    commit = gitops.commit("Add the shapes model")
    condition, seconds = gitops.wait_applied(commit, "True", PIPELINE_TIMEOUT, watch=True)
    gitops.timings["new model"] = seconds
    model = gitops.cluster.model(gitops.namespace, NAME)
    assert model["status"]["phase"] == "Ready" and verdicts([model])[0]["status"] == "Healthy"
    jobs = gitops.cluster.jobs(gitops.namespace, "quantize")
    assert len(jobs) == 1, "Flux applied the model once; the operator quantized it once"
    print(f"GitOps: commit -> Kustomization Ready {seconds:.0f} s ({condition['message']})")


def test_a_serving_only_commit_rolls_out_without_quantizing(gitops: GitOps) -> None:
    jobs_before = {j["metadata"]["name"] for j in gitops.cluster.jobs(gitops.namespace, "quantize")}
    gitops.document["spec"]["serving"]["scoreThreshold"] = 0.25
    commit = gitops.commit("Lower the score threshold")
    _, seconds = gitops.wait_applied(commit, "True", 300, watch=True)
    gitops.timings["serving-only change"] = seconds
    model = gitops.cluster.model(gitops.namespace, NAME)
    assert model["status"]["observedGeneration"] == model["metadata"]["generation"] == 2
    deployment = gitops.cluster.deployment(gitops.namespace, NAME)
    assert deployment is not None and "0.25" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {j["metadata"]["name"] for j in gitops.cluster.jobs(gitops.namespace, "quantize")} == jobs_before
    print(f"GitOps: serving-only commit -> Kustomization Ready {seconds:.0f} s")


def test_a_commit_that_fails_the_gate_is_reported_by_flux_while_the_old_model_serves(gitops: GitOps) -> None:
    cluster, namespace = gitops.cluster, gitops.namespace
    served = cluster.model(namespace, NAME)["status"]["model"]["digest"]
    failing = copy.deepcopy(gitops.document)
    failing["spec"]["quantization"]["maxMapDrop"] = 0.0
    gitops.document = failing
    commit = gitops.commit("Tighten the accuracy gate to 0")
    condition, seconds = gitops.wait_applied(commit, "False", PIPELINE_TIMEOUT)
    gitops.timings["failing gate"] = seconds
    ready = cluster.condition(namespace, NAME, "Ready")
    assert ready is not None and ready["reason"] == "AccuracyGateFailed", ready
    assert NAME in condition["message"] and "Failed" in condition["message"], condition
    assert detect(cluster.ready_endpoints(namespace, NAME)[0])["digest"] == served, "the old model keeps serving"
    print(f"GitOps: failing commit -> Kustomization Ready=False {seconds:.0f} s: {condition['message']}")
    print(f"GitOps timings: {gitops.timings}")


def test_the_argocd_application_example_is_a_valid_application(cluster: Cluster) -> None:
    """No Argo CD controller builds here; the shipped Application example is still checked by the
    real API server against Argo CD's own Application CRD (from its module), as ``kubectl apply``
    would on a cluster with Argo CD."""
    cluster.kubectl("apply", "--server-side", "-f", str(application_crd()))
    wait_established(cluster, "applications.argoproj.io")
    namespace = cluster.namespace(pod_security="restricted")
    application = yaml.safe_load(APPLICATION_EXAMPLE.read_text())
    application["metadata"]["namespace"] = namespace
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(application))
    assert "application.argoproj.io/rtdetr-models created (server dry run)" in result.stdout
    broken = copy.deepcopy(application)
    broken["spec"]["syncPolicy"]["automated"]["prune"] = "sometimes"
    refused = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert refused.returncode != 0 and "prune" in refused.stderr, "the CRD's schema really checks the example"
