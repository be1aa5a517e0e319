"""The demo sample on a real control plane, end to end, as a user drives it:

``helm install`` → ``kubectl apply -f configs/samples/demo-shapes.yaml`` → the real Job
controller and scheduler → the real node runs the real pipeline (ACT, pycocotools, gate) →
Deployment → ReplicaSet → pods running ``rtdetr-edge serve`` → Ready → detections through
the Service (its ready endpoints, and its ClusterIP through kube-proxy under load). Then the
changes users make: a serving-only edit, a model swap under load, a change that fails the
gate, and deletion.

The tests in this module run in order on one resource (each needs the previous state);
the whole story takes a few minutes (three real quantization runs on 2 cores).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from rtdetr_operator.names import quantize_job_name

from ..cluster.images import registry
from ..cluster.node import NODE_NAME, TEST_GPU_RESOURCE
from ..gitops.argocd import verdicts
from .conftest import RESYNC_SECONDS, Cluster, OperatorRelease, demo_namespace, load_sample

NAME = "shapes-demo"
PIPELINE_TIMEOUT = 600
FIXTURE_IMAGE = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "images").glob("*.jpg"))[0]


@dataclass
class Demo:
    cluster: Cluster
    operator: OperatorRelease
    namespace: str
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def demo(cluster: Cluster, operator: OperatorRelease, shapes_data: dict[str, Path]) -> Demo:
    return Demo(cluster, operator, demo_namespace(cluster, shapes_data))


def detect(endpoint: str, timeout: float = 30) -> dict[str, object]:
    response = requests.post(f"http://{endpoint}/v1/detect", data=FIXTURE_IMAGE.read_bytes(),
                             headers={"Content-Type": "image/jpeg"}, timeout=timeout)  # fmt: skip
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_apply_quantize_gate_and_serve(demo: Demo) -> None:
    cluster, namespace = demo.cluster, demo.namespace
    document = load_sample("demo-shapes.yaml")
    document["metadata"]["namespace"] = namespace
    started = time.monotonic()
    applied = cluster.apply(document)
    assert f"rtdetrmodel.rtdetr.io/{NAME} created" in applied.stdout

    job = cluster.wait(lambda: cluster.jobs(namespace, "quantize"), 60, "the quantize Job")[0]
    pod = cluster.wait(lambda: [p for p in cluster.pods(namespace, f"job-name={job['metadata']['name']}")
                                if p["spec"].get("nodeName")], 60, "the Job's pod scheduled")[0]  # fmt: skip
    assert pod["spec"]["nodeName"] == NODE_NAME, "a CPU model's Job runs on a CPU node, not the tainted GPU node"
    cluster.wait_condition(namespace, NAME, "Quantized", "True", "JobSucceeded", timeout=PIPELINE_TIMEOUT)
    demo.timings["quantize"] = time.monotonic() - started
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=300)
    demo.timings["ready"] = time.monotonic() - started

    serving = cluster.model(namespace, NAME)
    status = serving["status"]
    assert status["phase"] == "Ready" and status["observedGeneration"] == 1
    assert verdicts([serving])[0]["status"] == "Healthy", "Argo CD's engine reads a serving model as Healthy"
    assert status["accuracy"]["baselineMap"] > 10 and status["accuracy"]["mapDrop"] <= 2.0
    assert status["serving"]["readyReplicas"] == 1
    # The documented columns, printed by the API server itself (server-side Table).
    table = cluster.kubectl("get", "rtdetr", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "ARCH", "PRECISION", "PHASE", "MAP", "DROP", "READY", "AGE"]
    row = table[1].split()
    assert row[:4] == [NAME, "tiny", "int8", "Ready"] and row[6] == "True"
    assert abs(float(row[4]) - status["accuracy"]["quantizedMap"]) < 0.06

    endpoints = cluster.ready_endpoints(namespace, NAME)
    assert len(endpoints) == 1 and not endpoints[0].startswith("127."), endpoints
    answer = detect(endpoints[0])
    assert answer["model"] == NAME and answer["digest"] == status["model"]["digest"]
    assert isinstance(answer["detections"], list)


def test_a_serving_model_writes_no_status_while_nothing_changes(demo: Demo) -> None:
    """Every field the operator writes into status survives the API server's schema (nothing
    pruned and written again): an idle, serving model costs no status write per resync."""
    cluster, namespace = demo.cluster, demo.namespace
    time.sleep(RESYNC_SECONDS)  # a write that was in flight has landed
    settled = cluster.model(namespace, NAME)
    time.sleep(3 * RESYNC_SECONDS)
    later = cluster.model(namespace, NAME)
    assert later["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"], (
        {k: v for k, v in later["status"].items() if settled["status"].get(k) != v})  # fmt: skip


class LoadGenerator:
    """A bounded load on the Service, through its ClusterIP: kube-proxy on the real node picks a
    ready endpoint for each connection, as for any client in the cluster. Counts every request's
    outcome and the digest that answered it."""

    def __init__(self, cluster: Cluster, namespace: str, service: str, workers: int = 2) -> None:
        found = cluster.ok("GET", f"/api/v1/namespaces/{namespace}/services/{service}")
        port = next(p["port"] for p in found["spec"]["ports"] if p["name"] == "http")
        self.address = f"{found['spec']['clusterIP']}:{port}"
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.digests: list[tuple[float, str]] = []  # (time, digest) of each success
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, daemon=True) for _ in range(workers)]
        self.image = FIXTURE_IMAGE.read_bytes()

    def _send(self) -> None:
        session = requests.Session()
        session.trust_env = False
        endpoint = self.address
        while not self.stop.is_set():
            try:
                response = session.post(f"http://{endpoint}/v1/detect", data=self.image,
                                        headers={"Content-Type": "image/jpeg"}, timeout=30)  # fmt: skip
                outcome = str(response.status_code)
                if response.status_code == 200:
                    with self.lock:
                        self.digests.append((time.monotonic(), str(response.json()["digest"])))
                else:
                    self.failures.append(f"{endpoint}: {response.status_code} {response.text[:200]}")
            except requests.RequestException as error:
                outcome = type(error).__name__
                self.failures.append(f"{endpoint}: {error}")
            with self.lock:
                self.outcomes[outcome] += 1

    def __enter__(self) -> LoadGenerator:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    @property
    def failed(self) -> int:
        return sum(count for outcome, count in self.outcomes.items() if outcome != "200")


def test_serving_only_edit_rolls_out_without_quantizing(demo: Demo) -> None:
    cluster, namespace = demo.cluster, demo.namespace
    jobs_before = [j["metadata"]["name"] for j in cluster.jobs(namespace)]
    generation = cluster.patch_model(namespace, NAME, {"spec": {"serving": {"scoreThreshold": 0.25}}})["metadata"]["generation"]
    cluster.wait(lambda: "0.25" in cluster.deployment(namespace, NAME)["spec"]["template"]["spec"]["containers"][0]["args"],  # type: ignore[index]
                 60, "the new score threshold in the Deployment")  # fmt: skip
    cluster.wait(lambda: cluster.model(namespace, NAME)["status"].get("observedGeneration") == generation
                 and cluster.condition(namespace, NAME, "Ready")["status"] == "True", 180, "Ready on the new generation")  # type: ignore[index]  # fmt: skip
    assert [j["metadata"]["name"] for j in cluster.jobs(namespace)] == jobs_before, "a serving-only edit never quantizes"


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_a_replicas_change_adds_pods_and_replaces_none(demo: Demo) -> None:
    """The user guide's promise: scaling through the resource keeps every running pod (no new
    ReplicaSet) and Ready=True throughout, up and down."""
    cluster, namespace = demo.cluster, demo.namespace
    runtime = "app.kubernetes.io/component=runtime"
    (first,) = cluster.wait(lambda: (pods := cluster.pods(namespace, runtime)) and len(pods) == 1 and _ready(pods[0]) and pods,
                            120, "one ready serving pod")  # fmt: skip
    ready_seen: list[str] = []

    def scaled_to(count: int) -> bool:
        ready = cluster.condition(namespace, NAME, "Ready") or {}
        ready_seen.append(f"{ready.get('status')} {ready.get('reason')}: {ready.get('message')}")
        pods = cluster.pods(namespace, runtime)
        return len(pods) == count and all(_ready(p) for p in pods) and cluster.model(namespace, NAME)["status"]["serving"]["readyReplicas"] == count

    events_before = {e["metadata"]["name"] for e in cluster.events(namespace)}
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"replicas": 2}}})
    cluster.wait(lambda: scaled_to(2), 180, "two ready serving pods")
    pods = cluster.pods(namespace, runtime)
    assert first["metadata"]["uid"] in {p["metadata"]["uid"] for p in pods}, "the running pod was replaced"
    assert len({p["metadata"]["labels"]["pod-template-hash"] for p in pods}) == 1, "a scale-up made a new ReplicaSet"
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"replicas": 1}}})
    cluster.wait(lambda: scaled_to(1), 120, "back to one serving pod")
    assert all(seen.startswith("True ") for seen in ready_seen), f"Ready left True while scaling: {ready_seen}"
    rolling = [e["message"] for e in cluster.events(namespace) if e["reason"] == "RollingOut" and e["metadata"]["name"] not in events_before]
    assert not rolling, f"scaling was announced as a rollout: {rolling}"


def test_kubectl_scale_and_an_hpa_set_serving_replicas_through_the_scale_subresource(demo: Demo) -> None:
    """`kubectl scale rtdetr/NAME` and a HorizontalPodAutoscaler that targets the resource itself
    (the real HPA controller) change serving.replicas through the scale subresource; the operator
    follows the resource and never undoes them."""
    cluster, namespace = demo.cluster, demo.namespace
    runtime = "app.kubernetes.io/component=runtime"

    def serving(count: int) -> bool:
        model = cluster.model(namespace, NAME)
        pods = cluster.pods(namespace, runtime)
        return (model["spec"]["serving"]["replicas"] == count and len(pods) == count and all(_ready(p) for p in pods)
                and model["status"]["serving"].get("replicas") == count)  # fmt: skip

    cluster.kubectl("scale", f"rtdetrmodel/{NAME}", "-n", namespace, "--replicas=2")
    cluster.wait(lambda: serving(2), 180, "two serving pods after kubectl scale")
    scale = json.loads(cluster.kubectl("get", "--raw", f"/apis/rtdetr.io/v1alpha1/namespaces/{namespace}/rtdetrmodels/{NAME}/scale").stdout)
    assert scale["status"] == {"replicas": 2, "selector": f"app.kubernetes.io/component=runtime,app.kubernetes.io/instance={NAME},"
                               "app.kubernetes.io/name=rtdetr-edge"}, scale  # fmt: skip
    cluster.kubectl("scale", f"rtdetrmodel/{NAME}", "-n", namespace, "--replicas=1")
    cluster.wait(lambda: serving(1), 120, "back to one serving pod")

    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "rtdetr.io/v1alpha1", "kind": "RTDETRModel", "name": NAME},
            "minReplicas": 2, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
        },
    }  # fmt: skip
    cluster.apply(hpa)
    try:
        # Below its minimum, the HPA controller scales without metrics (there is no metrics API here).
        cluster.wait(lambda: serving(2), 180, "the HPA raising serving.replicas to its minimum")
        time.sleep(RESYNC_SECONDS * 3)  # the operator resyncs: it must leave the HPA's count alone
        assert serving(2), "the operator undid the HPA's replica count"
    finally:
        cluster.kubectl("delete", "hpa", NAME, "-n", namespace, "--wait=true")
    cluster.kubectl("scale", f"rtdetrmodel/{NAME}", "-n", namespace, "--replicas=1")
    cluster.wait(lambda: serving(1), 120, "back to one serving pod")


def test_serving_autoscaling_hands_the_pod_count_to_an_hpa_the_operator_owns(demo: Demo) -> None:
    """serving.autoscaling → the operator's HPA on the Deployment, scaled by the real HPA
    controller; turning it on keeps the running pods (the count is handed over, never reset to
    1), the operator never writes the count again, the Autoscaling condition says why the HPA
    cannot read its metric (no custom metrics API here) within a minute, and turning it off
    deletes the HPA and brings serving.replicas back."""
    cluster, namespace = demo.cluster, demo.namespace
    runtime = "app.kubernetes.io/component=runtime"
    hpa_path = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{NAME}"

    def serving_pods(count: int) -> list[dict[str, Any]] | None:
        pods = cluster.pods(namespace, runtime)
        deployment = cluster.deployment(namespace, NAME) or {}
        settled = deployment.get("spec", {}).get("replicas") == count and len(pods) == count and all(map(_ready, pods))
        return pods if settled else None

    cluster.kubectl("scale", f"rtdetrmodel/{NAME}", "-n", namespace, "--replicas=2")
    before = {p["metadata"]["uid"] for p in cluster.wait(lambda: serving_pods(2), 180, "two serving pods")}
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"replicas": 1, "autoscaling": {
        "minReplicas": 2, "maxReplicas": 3, "inFlightRequests": 4}}}})  # fmt: skip
    counts: list[int] = []

    def hpa_owned() -> dict[str, Any] | None:
        counts.append(int((cluster.deployment(namespace, NAME) or {})["spec"]["replicas"]))
        hpa = cluster.get(hpa_path)
        return hpa if hpa and hpa["metadata"]["ownerReferences"][0]["name"] == NAME else None

    hpa = cluster.wait(hpa_owned, 30, "the operator's HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "rtdetr_inflight_requests"
    started = time.monotonic()
    autoscaling = cluster.wait_condition(namespace, NAME, "Autoscaling", "False", "FailedGetPodsMetric", timeout=60)
    assert "custom metrics API" in autoscaling["message"] and "prometheus-adapter" in autoscaling["message"], autoscaling
    print(f"\nAutoscaling condition after {time.monotonic() - started:.0f} s: {autoscaling['message'][:300]}")
    # A hand edit of a field the operator owns makes it apply the Deployment again, now without a
    # count: the count must stay with the HPA (server-side apply would drop a field its only
    # manager stops applying, back to 1 pod), and serving.replicas (1) must not come back.
    cluster.kubectl("patch", "deployment", NAME, "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"strategy": {"rollingUpdate": {"maxSurge": 2}}}}')  # fmt: skip
    cluster.wait(lambda: counts.append(int((cluster.deployment(namespace, NAME) or {})["spec"]["replicas"]))
                 or (cluster.deployment(namespace, NAME) or {})["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1,
                 RESYNC_SECONDS * 3, "the edit reverted")  # fmt: skip
    time.sleep(RESYNC_SECONDS * 2)
    counts.append(int((cluster.deployment(namespace, NAME) or {})["spec"]["replicas"]))
    assert min(counts) == 2, f"the count left the HPA's hands: {counts}"
    assert {p["metadata"]["uid"] for p in cluster.pods(namespace, runtime)} == before, "turning autoscaling on replaced pods"
    assert cluster.condition(namespace, NAME, "Ready")["status"] == "True"  # type: ignore[index]

    # The HPA controller, not the operator, moves the count: a new minimum reaches the pods.
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"autoscaling": {"minReplicas": 3}}}})
    cluster.wait(lambda: serving_pods(3), 180, "the HPA raising the serving pods to its new minimum")
    managers = {entry["manager"] for entry in cluster.deployment(namespace, NAME)["metadata"]["managedFields"]  # type: ignore[index]
                if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})}  # fmt: skip
    assert "rtdetr-edge-operator" not in managers, f"the operator still applies the count: {managers}"

    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"autoscaling": None}}})
    cluster.wait(lambda: serving_pods(1), 120, "back to serving.replicas (1) without autoscaling")
    assert cluster.get(hpa_path) is None, "the HPA outlived serving.autoscaling"
    cluster.wait(lambda: cluster.condition(namespace, NAME, "Autoscaling") is None, 30, "the Autoscaling condition gone")


def test_cpu_utilization_autoscaling_adds_a_pod_under_load_through_metrics_server(demo: Demo) -> None:
    """serving.autoscaling.cpuUtilization, end to end: the HPA controller reads the serving pods'
    CPU from the metrics API (metrics-server scraping the real kubelet's cAdvisor figures), the
    Autoscaling condition turns True with the counts, and load through the Service's ClusterIP
    makes the HPA add a pod (the idle pod uses a few percent of its request, so nothing else
    would)."""
    cluster, namespace = demo.cluster, demo.namespace
    runtime = "app.kubernetes.io/component=runtime"
    cluster.node.wait_for_metrics()
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"replicas": 1, "resources": {"requests": {"cpu": "200m"}},
                                                               "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "cpuUtilization": 50}}}})  # fmt: skip
    started = time.monotonic()
    active = cluster.wait_condition(namespace, NAME, "Autoscaling", "True", "ValidMetricFound", timeout=180)
    print(f"\nAutoscaling True after {time.monotonic() - started:.0f} s: {active['message']}")
    assert "1 serving pod(s) (min 1, max 2); the HPA wants 1" in active["message"], active
    hpa = cluster.ok("GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{NAME}")
    idle = hpa["status"]["currentMetrics"][0]["resource"]["current"]
    assert idle["averageUtilization"] < 50, f"an idle pod over its CPU target: {idle}"
    pods = cluster.pods(namespace, runtime)
    assert len(pods) == 1 and pods[0]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "200m", pods

    with LoadGenerator(cluster, namespace, NAME, workers=2) as load:
        loaded = time.monotonic()
        cluster.wait(lambda: len([p for p in cluster.pods(namespace, runtime) if _ready(p)]) == 2, 240,
                     "the HPA adding a serving pod under load")  # fmt: skip
        scaled_out = time.monotonic() - loaded
    hpa = cluster.ok("GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{NAME}")
    print(f"load → 2 ready pods in {scaled_out:.0f} s; HPA: {hpa['status'].get('currentMetrics')}; {dict(load.outcomes)}")
    assert hpa["status"]["desiredReplicas"] == 2 and not load.failures, (hpa["status"], load.failures[:3])

    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"resources": None, "autoscaling": None}}})
    cluster.wait(lambda: len(cluster.pods(namespace, runtime)) == 1 and all(map(_ready, cluster.pods(namespace, runtime))), 180,
                 "back to one serving pod without autoscaling")  # fmt: skip
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=120)


def test_allow_from_makes_a_network_policy_the_api_server_validates(demo: Demo) -> None:
    """serving.allowFrom → the operator's NetworkPolicy on the serving pods (with the install's
    metrics scrapers); a peer the API server refuses shows in Ready with its words while the model
    keeps serving; removing allowFrom deletes the policy. (Enforcement is the network plugin's.)"""
    cluster, namespace = demo.cluster, demo.namespace
    path = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{NAME}"
    gateway = {"podSelector": {"matchLabels": {"app": "gateway"}}}
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"allowFrom": [gateway]}}})
    policy = cluster.wait(lambda: cluster.get(path), 30, "the serving pods' NetworkPolicy")
    assert policy["metadata"]["ownerReferences"][0]["name"] == NAME
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == NAME
    assert policy["spec"]["ingress"][0] == {"from": [gateway], "ports": [{"port": 8080, "protocol": "TCP"}]}

    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}}})
    refused = cluster.wait_condition(namespace, NAME, "Ready", "False", "ApplyFailed", timeout=60)
    assert f"NetworkPolicy {NAME}" in refused["message"] and "10.0.0.0/33" in refused["message"], refused
    assert cluster.condition(namespace, NAME, "Available")["status"] == "True"  # type: ignore[index]

    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"allowFrom": None}}})
    cluster.wait(lambda: cluster.get(path) is None, 30, "the NetworkPolicy deleted")
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=60)


