"""What a real cluster does to the operator, and what the status must then say: GPU placement
(the real scheduler, taints, extended resources), pods that cannot be scheduled, a missing
PVC, a pipeline that fails, a spec only the operator can judge, the operator restarted
mid-pipeline, and the API server and etcd killed mid-reconcile."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.cluster.nodes import GPU_NODE, gpu_node

from .conftest import CHART, RESYNC_SECONDS, Cluster, OperatorRelease, demo_namespace, load_sample

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


def test_a_same_named_object_we_do_not_own_is_not_taken_over(cluster: Cluster, operator: OperatorRelease,
                                                              shapes_data: dict[str, Path]) -> None:  # fmt: skip
    """Someone else's Service already has the model's name: the operator says so in Ready
    instead of adopting (and re-pointing) it; freed, it proceeds by itself."""
    namespace = demo_namespace(cluster, shapes_data)
    theirs = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shapes-demo", "namespace": namespace},
              "spec": {"selector": {"app": "billing"}, "ports": [{"port": 80}]}}  # fmt: skip
    cluster.ok("POST", f"/api/v1/namespaces/{namespace}/services", theirs)
    document = load_sample("demo-shapes.yaml")
    document["metadata"]["namespace"] = namespace
    cluster.apply(document)
    refused = cluster.wait_condition(namespace, "shapes-demo", "Ready", "False", "ApplyFailed", timeout=300)
    assert "a Service named shapes-demo already exists and is not this RTDETRModel's" in refused["message"], refused
    service = cluster.ok("GET", f"/api/v1/namespaces/{namespace}/services/shapes-demo")
    assert service["spec"]["selector"] == {"app": "billing"} and not service["metadata"].get("ownerReferences")
    cluster.ok("DELETE", f"/api/v1/namespaces/{namespace}/services/shapes-demo")
    cluster.wait_condition(namespace, "shapes-demo", "Ready", "True", "Serving", timeout=120)


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
    def stage_configmaps() -> list[str] | None:
        names = [c["metadata"]["name"] for c in cluster.items(f"/api/v1/namespaces/{namespace}/configmaps",
                                                              "app.kubernetes.io/component=pipeline")]  # fmt: skip
        return names if len(names) == 1 else None

    configmaps = cluster.wait(stage_configmaps, STATUS_WITHIN, "one stage ConfigMap left")
    assert configmaps[0].endswith(next(iter(names)).rsplit("-", 1)[1])
    warnings = [e for e in cluster.events(namespace) if e["type"] == "Warning" and e["involvedObject"]["kind"] == "RTDETRModel"]
    assert not warnings, [(e["reason"], e["message"]) for e in warnings]  # progress is Normal


def test_quota_refusals_are_reported_with_the_servers_words(cluster: Cluster, operator: OperatorRelease) -> None:
    """A ResourceQuota refusing the Job itself (the operator's create fails), then refusing its
    pod (the Job controller's create fails): both reach Ready with the API server's message
    within a minute, and the run starts by itself once the quota allows it."""
    namespace = r50_namespace(cluster)
    quota = f"/api/v1/namespaces/{namespace}/resourcequotas"
    cluster.ok("POST", quota, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu-team"},
                               "spec": {"hard": {"count/jobs.batch": "0"}}})  # fmt: skip
    apply_r50(cluster, namespace)
    refused = cluster.wait_condition(namespace, R50, "Ready", "False", "ApplyFailed", timeout=STATUS_WITHIN)
    assert "exceeded quota: gpu-team" in refused["message"] and "count/jobs.batch" in refused["message"], refused
    assert refused["message"].startswith("Job rtdetr-r50-quantize-"), refused
    assert cluster.condition(namespace, R50, "Stalled")["status"] == "True"  # type: ignore[index]
    # Refused at every resync, the status stays as it is: no write, no moved transition time, and
    # nothing claims the Job was created.
    time.sleep(RESYNC_SECONDS)  # the write that set ApplyFailed has landed
    settled = cluster.model(namespace, R50)
    time.sleep(3 * RESYNC_SECONDS)
    later = cluster.model(namespace, R50)
    assert later["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"], (
        settled["status"]["conditions"], later["status"]["conditions"])  # fmt: skip
    assert cluster.condition(namespace, R50, "Quantized")["reason"] == "ApplyFailed"  # type: ignore[index]
    created = [e for e in cluster.events(namespace) if e["reason"] == "JobCreated" and e["involvedObject"]["kind"] == "RTDETRModel"]
    assert not created, [e["message"] for e in created]

    cluster.ok("PUT", f"{quota}/gpu-team", {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu-team"},
                                            "spec": {"hard": {"count/jobs.batch": "5", "requests.nvidia.com/gpu": "0"}}})  # fmt: skip
    no_pod = cluster.wait_condition(namespace, R50, "Ready", "False", "FailedCreate", timeout=STATUS_WITHIN)
    assert "cannot create its pod" in no_pod["message"] and "requests.nvidia.com/gpu" in no_pod["message"], no_pod

    cluster.ok("DELETE", f"{quota}/gpu-team")
    cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "JobRunning", timeout=STATUS_WITHIN + 60)


def test_placement_fields_are_judged_by_the_cluster(cluster: Cluster, operator: OperatorRelease) -> None:
    """runtimeClassName, priorityClassName, affinity and topology spread reach the Job's pod as the
    real admission plugins and scheduler see them; a PriorityClass that does not exist is the
    admission's refusal in status, in its words, within a minute."""
    namespace = r50_namespace(cluster)
    priority, runtime = f"edge-batch-{namespace}", f"nvidia-{namespace}"
    cluster.ok("POST", "/apis/scheduling.k8s.io/v1/priorityclasses", {"apiVersion": "scheduling.k8s.io/v1",
               "kind": "PriorityClass", "metadata": {"name": priority}, "value": 1000})  # fmt: skip
    cluster.ok("POST", "/apis/node.k8s.io/v1/runtimeclasses", {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
               "metadata": {"name": runtime}, "handler": "nvidia"})  # fmt: skip
    on_gpu_node = {"key": "kubernetes.io/hostname", "operator": "In", "values": [GPU_NODE]}
    document = load_sample("rtdetr-r50.yaml")
    document["metadata"]["namespace"] = namespace
    document["spec"]["compression"].update(
        priorityClassName=priority, runtimeClassName=runtime,
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [on_gpu_node]}]}}},
        topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}],
    )  # fmt: skip
    cluster.apply(document)
    pod = cluster.wait(lambda: [p for p in [job_pod(cluster, namespace)] if p["spec"].get("nodeName")], STATUS_WITHIN, "scheduled")[0]
    spec = pod["spec"]
    assert spec["nodeName"] == GPU_NODE and spec["priority"] == 1000, "the Priority admission resolved the class"
    assert spec["runtimeClassName"] == runtime and spec["priorityClassName"] == priority
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "quantize"
    cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "JobRunning", timeout=STATUS_WITHIN)

    document["metadata"]["name"] = "rtdetr-r50-missing-class"
    document["spec"]["compression"]["priorityClassName"] = "no-such-class"
    cluster.apply(document)
    refused = cluster.wait_condition(namespace, "rtdetr-r50-missing-class", "Ready", "False", "FailedCreate", timeout=STATUS_WITHIN)
    assert "no PriorityClass with name no-such-class was found" in refused["message"], refused
    for path in (f"/apis/scheduling.k8s.io/v1/priorityclasses/{priority}", f"/apis/node.k8s.io/v1/runtimeclasses/{runtime}"):
        cluster.ok("DELETE", path)


