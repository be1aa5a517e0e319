"""A CPU INT8 model whose numbers depend on the CPU, on a real control plane: the real scheduler
keeps its pods off nodes of another ISA class (Node Feature Discovery labels), and a pod that lands
on one anyway (a node labelled VNNI whose CPU is not) refuses to serve — both in status.

Such a model is an earlier release's (8-bit ONNX Runtime weights): its artifact is made here by the
real pipeline with that recipe, under the digest the operator computes, and its record says the gate
ran on the ISA class this machine is not — a Job on another kind of node, which one machine cannot
host. The "other" class is chosen from this machine's CPU, so the test means the same on AVX2-only
and AVX-512 VNNI machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rtdetr_edge.cpu_isa import EXACT_INT8_NFD_FLAGS, NFD_PREFIX, IsaLevel, int8_arithmetic, this_cpu
from rtdetr_edge.pipeline import artifact_paths, run_pipeline, write_result
from rtdetr_edge.resource import parse_resource, pipeline_plan
from rtdetr_edge.storage import StorageResolver
from tests.cluster.node import NODE_NAME

from .conftest import Cluster, OperatorRelease, demo_namespace, load_sample

NAME = "shapes-demo-cpu"
STATUS_WITHIN = 60


def other_class() -> tuple[IsaLevel, dict[str, str]]:
    """An ISA level of the INT8 class this machine is not, and the NFD labels such a node has."""
    if int8_arithmetic(this_cpu().level) == "exact":
        return "avx2", {NFD_PREFIX + "AVX2": "true"}
    return "avx512-vnni", {NFD_PREFIX + "AVX512VNNI": "true", NFD_PREFIX + "AVX2": "true"}


def seed_legacy_artifact(cluster: Cluster, namespace: str, document: dict[str, Any], shapes_data: dict[str, Path],
                         measured_on: IsaLevel) -> None:  # fmt: skip
    """The artifact an earlier release's Job would have left: 8-bit weights, gated on ``measured_on``."""
    model = parse_resource(document)
    plan = pipeline_plan(model.spec)  # the operator's digest: its Job finds this artifact finished
    recipe = plan.quantization.onnxruntime
    assert recipe is not None and recipe.weight_bits == 7
    earlier = plan.quantization.model_copy(update={"onnxruntime": recipe.model_copy(update={"weight_bits": 8})})
    pvc_root = cluster.workdir / "isa-pvc" / namespace
    pvc_root.mkdir(parents=True)
    for claim, target in (("models", shapes_data["models"]), ("datasets", shapes_data["datasets"]),
                          ("rtdetr-artifacts", cluster.workdir / "artifacts" / namespace)):  # fmt: skip
        (pvc_root / claim).symlink_to(target)
    resolver = StorageResolver(pvc_root, cluster.workdir / "isa-downloads")
    result = run_pipeline(model, resolver, cluster.workdir / "isa-cache", "cpu",
                          plan=plan.model_copy(update={"quantization": earlier}))  # fmt: skip
    assert result.passed and result.model is not None and result.model.isa_portable is False
    assert result.measured_on is not None
    result = result.model_copy(update={"measured_on": result.measured_on.model_copy(update={"isa_level": measured_on})})
    final = artifact_paths(model, resolver, plan.pipeline_digest).final
    write_result(final / "result.json", result)
    for path in [final, *final.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)


def label_runner(cluster: Cluster, labels: dict[str, str | None]) -> None:
    cluster.ok("PATCH", f"/api/v1/nodes/{NODE_NAME}", {"metadata": {"labels": labels}}, "application/merge-patch+json")


def test_a_cpu_specific_model_is_placed_by_isa_and_refused_by_the_wrong_cpu(
    cluster: Cluster, operator: OperatorRelease, shapes_data: dict[str, Path]
) -> None:
    namespace = demo_namespace(cluster, shapes_data)
    document = load_sample("demo-shapes-cpu.yaml")
    document["metadata"]["namespace"] = namespace
    # Measured here, 8-bit weights lose up to 2.9 mAP to AVX2's saturation: a budget they pass everywhere.
    document["spec"]["quantization"]["maxMapDrop"] = 5.0
    gated_on, labels = other_class()
    seed_legacy_artifact(cluster, namespace, document, shapes_data, gated_on)
    cluster.apply(document)

    # No node has the gate's INT8 arithmetic: the scheduler holds the pod, status says why.
    ready = cluster.wait_condition(namespace, NAME, "Ready", "False", "Unschedulable", timeout=300)
    assert "didn't match Pod's node affinity" in ready["message"], ready["message"]
    served = cluster.model(namespace, NAME)["status"]["served"]
    assert served["model"]["isaPortable"] is False and served["measuredOn"]["isaLevel"] == gated_on
    pod = cluster.pods(namespace, "app.kubernetes.io/component=runtime")[0]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {expression["key"] for term in terms for expression in term["matchExpressions"]}
    assert {NFD_PREFIX + flag for flag in EXACT_INT8_NFD_FLAGS} <= keys

    # A node labelled as that kind whose CPU is not (a wrong label): the pod itself refuses.
    label_runner(cluster, labels)
    try:
        crash = cluster.wait_condition(namespace, NAME, "Ready", "False", "CrashLoopBackOff", timeout=180)
        here = this_cpu().level
        assert f"the accuracy gate measured this INT8 model on an {gated_on} CPU" in crash["message"], crash["message"]
        assert f"this node is {here}" in crash["message"] and "nodeSelector" in crash["message"]
        assert cluster.condition(namespace, NAME, "AccuracyGatePassed")["status"] == "True"  # type: ignore[index]
    finally:
        label_runner(cluster, {key: None for key in labels})
    cluster.kubectl("delete", "rtdetr", NAME, "-n", namespace, "--wait=true")


@pytest.fixture(autouse=True)
def _runner_keeps_no_isa_labels(cluster: Cluster) -> Any:
    """Other tests' pods must schedule on node-0 as before, whatever happens here."""
    yield
    node = cluster.get(f"/api/v1/nodes/{NODE_NAME}") or {}
    assert not [key for key in node.get("metadata", {}).get("labels", {}) if key.startswith(NFD_PREFIX)]