ONE_GPU = {"limits": {TEST_GPU_RESOURCE: "1"}}  # the runner node has one: no room for a second serving pod


def runtime_pod_names(demo: Demo) -> set[str]:
    return {p["metadata"]["name"] for p in demo.cluster.pods(demo.namespace, "app.kubernetes.io/component=runtime")}


def test_model_swap_under_load_on_a_one_gpu_node_fails_no_request(demo: Demo) -> None:
    """A new model (a training change → a new pipeline digest) replaces the served one while
    clients keep sending detections, on a node whose one "GPU" the serving pod holds: with
    serving.rollout InPlace (the default) the running pod loads the new model beside the old one
    and switches; no pod is added or replaced, no request fails."""
    cluster, namespace = demo.cluster, demo.namespace
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"resources": ONE_GPU}}})

    def holding_the_gpu() -> bool:
        pods = cluster.pods(namespace, "app.kubernetes.io/component=runtime")
        limits = [p["spec"]["containers"][0].get("resources", {}).get("limits", {}) for p in pods]
        ready = cluster.condition(namespace, NAME, "Ready") or {}
        return len(pods) == 1 and limits[0].get(TEST_GPU_RESOURCE) == "1" and ready.get("status") == "True"

    cluster.wait(holding_the_gpu, 180, "one serving pod holding the node's GPU")
    pods = runtime_pod_names(demo)
    old_digest = cluster.model(namespace, NAME)["status"]["model"]["digest"]
    with LoadGenerator(cluster, namespace, NAME) as load:
        time.sleep(2)
        patched = time.monotonic()
        cluster.patch_model(namespace, NAME, {"spec": {"quantization": {"trainIter": 41, "maxMapDrop": 2.5}}})
        cluster.wait(lambda: cluster.model(namespace, NAME)["status"]["model"]["digest"] != old_digest
                     and cluster.condition(namespace, NAME, "Ready")["status"] == "True", PIPELINE_TIMEOUT,  # type: ignore[index]
                     "the new model Ready")  # fmt: skip
        ready = time.monotonic()
        cluster.wait(lambda: len(cluster.pods(namespace, "app.kubernetes.io/component=runtime")) == 1, 120, "the old pod gone")
        time.sleep(2)
    new_digest = cluster.model(namespace, NAME)["status"]["model"]["digest"]
    first_new = next((t for t, digest in load.digests if digest == new_digest), None)
    last_old = max((t for t, digest in load.digests if digest == old_digest), default=None)
    demo.timings.update({"swap: patch to new model Ready": ready - patched,
                         "swap: patch to first answer of the new model": (first_new or ready) - patched,
                         "swap: both models answering": (last_old or 0) - (first_new or 0)})  # fmt: skip
    print(f"\nmodel swap under load: {dict(load.outcomes)}; " + ", ".join(f"{k} {v:.1f}s" for k, v in demo.timings.items()))
    assert first_new is not None, f"no request reached the new model: {dict(load.outcomes)}"
    assert sum(load.outcomes.values()) > 50, f"the load generator barely ran: {dict(load.outcomes)}"
    assert load.failed == 0, f"{load.failed} failed requests during the swap: {load.failures[:5]}"
    assert runtime_pod_names(demo) == pods, "swapped in the running pod, none added or replaced"