def test_a_drained_node_does_not_fail_the_run(cluster: Cluster, operator: OperatorRelease) -> None:
    """`kubectl drain` (the Eviction API) of the GPU node mid-QAT: the pod is replaced, the Job
    does not fail (podFailurePolicy ignores DisruptionTarget), status stays Quantizing."""
    namespace = r50_namespace(cluster)
    apply_r50(cluster, namespace)
    first = cluster.wait(lambda: [p for p in [job_pod(cluster, namespace)] if p["status"].get("phase") == "Running"],
                         STATUS_WITHIN, "the Job's pod running")[0]  # fmt: skip
    name = first["metadata"]["name"]
    # As `kubectl drain --grace-period=1` would (kwok, the GPU node's stand-in, finishes a
    # deletion at a random point of the grace period).
    cluster.ok("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
               {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace},
                "deleteOptions": {"gracePeriodSeconds": 1}})  # fmt: skip
    job = cluster.jobs(namespace, "quantize")[0]["metadata"]["name"]
    cluster.wait(lambda: [p for p in cluster.pods(namespace, f"job-name={job}") if p["metadata"]["name"] != name
                          and p["status"].get("phase") == "Running"], STATUS_WITHIN, "a replacement pod running")  # fmt: skip
    failed = [c for c in cluster.jobs(namespace, "quantize")[0]["status"].get("conditions") or [] if c["type"] == "Failed"]
    assert not failed, failed
    cluster.wait_condition(namespace, R50, "Quantized", "Unknown", "JobRunning", timeout=STATUS_WITHIN)


def test_helm_upgrade_upgrades_the_crd(cluster: Cluster, operator: OperatorRelease) -> None:
    """The CRD is a chart template: a live CRD that drifted from the chart's (an older schema,
    a hand edit) is brought back by `helm upgrade`, and it is kept on uninstall."""
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rtdetrmodels.rtdetr.io"
    cluster.kubectl("patch", "crd", "rtdetrmodels.rtdetr.io", "--type=json", "-p",
                    '[{"op": "remove", "path": "/spec/names/shortNames"}]')  # fmt: skip
    assert "shortNames" not in cluster.ok("GET", crd)["spec"]["names"]
    cluster.helm("upgrade", operator.name, str(CHART), "--namespace", operator.namespace, "--reuse-values", "--wait")
    live = cluster.ok("GET", crd)
    assert live["spec"]["names"]["shortNames"] == ["rtdetr"]
    assert live["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_operator_log_shows_no_permission_problem(cluster: Cluster, operator: OperatorRelease) -> None:
    """Everything above ran with the chart's ServiceAccount: a missing RBAC rule shows up here.
    (Before the API server restart below: a restarting API server answers 403 until its RBAC
    caches are filled, which kopf retries.)"""
    on_purpose = ("exceeded quota", "no PriorityClass with name no-such-class")  # the quota and placement tests
    lines = [line for line in operator.log().splitlines() if not any(refusal in line for refusal in on_purpose)]
    for symptom in ("Forbidden", "forbidden", "not enough permissions", "(403)"):
        assert not [line for line in lines if symptom in line], [line for line in lines if symptom in line][:3]


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
