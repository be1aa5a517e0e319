"""The real-cluster tier: upstream etcd, kube-apiserver, controller-manager, scheduler and kwok
and a real node (kubelet, containerd, runc, kube-proxy, CoreDNS; tests/cluster), the chart
installed by the real helm CLI, the operator running as the chart's Deployment from the
operator image built from this checkout, its Jobs and serving pods from the runtime image
(pulled by digest from the test registry), driven with the real kubectl as a user would.

One cluster per test session (~15 s to start, after the images); each test works in its own
namespaces.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.cluster.build import binary
from tests.cluster.controlplane import ControlPlane
from tests.cluster.images import BuiltImages, image_values
from tests.cluster.node import NODE_LABEL, NODE_NAME, TEST_GPU_RESOURCE, Node
from tests.cluster.nodes import create_nodes
from tests.gitops.argocd import agrees_with_kstatus, verdicts

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "rtdetrmodels.rtdetr.io.yaml"
CHART = REPO / "charts" / "rtdetr-edge"
SAMPLES = REPO / "configs" / "samples"
MODELS = "/apis/rtdetr.io/v1alpha1"
OPERATOR_NAMESPACE = "rtdetr-system"
RELEASE = "rtdetr"
RESYNC_SECONDS = 2
# What the chart needs to run here: the operator pod on the node whose pods really run, and
# a fast resync so tests finish quickly. Everything else is the chart's defaults, but for the
# images: this checkout's, from the test registry (OperatorRelease.install adds them).
TEST_VALUES: dict[str, Any] = {
    "operator": {"nodeSelector": {NODE_LABEL: "true"}, "resyncSeconds": RESYNC_SECONDS, "logLevel": "DEBUG"},
    "pipeline": {"hostPathPrefixes": ["/var/cache/rtdetr-edge"]},
}


def load_sample(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / name).read_text()))


@dataclass
class Cluster:
    plane: ControlPlane
    node: Node
    workdir: Path
    images: BuiltImages
    volumes_made: set[str] = field(default_factory=set)
    observed_models: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Every RTDETRModel version a test read (uid, resourceVersion → object): Argo CD's verdict on
    each is checked after the test (:func:`argocd_and_flux_read_every_status_alike`)."""

    @cached_property
    def http(self) -> requests.Session:
        return self.plane.session()

    # -- raw API (as cluster admin) -----------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> requests.Response:
        data = json.dumps(body) if body is not None else None
        return self.http.request(method, self.plane.server + path, data=data, headers={"Content-Type": content_type}, timeout=30)

    def ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        response = self.request(method, path, body, content_type)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return dict(response.json())

    def get(self, path: str) -> dict[str, Any] | None:
        response = self.request("GET", path)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:500]}"
        return dict(response.json())

    def items(self, path: str, selector: str | None = None) -> list[dict[str, Any]]:
        suffix = f"?labelSelector={selector}" if selector else ""
        return list(self.ok("GET", path + suffix)["items"])

    def wait(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition", interval: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {str(last)[:2000]})")

    # -- tools users run --------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "kubectl"), "--kubeconfig", str(self.plane.kubeconfig),
                   "--cache-dir", str(self.workdir / "kubectl-cache"), *args]  # fmt: skip
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [str(binary("helm")), "--kubeconfig", str(self.plane.kubeconfig), *args]
        env = {"HOME": str(self.workdir / "helm-home"), "PATH": "/usr/bin:/bin"}
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        if check:
            assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def apply(self, document: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", *extra, input=yaml.safe_dump(document))

    # -- namespaces and storage --------------------------------------------------------------------
    def namespace(self, name: str | None = None, pod_security: str = "restricted") -> str:
        """A fresh namespace enforcing a Pod Security level, as a hardened cluster would."""
        name = name or f"t-{uuid.uuid4().hex[:8]}"
        self.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "labels": {"pod-security.kubernetes.io/enforce": pod_security}}})  # fmt: skip
        return name

    def volume(self, namespace: str, claim: str, directory: Path) -> None:
        """A PersistentVolume over ``directory`` bound to claim ``claim`` (what a storage
        provisioner would make; the directory is world-writable like local-path-provisioner's)."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
        pv = f"{namespace}-{claim}"
        self.ok("POST", "/api/v1/persistentvolumes", {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"], "hostPath": {"path": str(directory)},
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                     "claimRef": {"namespace": namespace, "name": claim}}})  # fmt: skip
        self.ok("POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {"apiVersion": "v1",
            "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                     "resources": {"requests": {"storage": "10Gi"}}}})  # fmt: skip
        self.wait(lambda: (self.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}") or {})
                  .get("status", {}).get("phase") == "Bound", 60, f"PVC {namespace}/{claim} bound")  # fmt: skip

    # -- RTDETRModels and children -------------------------------------------------------------------
    def model(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.get(f"{MODELS}/namespaces/{namespace}/rtdetrmodels/{name}")
        assert found is not None, f"{namespace}/{name} not found"
        metadata = found["metadata"]
        self.observed_models[(metadata["uid"], metadata["resourceVersion"])] = found
        return found

    def patch_model(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.ok("PATCH", f"{MODELS}/namespaces/{namespace}/rtdetrmodels/{name}", patch, "application/merge-patch+json")

    def condition(self, namespace: str, name: str, condition_type: str) -> dict[str, Any] | None:
        status = self.model(namespace, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == condition_type), None)

    def wait_condition(self, namespace: str, name: str, condition_type: str, status: str, reason: str | None = None,
                       timeout: float = 60.0) -> dict[str, Any]:  # fmt: skip
        def check() -> dict[str, Any] | None:
            found = self.condition(namespace, name, condition_type)
            if found and found["status"] == status and (reason is None or found["reason"] == reason):
                return found
            return None

        try:
            return dict(self.wait(check, timeout, f"{condition_type}={status} ({reason})"))
        except AssertionError as error:
            raise AssertionError(f"{error}\nstatus: {json.dumps(self.model(namespace, name).get('status'), indent=1)[:4000]}") from None

    def jobs(self, namespace: str, component: str | None = None) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/component={component}" if component else None
        return self.items(f"/apis/batch/v1/namespaces/{namespace}/jobs", selector)

    def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        return self.items(f"/api/v1/namespaces/{namespace}/pods", selector)

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return self.items(f"/api/v1/namespaces/{namespace}/events")

    def ready_endpoints(self, namespace: str, service: str, port_name: str = "http") -> list[str]:
        """``ip:port`` of the Service's ready endpoints for one of its ports, read from
        EndpointSlices as kube-proxy does."""
        slices = self.items(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                            f"kubernetes.io/service-name={service}")  # fmt: skip
        found = []
        for endpoint_slice in slices:
            port = next((p["port"] for p in endpoint_slice.get("ports") or [] if p.get("name") == port_name), None)
            for endpoint in endpoint_slice.get("endpoints") or []:
                if port is not None and (endpoint.get("conditions") or {}).get("ready"):
                    found += [f"{address}:{port}" for address in endpoint["addresses"]]
        return sorted(found)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, images: BuiltImages) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    plane = ControlPlane(workdir / "control-plane")
    node = None
    try:
        plane.start()
        create_nodes(plane)
        node = Node(plane, images.registry, workdir / "node", extended_resources={TEST_GPU_RESOURCE: "1"})
        node.start()
        print(f"control plane up in {plane.startup_seconds:.1f} s, node {NODE_NAME} Ready {node.startup_seconds:.1f} s later",
              file=sys.stderr)  # fmt: skip
        yield Cluster(plane, node, workdir, images)
    finally:
        if node is not None:
            node.stop()
        plane.stop()


def with_images(values: dict[str, Any], images: BuiltImages) -> dict[str, Any]:
    """``values`` with this checkout's images where they name none."""
    defaults = {"operator": {"image": image_values(images.refs["operator"])},
                "images": {"runtimeCpu": image_values(images.refs["runtime-cpu"]),
                           "runtimeGpu": image_values(images.refs["runtime-gpu"])}}  # fmt: skip
    merged = {**values}
    for key, filled in defaults.items():
        merged[key] = {**filled, **(values.get(key) or {})}
    return merged