def test_surge_on_a_one_gpu_node_says_why_it_cannot_proceed_and_replace_gets_through_with_downtime(demo: Demo) -> None:
    """serving.rollout Surge needs a second GPU for the new pod: on the one-GPU node it stays
    Pending, and Ready says so with the scheduler's words and what to do, while the old pod serves.
    Replace then gets through: the old pod stops first (measured: requests without a pod)."""
    cluster, namespace = demo.cluster, demo.namespace
    pods = runtime_pod_names(demo)
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"rollout": "Surge"}}})  # the template names the model now
    try:
        cluster.wait(lambda: cluster.condition(namespace, NAME, "Ready")["reason"] == "Unschedulable", 120,  # type: ignore[index]
                     "the surge pod Unschedulable in status")  # fmt: skip
        ready = cluster.condition(namespace, NAME, "Ready")
        assert ready is not None and ready["status"] == "False"
        assert f"Insufficient {TEST_GPU_RESOURCE}" in ready["message"] and "serving.rollout: Replace" in ready["message"], ready
        assert cluster.condition(namespace, NAME, "Available")["status"] == "True"  # type: ignore[index]
        endpoints = cluster.ready_endpoints(namespace, NAME)
        assert len(endpoints) == 1 and detect(endpoints[0])["digest"] == cluster.model(namespace, NAME)["status"]["model"]["digest"]
        assert pods <= runtime_pod_names(demo), "the serving pod stays"

        with LoadGenerator(cluster, namespace, NAME) as load:
            time.sleep(2)
            patched = time.monotonic()
            cluster.patch_model(namespace, NAME, {"spec": {"serving": {"rollout": "Replace"}}})
            cluster.wait(lambda: not (pods & runtime_pod_names(demo)) and len(runtime_pod_names(demo)) == 1
                         and cluster.condition(namespace, NAME, "Ready")["status"] == "True", 180, "replaced")  # type: ignore[index]  # fmt: skip
            replaced = time.monotonic() - patched
        print(f"\nReplace on the one-GPU node under load: {dict(load.outcomes)}; patch to Ready {replaced:.1f}s")
        assert load.outcomes["200"] > 0 and load.failed > 0, "Replace leaves no pod serving for a while (one replica)"
    finally:
        cluster.patch_model(namespace, NAME, {"spec": {"serving": {"rollout": None, "resources": None}}})
    cluster.wait(lambda: cluster.condition(namespace, NAME, "Ready")["status"] == "True"  # type: ignore[index]
                 and len(runtime_pod_names(demo)) == 1, 180, "back to one serving pod without the GPU")  # fmt: skip


