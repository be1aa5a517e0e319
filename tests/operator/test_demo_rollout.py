"""The demo sample on a real control plane, end to end, as a user drives it:

``helm install`` → ``kubectl apply -f configs/samples/demo-shapes.yaml`` → the real Job
controller and scheduler → the pod runner runs the real pipeline (ACT, pycocotools, gate) →
Deployment → ReplicaSet → pods running ``rtdetr-edge serve`` → Ready → detections through
the Service's ready endpoints. Then the changes users make: a serving-only edit, a model
swap under load, a change that fails the gate, and deletion.

The tests in this module run in order on one resource (each needs the previous state);
the whole story takes a few minutes (three real quantization runs on 2 cores).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from .conftest import Cluster, OperatorRelease, demo_namespace, load_sample

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
    assert pod["spec"]["nodeName"] == "runner-0", "a CPU model's Job runs on a CPU node, not the tainted GPU node"
    cluster.wait_condition(namespace, NAME, "Quantized", "True", "JobSucceeded", timeout=PIPELINE_TIMEOUT)
    demo.timings["quantize"] = time.monotonic() - started
    cluster.wait_condition(namespace, NAME, "Ready", "True", "Serving", timeout=300)
    demo.timings["ready"] = time.monotonic() - started

    status = cluster.model(namespace, NAME)["status"]
    assert status["phase"] == "Ready" and status["observedGeneration"] == 1
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
