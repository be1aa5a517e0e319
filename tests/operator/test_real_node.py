"""On the real node (tests/cluster/node.py): upstream kubelet, containerd 2 and runc run our
runtime image, pulled from the registry by digest. What the test pod runner it replaced could
not show: the runtime enforcing a pod's security context, the kernel killing a container over
its memory limit, a real image pull failing, exec through the kubelet, Services through
kube-proxy and CoreDNS.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cluster.images import BuiltImages
from tests.cluster.node import NODE_NAME, Node

from .conftest import Cluster, OperatorRelease, demo_namespace, load_sample

ON_THE_REAL_NODE: dict[str, Any] = {"nodeSelector": {"kubernetes.io/hostname": NODE_NAME}}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture
def node(cluster: Cluster) -> Node:
    return cluster.node


def pod(name: str, image: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            **ON_THE_REAL_NODE,
            "restartPolicy": container.pop("restart_policy", "Never"),
            "containers": [{"name": "main", "image": image, "command": command,
                            "securityContext": RESTRICTED_CONTAINER, **container}],  # fmt: skip
        },
    }


def create(cluster: Cluster, namespace: str, document: dict[str, Any]) -> dict[str, Any]:
    return cluster.ok("POST", f"/api/v1/namespaces/{namespace}/pods", document)


def read_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.ok("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")


def finished(cluster: Cluster, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = read_pod(cluster, namespace, name)
        return found if found["status"].get("phase") in ("Succeeded", "Failed") else None

    return dict(cluster.wait(done, timeout, f"pod {name} to finish"))


def container_status(found: dict[str, Any]) -> dict[str, Any]:
    (status,) = found["status"]["containerStatuses"]
    return dict(status)


SELF_REPORT = """
import os, pathlib
status = dict(line.split(":\\t", 1) for line in pathlib.Path("/proc/self/status").read_text().splitlines() if ":\\t" in line)
print("uid", os.getuid(), "gid", os.getgid())
print("seccomp", status["Seccomp"].strip())
print("capeff", status["CapEff"].strip())
print("nonewprivs", status["NoNewPrivs"].strip())
try:
    open("/usr/local/lib/written-by-the-pod", "w")
    print("root filesystem writable")
except OSError as error:
    print("root filesystem", error.strerror)