def test_deleted_deployment_is_recreated(demo: Demo) -> None:
    cluster, namespace = demo.cluster, demo.namespace
    old_uid = cluster.deployment(namespace, NAME)["metadata"]["uid"]  # type: ignore[index]
    cluster.kubectl("delete", "deployment", NAME, "-n", namespace, "--wait=false")
    cluster.wait(lambda: (d := cluster.deployment(namespace, NAME)) and d["metadata"]["uid"] != old_uid, 60,
                 "the Deployment re-created by the resync")  # fmt: skip
    cluster.wait_condition(namespace, NAME, "Available", "True", timeout=120)


def test_edited_deployment_is_reverted(demo: Demo) -> None:
    cluster, namespace = demo.cluster, demo.namespace
    cluster.kubectl("scale", "deployment", NAME, "-n", namespace, "--replicas=3")
    try:
        cluster.wait(lambda: cluster.deployment(namespace, NAME)["spec"]["replicas"] == 1, 30, "replicas reverted to the spec's 1")  # type: ignore[index]
    finally:
        cluster.kubectl("scale", "deployment", NAME, "-n", namespace, "--replicas=1")


def test_failed_gate_keeps_the_served_model(demo: Demo) -> None:
    cluster, namespace = demo.cluster, demo.namespace
    served = cluster.model(namespace, NAME)["status"]["model"]["digest"]
    # A new model (its Job runs) judged with a budget of 0: its drop refuses it.
    cluster.patch_model(namespace, NAME, {"spec": {"quantization": {"trainIter": 42, "maxMapDrop": 0.0}}})
    ready = cluster.wait_condition(namespace, NAME, "Ready", "False", "AccuracyGateFailed", timeout=PIPELINE_TIMEOUT)
    assert "previous model keeps serving" in ready["message"]
    assert cluster.condition(namespace, NAME, "Available")["status"] == "True"  # type: ignore[index]
    assert cluster.condition(namespace, NAME, "Stalled")["status"] == "True"  # type: ignore[index]
    assert detect(cluster.ready_endpoints(namespace, NAME)[0])["digest"] == served
    warnings = [e for e in cluster.events(namespace) if e["reason"] == "AccuracyGateFailed"]
    assert warnings and warnings[0]["type"] == "Warning"
    refused = cluster.model(namespace, NAME)
    (argo,) = verdicts([refused])
    assert argo["status"] == "Degraded" and "previous model keeps serving" in argo["message"], argo
    status = refused["status"]
    assert status["candidate"]["gate"]["passed"] is False and status["accuracy"] == status["served"]["accuracy"], status

    # The verdict outlives its Job: deleting it must not re-run the pipeline nor lose the result.
    jobs = {j["metadata"]["name"] for j in cluster.jobs(namespace, "quantize")}
    failed_job = quantize_job_name(NAME, status["candidate"]["pipelineDigest"])
    assert failed_job in jobs
    cluster.kubectl("delete", "job", failed_job, "-n", namespace, "--cascade=foreground")
    time.sleep(3 * RESYNC_SECONDS)
    assert {j["metadata"]["name"] for j in cluster.jobs(namespace, "quantize")} == jobs - {failed_job}, "no re-run"
    assert cluster.condition(namespace, NAME, "Ready")["reason"] == "AccuracyGateFailed"  # type: ignore[index]
    assert not [e for e in cluster.events(namespace) if e["type"] == "Warning" and e["reason"] in ("JobCreated", "Pending", "RollingOut")]