@dataclass
class OperatorRelease:
    """The chart installed with ``helm install``; its operator pod runs on node-0."""

    cluster: Cluster
    name: str = RELEASE
    namespace: str = OPERATOR_NAMESPACE

    def pod(self) -> dict[str, Any] | None:
        pods = [p for p in self.cluster.pods(self.namespace, f"app.kubernetes.io/instance={self.name}")
                if not p["metadata"].get("deletionTimestamp")]  # fmt: skip
        return pods[0] if pods else None

    def wait_ready(self, timeout: float = 90) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            pod = self.pod()
            conditions = {c["type"]: c["status"] for c in (pod or {}).get("status", {}).get("conditions") or []}
            return pod if conditions.get("Ready") == "True" else None

        return dict(self.cluster.wait(ready, timeout, "the operator pod Ready"))

    def log(self) -> str:
        pod = self.pod()
        assert pod is not None, "no operator pod"
        return self.cluster.kubectl("logs", "-n", self.namespace, pod["metadata"]["name"], check=False).stdout

    def install(self, values: dict[str, Any], chart: str = str(CHART), *helm_flags: str) -> OperatorRelease:
        values_file = self.cluster.workdir / f"values-{self.name}.yaml"
        values_file.write_text(yaml.safe_dump(with_images(values, self.cluster.images)))
        self.cluster.helm("install", self.name, chart, "--namespace", self.namespace, "--create-namespace",
                          "--values", str(values_file), "--wait", "--timeout", "180s", *helm_flags)  # fmt: skip
        self.wait_ready()
        return self

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", "120s", check=False)


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorRelease]:
    """The chart in cluster-wide mode, for one test module."""
    release = OperatorRelease(cluster).install(TEST_VALUES)
    try:
        yield release
    finally:
        release.uninstall()


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's inputs (the shipped shapes model and a generated COCO-layout dataset), made
    once: each test namespace gets PersistentVolumes over these directories."""
    from rtdetr_edge.dev.demo import prepare_demo_inputs

    root = tmp_path_factory.mktemp("shapes")
    prepare_demo_inputs(root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    return {"models": root / "pvc" / "models", "datasets": root / "pvc" / "datasets"}


def demo_namespace(cluster: Cluster, shapes_data: dict[str, Path], pod_security: str = "restricted") -> str:
    """A namespace holding the demo sample's three claims (models, datasets, artifacts)."""
    namespace = cluster.namespace(pod_security=pod_security)
    cluster.volume(namespace, "models", shapes_data["models"])
    cluster.volume(namespace, "datasets", shapes_data["datasets"])
    artifacts = cluster.workdir / "artifacts" / namespace
    shutil.rmtree(artifacts, ignore_errors=True)
    cluster.volume(namespace, "rtdetr-artifacts", artifacts)
    return namespace