import rtdetr_edge
print("rtdetr_edge", rtdetr_edge.__version__)
"""


def test_a_pod_runs_from_the_runtime_image_in_a_container_the_runtime_confines(cluster: Cluster, node: Node,
                                                                               images: BuiltImages) -> None:  # fmt: skip
    """The restricted security context our pods ask for is enforced by runc, not assumed: uid
    10001, no capabilities, seccomp filtering, no new privileges, a read-only root; the image is
    pulled by digest and its own files run; the log comes back through the kubelet."""
    namespace = cluster.namespace(pod_security="restricted")
    image = images.refs["runtime-cpu"]
    create(cluster, namespace, pod("self-report", image, ["python", "-c", SELF_REPORT]))
    found = finished(cluster, namespace, "self-report")
    status = container_status(found)
    assert found["status"]["phase"] == "Succeeded", found["status"]
    assert found["spec"]["nodeName"] == NODE_NAME
    assert status["imageID"].endswith(image.split("@")[1]), ("the kubelet reports the digest it pulled", status)
    log = cluster.kubectl("logs", "-n", namespace, "self-report").stdout
    assert "uid 10001 gid" in log, log
    assert "seccomp 2" in log, f"seccomp mode 2 is a filter (RuntimeDefault): {log}"
    assert "capeff 0000000000000000" in log, log
    assert "nonewprivs 1" in log, log
    assert "root filesystem Read-only file system" in log, log
    assert "rtdetr_edge " in log, log
    # The node's admin sees the same container through CRI.
    assert "self-report" in node.crictl("ps", "--all", "--name", "main", "-o", "json").stdout or \
        node.crictl("pods", "--name", "self-report").stdout  # fmt: skip


def test_the_kernel_kills_a_container_over_its_memory_limit(cluster: Cluster, node: Node, images: BuiltImages) -> None:
    namespace = cluster.namespace(pod_security="restricted")
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n"
    create(cluster, namespace, pod("hog", images.refs["runtime-cpu"], ["python", "-c", hog],
                                   resources={"limits": {"memory": "96Mi", "cpu": "1"}}))  # fmt: skip
    started = time.monotonic()
    found = finished(cluster, namespace, "hog", timeout=120)
    terminated = container_status(found)["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137, terminated
    print(f"OOMKilled reported {time.monotonic() - started:.1f} s after the pod was created")


def test_a_tag_missing_from_the_registry_is_a_real_pull_error(cluster: Cluster, node: Node, images: BuiltImages) -> None:
    namespace = cluster.namespace(pod_security="restricted")
    missing = f"{images.registry.host}/rtdetr-edge/runtime:no-such-tag-{uuid.uuid4().hex[:6]}"
    create(cluster, namespace, pod("missing", missing, ["python", "-c", "pass"]))

    def waiting() -> dict[str, Any] | None:
        statuses = read_pod(cluster, namespace, "missing")["status"].get("containerStatuses") or []
        state = (statuses[0].get("state") or {}).get("waiting") if statuses else None
        return state if state and state.get("reason") in ("ErrImagePull", "ImagePullBackOff") else None

    state = cluster.wait(waiting, 60, "a pull error")
    assert "not found" in state.get("message", ""), state


def test_exec_into_a_running_container(cluster: Cluster, node: Node, images: BuiltImages, tmp_path: Path) -> None:
    namespace = cluster.namespace(pod_security="restricted")
    create(cluster, namespace, pod("sleeper", images.refs["runtime-cpu"], ["python", "-c", "import time; time.sleep(600)"]))
    cluster.wait(lambda: read_pod(cluster, namespace, "sleeper")["status"].get("phase") == "Running", 120, "sleeper running")
    answer = cluster.kubectl("exec", "-n", namespace, "sleeper", "--", "python", "-c", "import os; print(os.getuid())")
    assert answer.stdout.strip() == "10001", answer
    # The same process seen from the host, through CRI (what a node's admin does with crictl).
    pid = node.container_pid(namespace, "sleeper", "main")
    assert "\t10001\t" in Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split("\n")[0] + "\t"


def test_a_serving_pod_over_its_memory_limit_shows_as_oomkilled_in_the_models_status(
    cluster: Cluster, node: Node, operator: OperatorRelease, shapes_data: dict[str, Path]
) -> None:
    namespace = demo_namespace(cluster, shapes_data)
    document = load_sample("demo-shapes.yaml")
    name = document["metadata"]["name"]
    document["metadata"]["namespace"] = namespace
    document["spec"]["serving"].update({
        **ON_THE_REAL_NODE,
        # Python with Paddle imported needs several times this.
        "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "128Mi"}},
    })  # fmt: skip
    cluster.apply(document)
    cluster.wait_condition(namespace, name, "Quantized", "True", "JobSucceeded", timeout=600)
    # Watched side by side: when the kernel's kill first shows in the pod, when it shows in status.
    killed_at = reported_at = 0.0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not reported_at:
        if not killed_at and any(_oom_killed(p) for p in cluster.pods(namespace, f"app.kubernetes.io/instance={name}")):
            killed_at = time.monotonic()
        ready = cluster.condition(namespace, name, "Ready") or {}
        if ready.get("reason") == "OOMKilled":
            reported_at = time.monotonic()
        time.sleep(0.5)
    assert killed_at and reported_at, f"pod killed: {bool(killed_at)}, status: {cluster.model(namespace, name).get('status')}"
    print(f"OOMKilled in the model's status {reported_at - killed_at:.1f} s after it showed in the pod")
    assert reported_at - killed_at <= 60
    assert "limit (128Mi)" in ready["message"] and "raise serving.resources.limits.memory" in ready["message"], ready
    assert ready["status"] == "False"


def _oom_killed(pod: dict[str, Any]) -> bool:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (status.get("state") or {}, status.get("lastState") or {}):
            if (state.get("terminated") or {}).get("reason") == "OOMKilled":
                return pod["spec"].get("nodeName") == NODE_NAME
    return False


def test_a_service_answers_by_name_from_pods_and_by_cluster_ip_from_the_host(cluster: Cluster, node: Node,
                                                                             images: BuiltImages) -> None:  # fmt: skip
    """kube-proxy (nftables) and CoreDNS, as a real cluster has them: no hand-picked endpoints."""
    namespace = cluster.namespace(pod_security="restricted")
    image = images.refs["runtime-cpu"]
    server = pod("web", image, ["python", "-m", "http.server", "8080", "--directory", "/usr/local/lib"])
    server["metadata"]["labels"] = {"app": "web"}
    server["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    server["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    create(cluster, namespace, server)
    service = cluster.ok("POST", f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})  # fmt: skip
    cluster.wait(lambda: cluster.ready_endpoints(namespace, "web", port_name=""), 120, "web's endpoint ready")
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://web.{namespace}.svc.cluster.local/', timeout=10).status)"
    create(cluster, namespace, pod("client", image, ["python", "-c", fetch]))
    assert finished(cluster, namespace, "client")["status"]["phase"] == "Succeeded", cluster.kubectl(
        "logs", "-n", namespace, "client", check=False).stdout  # fmt: skip
    assert cluster.kubectl("logs", "-n", namespace, "client").stdout.strip() == "200"
    cluster_ip = service["spec"]["clusterIP"]
    answer = requests.get(f"http://{cluster_ip}/", timeout=10, proxies={"http": "", "https": ""})
    assert answer.status_code == 200, answer.text


def test_draining_the_node_mid_quantization_does_not_fail_the_job(cluster: Cluster, node: Node, operator: OperatorRelease,
                                                                 shapes_data: dict[str, Path]) -> None:  # fmt: skip
    """`kubectl drain` of the node running a quantize Job: the pod is evicted (DisruptionTarget),
    the Job's podFailurePolicy ignores it (no failure, a replacement pod), status says why the
    replacement waits while the node is cordoned, and the run completes once it is uncordoned."""
    namespace = demo_namespace(cluster, shapes_data)
    document = load_sample("demo-shapes.yaml")
    name = document["metadata"]["name"]
    document["metadata"]["namespace"] = namespace
    cluster.apply(document)
    job = cluster.wait(lambda: cluster.jobs(namespace, "quantize"), 60, "the quantize Job")[0]["metadata"]["name"]
    first = cluster.wait(lambda: [p for p in cluster.pods(namespace, f"job-name={job}") if p["status"].get("phase") == "Running"],
                         120, "the Job's pod running")[0]["metadata"]["name"]  # fmt: skip
    try:
        drained = cluster.kubectl("drain", NODE_NAME, f"--pod-selector=job-name={job}", "--grace-period=5",
                                 "--delete-emptydir-data", "--timeout=90s")
        assert f"pod/{first} evicted" in drained.stdout + drained.stderr, (drained.stdout, drained.stderr)
        cluster.wait(lambda: [p for p in cluster.pods(namespace, f"job-name={job}") if p["metadata"]["name"] != first],
                     60, "a replacement pod")  # fmt: skip
        failed = [c for c in cluster.jobs(namespace, "quantize")[0]["status"].get("conditions") or [] if c["type"] == "Failed"]
        assert not failed, failed
        waiting = cluster.wait_condition(namespace, name, "Quantized", "Unknown", "Unschedulable", timeout=60)
        assert "unschedulable" in waiting["message"], waiting
    finally:
        cluster.kubectl("uncordon", NODE_NAME)
    cluster.wait_condition(namespace, name, "Quantized", "True", "JobSucceeded", timeout=600)