def test_deleted_deployment_after_a_failed_gate_comes_back_with_the_served_model(demo: Demo) -> None:
    cluster, namespace = demo.cluster, demo.namespace
    served = cluster.model(namespace, NAME)["status"]["serving"]["servingDigest"]
    cluster.kubectl("delete", "deployment", NAME, "-n", namespace)
    deployment = cluster.wait(lambda: cluster.deployment(namespace, NAME), 60, "the Deployment re-created")
    assert deployment["metadata"]["annotations"]["rtdetr.io/model-digest"] == served


def test_the_charts_model_alerts_fire_on_the_failed_gate_through_kube_state_metrics(demo: Demo, tmp_path: Path) -> None:
    """The refused model, end to end through the monitoring the chart ships: real
    kube-state-metrics with files/kube-state-metrics.yaml reads the resource from the API server,
    a real Prometheus with the chart's rendered PrometheusRule fires RTDETRAccuracyGateFailed
    (and holds RTDETRModelStalled pending its 5 minutes)."""
    from tests.chart.test_alerts import KSM_CONFIG, rule_groups
    from tests.cluster.prometheus import kube_state_metrics, prometheus, query

    cluster, namespace = demo.cluster, demo.namespace
    assert cluster.condition(namespace, NAME, "AccuracyGatePassed")["status"] == "False"  # type: ignore[index]
    with kube_state_metrics(tmp_path / "ksm", cluster.plane.kubeconfig, KSM_CONFIG) as ksm, \
            prometheus(tmp_path / "prometheus", {"kube-state-metrics": (ksm, {})}, rule_groups()) as url:  # fmt: skip
        where = f'namespace="{namespace}",name="{NAME}"'
        firing = cluster.wait(lambda: query(url, f'ALERTS{{alertname="RTDETRAccuracyGateFailed",alertstate="firing",{where}}}'),
                              60, "RTDETRAccuracyGateFailed firing")  # fmt: skip
        assert firing[0]["metric"]["reason"] == "DropExceedsBudget", firing
        assert query(url, f'ALERTS{{alertname="RTDETRModelStalled",alertstate="pending",{where}}}'), "Stalled not pending"
        assert query(url, f'rtdetr_model_phase{{phase="Failed",{where}}} == 1'), "the phase state set"
        assert not query(url, f'ALERTS{{alertname="RTDETRModelUnavailable",{where}}}'), "the old model still serves"


