"""The real kopf operator process against the API emulator, driven over HTTP like kubectl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from .emulator import KubernetesApiEmulator

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "rtdetrmodels.rtdetr.io.yaml"
SAMPLES = REPO / "configs" / "samples"
RESYNC_SECONDS = 0.3
MODELS = "/apis/rtdetr.io/v1alpha1"


def load_sample(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / name).read_text()))


class Cluster:
    """Test-side client: plays the user (kubectl-like HTTP calls), the Job controller, the
    kubelet (pod status, logs, termination messages) and the Deployment controller."""

    def __init__(self, emulator: KubernetesApiEmulator) -> None:
        self.emulator = emulator
        self.url = emulator.url
        self.http = requests.Session()

    # -- generic -------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> requests.Response:
        data = json.dumps(body) if body is not None else None
        return self.http.request(method, self.url + path, data=data, headers={"Content-Type": content_type}, timeout=10)

    def ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        response = self.request(method, path, body, content_type)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return dict(response.json())

    def get(self, path: str) -> dict[str, Any] | None:
        response = self.request("GET", path)
        return dict(response.json()) if response.status_code == 200 else None

    def items(self, path: str, selector: str | None = None) -> list[dict[str, Any]]:
        suffix = f"?labelSelector={selector}" if selector else ""
        return list(self.ok("GET", path + suffix)["items"])

    def wait(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    # -- RTDETRModel ---------------------------------------------------------------------------
    def create_model(self, document: dict[str, Any]) -> dict[str, Any]:
        namespace = document["metadata"].get("namespace", "default")
        return self.ok("POST", f"{MODELS}/namespaces/{namespace}/rtdetrmodels", document)

    def model(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.get(f"{MODELS}/namespaces/{namespace}/rtdetrmodels/{name}")
        assert found is not None, f"{namespace}/{name} not found"
        return found

    def patch_model(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.ok("PATCH", f"{MODELS}/namespaces/{namespace}/rtdetrmodels/{name}", patch, "application/merge-patch+json")

    def condition(self, namespace: str, name: str, condition_type: str) -> dict[str, Any] | None:
        status = self.model(namespace, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == condition_type), None)

    def wait_condition(self, namespace: str, name: str, condition_type: str, status: str, reason: str | None = None,
                       timeout: float = 20.0) -> dict[str, Any]:  # fmt: skip
        def check() -> dict[str, Any] | None:
            found = self.condition(namespace, name, condition_type)
            if found and found["status"] == status and (reason is None or found["reason"] == reason):
                return found
            return None

        return dict(self.wait(check, timeout, f"{condition_type}={status} ({reason})"))

    # -- children ------------------------------------------------------------------------------
    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return self.items(f"/apis/batch/v1/namespaces/{namespace}/jobs")

    def wait_job(self, namespace: str, count: int = 1, component: str = "quantize") -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            jobs = [j for j in self.jobs(namespace) if j["metadata"]["labels"].get("app.kubernetes.io/component") == component]
            return jobs if len(jobs) >= count else None

        return list(self.wait(check, what=f"{count} {component} job(s)"))

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    def run_job_pod(self, namespace: str, job_name: str, log: str = "") -> str:
        """What the Job controller + kubelet do: a running pod for the Job, with its log."""
        pod = self.ok("POST", f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job_name}-abcde", "labels": {"job-name": job_name}},
            "spec": {"containers": [{"name": "pipeline", "image": "x"}], "restartPolicy": "Never"},
        })  # fmt: skip
        name = pod["metadata"]["name"]
        self.ok("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                {"status": {"phase": "Running", "containerStatuses": [{"name": "pipeline", "ready": True,
                 "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {"startedAt": "2026-11-25T00:00:00Z"}}}]}},
                "application/merge-patch+json")  # fmt: skip
        self.emulator.set_log(namespace, name, log)
        return name

    def finish_job(self, namespace: str, job_name: str, succeeded: bool, termination_message: str,
                   reason: str = "BackoffLimitExceeded", message: str = "Job has reached the specified backoff limit") -> None:  # fmt: skip
        pods = self.items(f"/api/v1/namespaces/{namespace}/pods", f"job-name={job_name}")
        pod_name = pods[0]["metadata"]["name"] if pods else self.run_job_pod(namespace, job_name)
        self.ok("PATCH", f"/api/v1/namespaces/{namespace}/pods/{pod_name}/status",
                {"status": {"phase": "Succeeded" if succeeded else "Failed", "containerStatuses": [{
                    "name": "pipeline", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
                    "state": {"terminated": {"exitCode": 0 if succeeded else 1, "reason": "Completed" if succeeded else "Error",
                                             "message": termination_message}}}]}},
                "application/merge-patch+json")  # fmt: skip
        condition = {"type": "Complete", "status": "True"} if succeeded else {"type": "Failed", "status": "True", "reason": reason, "message": message}
        self.ok("PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}/status",
                {"status": {"conditions": [condition], "succeeded" if succeeded else "failed": 1}},
                "application/merge-patch+json")  # fmt: skip

    def set_deployment_ready(self, namespace: str, name: str, ready: int | None = None) -> None:
        """What the Deployment controller reports once the new pods are Ready."""
        deployment = self.deployment(namespace, name)
        assert deployment is not None
        replicas = deployment["spec"]["replicas"] if ready is None else ready
        self.ok("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status",
                {"status": {"observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
                            "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}},
                "application/merge-patch+json")  # fmt: skip

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return self.items(f"/api/v1/namespaces/{namespace}/events")


def summary(digest: str, passed: bool = True, baseline: float = 53.1, quantized: float = 53.0, key: str | None = None,
            namespace: str = "vision", name: str = "rtdetr-r50") -> str:  # fmt: skip
    """The one-line termination message `rtdetr-edge pipeline` writes."""
    key = key or digest.split(":")[1][:16]
    drop = round(baseline - quantized, 2)
    message = f"mAP {baseline:.1f} -> {quantized:.1f} (drop {drop:.1f} {'<=' if passed else '>'} 0.5)"
    return json.dumps({
        "schema": "rtdetr.io/quantize-result/v1", "ok": True, "pipelineDigest": digest,
        "model": {"digest": "sha256:" + "ab" * 32, "uri": f"pvc://rtdetr-artifacts/{namespace}/{name}/{key}/model",
                  "sizeBytes": 48_000_000, "quantized": True, "method": "qat"},
        "accuracy": {"baselineMap": baseline, "quantizedMap": quantized, "mapDrop": drop, "images": 500},
        "shapeRanges": {"file": f"shapes/{'ab' * 32}-b4.pbtxt", "maxBatchSize": 4, "tensors": 1200},
        "gate": {"passed": passed, "reason": "WithinBudget" if passed else "DropExceedsBudget", "message": message},
        "message": message,
    }, separators=(",", ":"))  # fmt: skip


@pytest.fixture
def api() -> Iterator[KubernetesApiEmulator]:
    emulator = KubernetesApiEmulator()
    emulator.register_crd_file(CRD_FILE)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def cluster(api: KubernetesApiEmulator) -> Cluster:
    return Cluster(api)


@pytest.fixture
def kubeconfig(api: KubernetesApiEmulator, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": api.url}}],
        "users": [{"name": "tester", "user": {"token": "emulator"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": "default"}}],
    }))  # fmt: skip
    return path


@dataclass
class OperatorProcess:
    process: subprocess.Popen[str]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class OperatorLauncher:
    def __init__(self, kubeconfig: Path, tmp_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.tmp_path = tmp_path
        self.started: list[OperatorProcess] = []

    def start(self, *extra: str) -> OperatorProcess:
        log_file = self.tmp_path / f"operator-{len(self.started)}.log"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "rtdetr_operator.main", "--standalone", "--liveness", "",
                   "--resync-seconds", str(RESYNC_SECONDS), *extra]  # fmt: skip
        with log_file.open("w") as stream:
            process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, text=True, env=env)
        operator = OperatorProcess(process, log_file)
        self.started.append(operator)
        deadline = time.monotonic() + 30
        while "rtdetr-edge operator started" not in operator.log():
            assert process.poll() is None, operator.log()
            assert time.monotonic() < deadline, operator.log()
            time.sleep(0.05)
        return operator


@pytest.fixture
def operator(kubeconfig: Path, tmp_path: Path) -> Iterator[OperatorLauncher]:
    launcher = OperatorLauncher(kubeconfig, tmp_path)
    try:
        yield launcher
    finally:
        for started in launcher.started:
            started.stop()
