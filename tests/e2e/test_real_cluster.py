"""Real-cluster end-to-end tier: runs only when RTDETR_E2E_KUBECONFIG points at a cluster.

Uses the real kube-apiserver for what no emulator can prove: the CRD installs, its schema
and CEL rules are enforced by the server, and the operator (run from this checkout) creates
the quantize Job and reports status. A GPU, the images and PVC data are not required: the
Job is inspected, not awaited. Cleans up its namespace.

    RTDETR_E2E_KUBECONFIG=~/.kube/config make test
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("RTDETR_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not KUBECONFIG, reason="set RTDETR_E2E_KUBECONFIG to run against a real cluster"),
]


def kubectl(*args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = str(Path(sys.executable).parent / "kubectl")
    result = subprocess.run([binary, "--kubeconfig", str(KUBECONFIG), *args], input=input_text,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = f"rtdetr-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-f", str(REPO / "crds" / "rtdetrmodels.rtdetr.io.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/rtdetrmodels.rtdetr.io", "--timeout=60s")
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def sample(namespace: str) -> dict[str, Any]:
    document = yaml.safe_load((REPO / "configs" / "samples" / "rtdetr-r50.yaml").read_text())
    document["metadata"]["namespace"] = namespace
    return dict(document)


def test_server_enforces_cel_rules(namespace: str) -> None:
    document = sample(namespace)
    document["metadata"]["name"] = "invalid"
    document["spec"]["quantization"]["method"] = "none"
    result = kubectl("apply", "-f", "-", input_text=json.dumps(document), check=False)
    assert result.returncode != 0 and "int8 needs quantization.method" in result.stderr


def test_operator_creates_the_job_and_reports(namespace: str, tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "operator.log").open("w")
    operator = subprocess.Popen(
        [sys.executable, "-m", "rtdetr_operator.main", "--standalone", "--liveness", "", "--namespace", namespace,
         "--resync-seconds", "2"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        kubectl("apply", "-f", "-", input_text=json.dumps(sample(namespace)))
        deadline = time.monotonic() + 90
        job = None
        while time.monotonic() < deadline and job is None:
            jobs = json.loads(kubectl("-n", namespace, "get", "jobs", "-o", "json").stdout)["items"]
            job = jobs[0] if jobs else None
            time.sleep(1)
        assert job is not None, (tmp_path / "operator.log").read_text()[-3000:]
        assert job["metadata"]["ownerReferences"][0]["kind"] == "RTDETRModel"
        model = json.loads(kubectl("-n", namespace, "get", "rtdetr", "rtdetr-r50", "-o", "json").stdout)
        conditions = {c["type"]: c for c in model["status"]["conditions"]}
        assert conditions["Quantized"]["status"] == "Unknown" and model["status"]["observedGeneration"] == 1
        table = kubectl("-n", namespace, "get", "rtdetr").stdout  # server-side printer columns
        assert "PHASE" in table and "rtdetr-r50" in table
        kubectl("-n", namespace, "delete", "rtdetr", "rtdetr-r50", "--timeout=60s")
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(30)
        log.close()