def test_a_raised_budget_rolls_the_refused_model_out_without_a_job(demo: Demo) -> None:
    """The Job measured both mAPs; the operator judges them with the budget as it is now. Raising
    maxMapDrop after AccuracyGateFailed re-judges the candidate (its Job deleted above: read from
    status.candidate) and rolls it out in seconds, without re-running the pipeline."""
    cluster, namespace = demo.cluster, demo.namespace
    candidate = cluster.model(namespace, NAME)["status"]["candidate"]
    assert candidate["gate"]["passed"] is False
    jobs = {j["metadata"]["name"] for j in cluster.jobs(namespace, "quantize")}
    patched = time.monotonic()
    cluster.patch_model(namespace, NAME, {"spec": {"quantization": {"maxMapDrop": 2.5}}})
    cluster.wait(lambda: cluster.model(namespace, NAME)["status"]["model"]["digest"] == candidate["model"]["digest"]
                 and cluster.condition(namespace, NAME, "Ready")["status"] == "True", 300, "the candidate Ready")  # type: ignore[index]  # fmt: skip
    demo.timings["budget raised: patch to the candidate Ready"] = time.monotonic() - patched
    gate = cluster.condition(namespace, NAME, "AccuracyGatePassed")
    assert gate is not None and gate["reason"] == "WithinBudget" and "<= 2.5)" in gate["message"], gate
    # No new Job (the previously served model's Job goes: its pipeline is no longer served).
    assert {j["metadata"]["name"] for j in cluster.jobs(namespace, "quantize")} <= jobs, "no new Job"
    assert detect(cluster.ready_endpoints(namespace, NAME)[0])["digest"] == candidate["model"]["digest"]


def test_host_path_engine_cache_only_under_allowed_prefixes_and_writable(demo: Demo) -> None:
    """hostPath is an admin's opt-in (Helm pipeline.hostPathPrefixes; the tests allow
    /var/cache/rtdetr-edge): any other host directory is refused in status while the old model
    keeps serving; an allowed one is created root-owned 0755 by the kubelet, handed to the
    serving user by the CAP_CHOWN-only init container, and the pods warm up in it."""
    cluster, namespace = demo.cluster, demo.namespace
    cluster.kubectl("label", "namespace", namespace, "--overwrite", "pod-security.kubernetes.io/enforce=privileged")
    cluster.wait_condition(namespace, NAME, "Available", "True", timeout=120)  # the re-created Deployment serves
    # The served model is this spec's (budget raised above): what follows are serving-only changes.
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"engineCache": {"emptyDir": None, "hostPath": "/var/cache/../../etc"}}}})
    refused = cluster.wait_condition(namespace, NAME, "Ready", "False", "InvalidSpec", timeout=60)
    assert "hostPath /etc is outside the host directories this operator allows (/var/cache/rtdetr-edge)" in refused["message"]
    assert cluster.condition(namespace, NAME, "Available")["status"] == "True", "the old model keeps serving"

    cache = Path("/var/cache/rtdetr-edge/demo")  # on this machine: the real node's host
    shutil.rmtree(cache, ignore_errors=True)  # what the kubelet creates, not an earlier run's
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"engineCache": {"hostPath": str(cache)}}}})
    deadline = time.monotonic() + 120  # a serving-only change: new pods warm up, no Job
    while time.monotonic() < deadline:
        ready = cluster.condition(namespace, NAME, "Ready")
        if ready and ready["status"] == "True" and ready["observedGeneration"] == cluster.model(namespace, NAME)["metadata"]["generation"]:
            break
        assert not (ready and ready["status"] == "False" and ready["reason"] == "CrashLoopBackOff"), ready
        time.sleep(1)
    else:
        raise AssertionError(f"not Ready on the hostPath cache: {cluster.condition(namespace, NAME, 'Ready')}")
    pods = [p for p in cluster.pods(namespace, "app.kubernetes.io/component=runtime") if not p["metadata"].get("deletionTimestamp")]
    volumes = [v["hostPath"]["path"] for p in pods for v in p["spec"]["volumes"] if "hostPath" in v]
    assert volumes and set(volumes) == {"/var/cache/rtdetr-edge/demo"}, volumes
    assert all(p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0 for p in pods)
    assert cache.stat().st_mode & 0o777 == 0o755, oct(cache.stat().st_mode)
    written = list(cache.rglob("*"))
    assert cache.stat().st_uid == 10001 and written and {f.stat().st_uid for f in written} == {10001}, written