@pytest.fixture(autouse=True)
def argocd_and_flux_read_every_status_alike(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each real-tier test: Argo CD's engine (gopher-lua) and lupa give the same verdict on
    every status the operator wrote that the test read, and that verdict matches what Flux's
    kstatus reads (Degraded exactly when Stalled=True; Healthy when Ready=True)."""
    yield
    if "cluster" not in request.fixturenames:
        return
    made: Cluster = request.getfixturevalue("cluster")
    observed = list(made.observed_models.values())
    made.observed_models.clear()
    if not observed:
        return
    for obj, verdict in zip(observed, verdicts(observed)):
        assert agrees_with_kstatus(obj, verdict), f"Argo CD says {verdict} for {json.dumps(obj.get('status'))[:2000]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and call.when == "call" and "cluster" in getattr(item, "fixturenames", ()):
        made: Cluster = item.funcargs["cluster"]  # type: ignore[attr-defined]
        pods = made.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        sections = [("pods", pods)]
        if "operator" in item.funcargs:  # type: ignore[attr-defined]
            sections.append(("operator log (tail)", "\n".join(item.funcargs["operator"].log().splitlines()[-60:])))  # type: ignore[attr-defined]
        sections += [(f"{name} log (tail)", "\n".join(text.splitlines()[-15:])) for name, text in made.plane.logs().items()
                     if name in ("kube-controller-manager", "kube-scheduler")]
        for title, text in sections:
            report.sections.append((f"cluster: {title}", text))
    return report
