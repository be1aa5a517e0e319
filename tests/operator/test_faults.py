"""What a real cluster does to the operator, and what the status must then say: GPU placement
(the real scheduler, taints, extended resources), pods that cannot be scheduled, a missing
PVC, a pipeline that fails, a spec only the operator can judge, the operator restarted
mid-pipeline, and the API server and etcd killed mid-reconcile."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.cluster.nodes import GPU_NODE, gpu_node

from .conftest import Cluster, OperatorRelease, demo_namespace, load_sample

R50 = "rtdetr-r50"
STATUS_WITHIN = 60  # every fault must reach status within a minute


def r50_namespace(cluster: Cluster, claims: tuple[str, ...] = ("models", "datasets", "rtdetr-artifacts")) -> str:
    namespace = cluster.namespace(pod_security="baseline")
    for claim in claims:
        cluster.volume(namespace, claim, cluster.workdir / "r50" / namespace / claim)
    return namespace


def apply_r50(cluster: Cluster, namespace: str, name: str = R50) -> dict[str, Any]:
    document = load_sample("rtdetr-r50.yaml")
    document["metadata"].update(namespace=namespace, name=name)
    cluster.apply(document)
    return document


def job_pod(cluster: Cluster, namespace: str) -> dict[str, Any]:
    job = cluster.wait(lambda: cluster.jobs(namespace, "quantize"), STATUS_WITHIN, "the quantize Job")[0]
    return dict(cluster.wait(lambda: cluster.pods(namespace, f"job-name={job['metadata']['name']}"), STATUS_WITHIN, "its pod")[0])


def test_gpu_job_lands_on_the_gpu_node_and_reports_running(cluster: Cluster, operator: OperatorRelease) -> None:
    """With no placement or GPU settings at all: serving.device gpu (the default) must be
    enough to get a GPU on the tainted GPU node."""
    namespace = r50_namespace(cluster)
    document = load_sample("rtdetr-r50.yaml")
    document["metadata"]["namespace"] = namespace
    document["spec"].pop("compression")
    for key in ("resources", "nodeSelector", "tolerations", "device"):
        document["spec"]["serving"].pop(key)
    cluster.apply(document)
    pod = cluster.wait(lambda: [p for p in [job_pod(cluster, namespace)] if p["spec"].get("nodeName")], STATUS_WITHIN, "scheduled")[0]
    assert pod["spec"]["nodeName"] == GPU_NODE
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "JobRunning", timeout=STATUS_WITHIN)
    assert cluster.model(namespace, R50)["status"]["phase"] == "Quantizing"


def test_missing_pvc_is_reported(cluster: Cluster, operator: OperatorRelease) -> None:
    namespace = r50_namespace(cluster, claims=("models", "rtdetr-artifacts"))  # no `datasets` claim
    apply_r50(cluster, namespace)
    ready = cluster.wait_condition(namespace, R50, "Ready", "False", "Unschedulable", timeout=STATUS_WITHIN)
    assert 'persistentvolumeclaim "datasets" not found' in ready["message"], ready["message"]
    assert cluster.condition(namespace, R50, "Reconciling")["reason"] == "Unschedulable"  # type: ignore[index]


def test_no_gpu_node_is_reported_as_unschedulable(cluster: Cluster, operator: OperatorRelease) -> None:
    namespace = r50_namespace(cluster)
    cluster.ok("DELETE", f"/api/v1/nodes/{GPU_NODE}")
    try:
        apply_r50(cluster, namespace)
        quantized = cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "Unschedulable", timeout=STATUS_WITHIN)
        assert "0/1 nodes are available" in quantized["message"], quantized["message"]
        assert "node affinity/selector" in quantized["message"]
        assert cluster.model(namespace, R50)["status"]["phase"] == "Pending"
    finally:
        cluster.ok("POST", "/api/v1/nodes", gpu_node())
    # A GPU node appears (the autoscaler, a repaired node): the Job starts without any edit.
    cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "JobRunning", timeout=STATUS_WITHIN + 30)


def test_failed_pipeline_reports_its_cause(cluster: Cluster, operator: OperatorRelease, shapes_data: dict[str, Path]) -> None:
    namespace = demo_namespace(cluster, shapes_data)
    document = load_sample("demo-shapes.yaml")
    document["metadata"]["namespace"] = namespace
    document["spec"]["source"]["inferenceModel"] = "pvc://models/no-such-model"
    cluster.apply(document)
    quantized = cluster.wait_condition(namespace, "shapes-demo", "Quantized", "False", "JobFailed", timeout=180)
    assert "no-such-model" in quantized["message"], quantized["message"]
    ready = cluster.wait_condition(namespace, "shapes-demo", "Ready", "False", "QuantizationFailed", timeout=STATUS_WITHIN)
    assert "no-such-model" in ready["message"]
    assert cluster.condition(namespace, "shapes-demo", "Stalled")["status"] == "True"  # type: ignore[index]
    time.sleep(2 * 2 + 1)  # two resyncs
    assert len(cluster.jobs(namespace)) == 1, "a failed Job is not retried by the operator"


def test_spec_only_the_operator_can_judge_is_a_condition(cluster: Cluster, operator: OperatorRelease) -> None:
    """Passes the CRD, fails the operator's cluster rules (the tiny arch has no exporter config)."""
    namespace = cluster.namespace()
    document = load_sample("rtdetr-r50.yaml")
    document["metadata"]["namespace"] = namespace
    document["spec"]["arch"] = "tiny"
    document["spec"]["source"] = {"checkpoint": "pvc://models/tiny.pdparams"}
    cluster.apply(document)
    ready = cluster.wait_condition(namespace, R50, "Ready", "False", "InvalidSpec", timeout=STATUS_WITHIN)
    assert "tiny arch has no PaddleDetection config" in ready["message"], ready["message"]
    revision = cluster.model(namespace, R50)["metadata"]["resourceVersion"]
    time.sleep(3 * 2)
    assert cluster.model(namespace, R50)["metadata"]["resourceVersion"] == revision, "no status churn, no retry storm"
    assert not cluster.jobs(namespace)