def test_a_burst_is_shed_by_the_serving_pods_queue_budget(demo: Demo) -> None:
    """serving.maxQueueMillis on the real tier: a burst at a serving pod is answered at once with
    503 + Retry-After for what would wait past the budget, no accepted request waited longer, and
    the pod stays Ready for its Service throughout."""
    cluster, namespace = demo.cluster, demo.namespace
    budget, burst = 100, 64
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"maxQueueMillis": budget}}})

    def serving_alone_with(millis: int) -> list[str] | None:
        """The Service's one endpoint: the only serving pod left, ready, with this budget."""
        pods = cluster.pods(namespace, "app.kubernetes.io/component=runtime")
        args = pods[0]["spec"]["containers"][0]["args"] if len(pods) == 1 else []
        done = "--max-queue-millis" in args and args[args.index("--max-queue-millis") + 1] == str(millis) and _ready(pods[0])
        if not done:
            return None
        endpoints = cluster.ready_endpoints(namespace, NAME)
        return endpoints if endpoints == [f"{pods[0]['status'].get('podIP')}:8080"] else None

    endpoint = cluster.wait(lambda: serving_alone_with(budget), 180, "pods with the new queue budget")[0]
    pod_ready: list[bool] = []
    bursting = threading.Event()
    bursting.set()

    def watch_pod() -> None:  # what the Service sees: the pod's Ready condition
        while bursting.is_set():
            pod = cluster.pods(namespace, "app.kubernetes.io/component=runtime")[0]
            pod_ready.append(_ready(pod))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_pod, daemon=True)
    watcher.start()
    image = FIXTURE_IMAGE.read_bytes()

    def send(_: int) -> requests.Response:
        return requests.post(f"http://{endpoint}/v1/detect", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)

    try:
        with ThreadPoolExecutor(burst) as pool:
            responses = list(pool.map(send, range(burst)))
    finally:
        bursting.clear()
        watcher.join(timeout=10)
    accepted = [r for r in responses if r.status_code == 200]
    shed = [r for r in responses if r.status_code == 503]
    assert accepted and shed and len(accepted) + len(shed) == burst, sorted(r.status_code for r in responses)
    assert all(r.json()["code"] == "overloaded" and int(r.headers["Retry-After"]) >= 1 for r in shed)
    queued = [r.json()["timing_ms"]["queue"] for r in accepted]
    assert max(queued) <= budget, f"an accepted request waited {max(queued)} ms in the queue (budget {budget} ms)"
    assert pod_ready and all(pod_ready), f"the pod left the Service under overload: {pod_ready}"
    print(f"\nburst of {burst} on the real tier: {len(accepted)} accepted (queue max {max(queued):.1f} ms), {len(shed)} shed")
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"maxQueueMillis": None}}})
    # The next test's clients must meet only the default budget: wait for the last pod to go.
    cluster.wait(lambda: serving_alone_with(5000), 180, "the default budget back")
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=60)


def test_serving_grpc_answers_on_the_services_grpc_port_like_http(demo: Demo) -> None:
    """serving.grpc on the real tier: the Service's grpc port resolves (by the EndpointSlice
    controller, from the pods' named port) to pods that answer tritonclient.grpc with the tensors
    HTTP gives, and status names the endpoint; turned off, the port and the field go."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from tests.server.test_grpc_api import model_inputs, triton_inputs

    cluster, namespace = demo.cluster, demo.namespace
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"grpc": True}}})
    endpoint = cluster.wait(lambda: cluster.ready_endpoints(namespace, NAME, "grpc"), 180, "a ready pod behind the grpc port")[0]
    assert endpoint.endswith(":8081")
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=180)
    status = cluster.model(namespace, NAME)["status"]["serving"]
    assert status["grpcEndpoint"] == f"{NAME}.{namespace}.svc:8081", status
    arrays = model_inputs(FIXTURE_IMAGE.read_bytes())
    client = grpcclient.InferenceServerClient(url=endpoint)
    assert client.is_model_ready(NAME)
    by_grpc = client.infer(NAME, triton_inputs(grpcclient, arrays))
    http_endpoint = endpoint.rsplit(":", 1)[0] + ":8080"  # the same pod
    by_http = httpclient.InferenceServerClient(url=http_endpoint).infer(NAME, triton_inputs(httpclient, arrays))
    assert by_grpc.as_numpy("bbox").tobytes() == by_http.as_numpy("bbox").tobytes()
    assert by_grpc.as_numpy("bbox_num").tolist() == by_http.as_numpy("bbox_num").tolist()

    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"grpc": None}}})
    cluster.wait(lambda: "grpcEndpoint" not in cluster.model(namespace, NAME)["status"]["serving"]
                 and not cluster.ready_endpoints(namespace, NAME, "grpc"), 180, "the grpc port and status field gone")  # fmt: skip
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=180)


class _ServiceNameAdapter(requests.adapters.HTTPAdapter):
    """Connect to a pod's IP but verify the certificate for the Service's DNS name (what a client
    inside the cluster dials), as SNI and hostname check."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, server_hostname=self.hostname, assert_hostname=self.hostname, **kwargs)


def test_serving_tls_and_tokens_from_secrets_with_probes_on_the_management_port(demo: Demo, tmp_path: Path) -> None:
    """serving.tls + serving.auth on the real tier: pods read the Secrets, answer HTTPS for the
    Service's name with a token and 401 without, stay Ready through probes on the plain management
    port (which the Service exposes as "metrics" for Prometheus); turned off, plain HTTP again."""
    from tests.cluster.pki import CertificateAuthority

    cluster, namespace = demo.cluster, demo.namespace
    hostname = f"{NAME}.{namespace}.svc"
    ca, stranger = CertificateAuthority(tmp_path / "ca", "serving-ca"), CertificateAuthority(tmp_path / "other", "other-ca")
    pair = ca.issue("serving", NAME, server=True, hosts=(hostname,))
    for name, kind, data in ((f"{NAME}-tls", "kubernetes.io/tls", {"tls.crt": pair.cert.read_text(), "tls.key": pair.key.read_text()}),
                             (f"{NAME}-tokens", "Opaque", {"tokens": "# callers\ncamera-token\n"})):  # fmt: skip
        cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "type": kind,
                       "stringData": data})  # fmt: skip
    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"tls": {"secretName": f"{NAME}-tls"},
                                                               "auth": {"tokenSecretName": f"{NAME}-tokens"}}}})  # fmt: skip
    endpoint = cluster.wait(lambda: cluster.ready_endpoints(namespace, NAME, "https"), 180, "a ready pod behind the https port")[0]
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=180)
    assert cluster.model(namespace, NAME)["status"]["serving"]["endpoint"] == f"https://{hostname}:8080"
    session = requests.Session()
    session.mount("https://", _ServiceNameAdapter(hostname))
    image = FIXTURE_IMAGE.read_bytes()

    def post(token: str | None, ca_file: Path = ca.cert_file) -> requests.Response:
        headers = {"Content-Type": "image/jpeg", **({"Authorization": f"Bearer {token}"} if token else {})}
        return session.post(f"https://{endpoint}/v1/detect", data=image, headers=headers, verify=str(ca_file), timeout=30)

    assert post("camera-token").status_code == 200
    assert post(None).status_code == 401 and post("guess").json()["code"] == "unauthorized"
    with pytest.raises(requests.exceptions.SSLError):
        post("camera-token", stranger.cert_file)
    metrics = cluster.ready_endpoints(namespace, NAME, "metrics")
    assert metrics and metrics[0].endswith(":8082")
    assert "rtdetr_rejected_requests_total" in requests.get(f"http://{metrics[0]}/metrics", timeout=10).text

    cluster.patch_model(namespace, NAME, {"spec": {"serving": {"tls": None, "auth": None}}})
    cluster.wait(lambda: cluster.ready_endpoints(namespace, NAME) and not cluster.ready_endpoints(namespace, NAME, "https"),
                 180, "plain HTTP again")  # fmt: skip
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=180)


def test_storage_registry_the_job_pushes_and_serving_pods_pull_with_no_volume_shared(demo: Demo, tmp_path: Path) -> None:
    """storage.registry: the quantize Job pushes the INT8 model to a real OCI registry (on the pod
    network), the result names it by digest, and the serving pod pulls it, verified, with no
    artifacts volume mounted: what an edge site with only node-local (RWO) volumes needs."""
    cluster, namespace = demo.cluster, demo.namespace
    assert cluster.plane.network is not None
    with registry(tmp_path / "registry", address=cluster.plane.network.gateway) as models:
        repository = f"oci://{models.host}/{namespace}/{NAME}"
        cluster.patch_model(namespace, NAME, {"spec": {"quantization": {"trainIter": 43},
                                                       "storage": {"registry": {"repository": repository, "plainHTTP": True}}}})  # fmt: skip
        cluster.wait(lambda: str(cluster.model(namespace, NAME)["status"]["model"]["uri"]).startswith(repository + "@sha256:")
                     and cluster.condition(namespace, NAME, "Ready")["status"] == "True", PIPELINE_TIMEOUT,  # type: ignore[index]
                     "the pushed model serving")  # fmt: skip
        status = cluster.model(namespace, NAME)["status"]
        key = status["pipelineDigest"].split(":")[1][:16]
        assert key in models.tags(f"{namespace}/{NAME}"), "tagged with the pipeline's key"

        def no_shared_volume() -> bool:  # once the previous pod (which mounted the artifacts) has terminated
            pods = cluster.pods(namespace, "app.kubernetes.io/component=runtime")
            return bool(pods) and all(not [v for v in p["spec"]["volumes"] if "persistentVolumeClaim" in v] for p in pods)

        cluster.wait(no_shared_volume, 90, "serving pods without the artifacts volume")
        endpoints = cluster.ready_endpoints(namespace, NAME)
        assert endpoints and detect(endpoints[0])["digest"] == status["model"]["digest"]


def test_delete_removes_every_child_through_the_garbage_collector(demo: Demo) -> None:
    cluster, namespace = demo.cluster, demo.namespace
    cluster.kubectl("delete", "rtdetr", NAME, "-n", namespace, "--timeout=60s")
    cluster.wait(lambda: not cluster.jobs(namespace) and cluster.deployment(namespace, NAME) is None
                 and cluster.get(f"/api/v1/namespaces/{namespace}/services/{NAME}") is None
                 and not cluster.items(f"/api/v1/namespaces/{namespace}/configmaps", "app.kubernetes.io/managed-by=rtdetr-edge-operator"),
                 90, "children garbage-collected")  # fmt: skip
    cluster.wait(lambda: not cluster.pods(namespace, "app.kubernetes.io/name=rtdetr-edge"), 90, "pods gone")