def test_operator_restart_mid_pipeline_keeps_one_job(cluster: Cluster, operator: OperatorRelease) -> None:
    namespace = r50_namespace(cluster)
    apply_r50(cluster, namespace)
    job = cluster.wait(lambda: cluster.jobs(namespace, "quantize"), STATUS_WITHIN, "the quantize Job")[0]
    cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "JobRunning", timeout=STATUS_WITHIN)
    old_pod = operator.wait_ready()["metadata"]["name"]
    cluster.kubectl("delete", "pod", "-n", operator.namespace, old_pod, "--wait=false")
    new_pod = cluster.wait(lambda: (p := operator.pod()) and p["metadata"]["name"] != old_pod and p, 60, "a new operator pod")
    operator.wait_ready()
    # The new operator resumes: it re-reads the Job (status stays current) and creates nothing new.
    cluster.patch_model(namespace, R50, {"spec": {"serving": {"replicas": 1}}})  # a serving edit: no new Job
    cluster.wait(lambda: cluster.model(namespace, R50)["status"].get("observedGeneration") == 2, STATUS_WITHIN,
                 "the restarted operator reconciling")  # fmt: skip
    assert [j["metadata"]["name"] for j in cluster.jobs(namespace)] == [job["metadata"]["name"]]
    assert "resume" in operator.log() or "Handler 'resume'" in operator.log(), new_pod["metadata"]["name"]


def test_a_spec_edit_stops_the_superseded_job(cluster: Cluster, operator: OperatorRelease) -> None:
    """A running QAT Job for a spec the user has since changed is deleted (GPU freed), with its
    stage ConfigMap; the new spec's Job takes its place."""
    namespace = r50_namespace(cluster)
    apply_r50(cluster, namespace)
    old = cluster.wait(lambda: cluster.jobs(namespace, "quantize"), STATUS_WITHIN, "the quantize Job")[0]["metadata"]["name"]
    cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "JobRunning", timeout=STATUS_WITHIN)
    cluster.patch_model(namespace, R50, {"spec": {"quantization": {"trainIter": 400}}})
    names = cluster.wait(lambda: (n := {j["metadata"]["name"] for j in cluster.jobs(namespace, "quantize")
                                        if not j["metadata"].get("deletionTimestamp")}) and old not in n and n,
                         STATUS_WITHIN, "the old Job replaced")  # fmt: skip
    assert len(names) == 1
    configmaps = cluster.wait(lambda: [c["metadata"]["name"] for c in cluster.items(f"/api/v1/namespaces/{namespace}/configmaps",
                                       "app.kubernetes.io/component=pipeline")] if len(cluster.items(
                                       f"/api/v1/namespaces/{namespace}/configmaps", "app.kubernetes.io/component=pipeline")) == 1
                              else None, STATUS_WITHIN, "one stage ConfigMap left")  # fmt: skip
    assert configmaps[0].endswith(next(iter(names)).rsplit("-", 1)[1])
    warnings = [e for e in cluster.events(namespace) if e["type"] == "Warning" and e["involvedObject"]["kind"] == "RTDETRModel"]
    assert not warnings, [(e["reason"], e["message"]) for e in warnings]  # progress is Normal


def test_operator_log_shows_no_permission_problem(cluster: Cluster, operator: OperatorRelease) -> None:
    """Everything above ran with the chart's ServiceAccount: a missing RBAC rule shows up here.
    (Before the API server restart below: a restarting API server answers 403 until its RBAC
    caches are filled, which kopf retries.)"""
    log = operator.log()
    for symptom in ("Forbidden", "forbidden", "not enough permissions", "(403)"):
        assert symptom not in log, [line for line in log.splitlines() if symptom in line][:3]


def test_api_server_and_etcd_killed_mid_reconcile(cluster: Cluster, operator: OperatorRelease) -> None:
    namespace = r50_namespace(cluster)
    apply_r50(cluster, namespace)
    plane = cluster.plane
    plane.stop_component("kube-apiserver", kill=True)
    plane.stop_component("etcd", kill=True)
    time.sleep(5)  # the operator's requests fail meanwhile
    plane.start_component("etcd")
    plane.start_component("kube-apiserver")
    plane.wait_healthy(90)
    cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "JobRunning", timeout=120)
    time.sleep(2 * 2 + 1)
    assert len(cluster.jobs(namespace, "quantize")) == 1, "no duplicate Job after the control plane came back"
    assert len(cluster.items(f"/api/v1/namespaces/{namespace}/configmaps", "app.kubernetes.io/component=pipeline")) == 1
