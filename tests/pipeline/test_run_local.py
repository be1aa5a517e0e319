"""`rtdetr-edge run RESOURCE.yaml`: first run does everything, a re-run skips to serving,
a serving-only edit does not quantize again, and the server answers real requests."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from rtdetr_edge.api.job import PipelineResult

from ..conftest import free_port
from .conftest import resource, write_resource


def run_cli(resource_file: Path, root: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rtdetr_edge.cli", "run", str(resource_file), "--root", str(root), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_run_skips_finished_stages(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts", name="local")
    resource_file = write_resource(tmp_path / "resource.yaml", document)

    first = run_cli(resource_file, tmp_path / "root", "--no-serve")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ran in" in first.stdout and "accuracy gate PASSED" in first.stdout
    assert "quantize: iteration 8/8" in first.stderr

    second = run_cli(resource_file, tmp_path / "root", "--no-serve")
    assert second.returncode == 0
    assert "is up to date" in second.stdout and "reused (inputs unchanged)" in second.stdout
    assert "quantize: iteration" not in second.stderr

    serving_only = copy.deepcopy(document)
    serving_only["spec"]["serving"].update(scoreThreshold=0.25, replicas=3, batchWindowMicros=500)
    third = run_cli(write_resource(tmp_path / "serving-edit.yaml", serving_only), tmp_path / "root", "--no-serve")
    assert third.returncode == 0 and "is up to date" in third.stdout, "a serving-only edit must not re-quantize"


def test_invalid_resource_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: rtdetr.io/v1alpha1\nkind: RTDETRModel\nmetadata: {name: x}\n"
        "spec: {arch: yolo, source: {}, serving: {maxBatchSize: 0}}\n"
    )
    result = run_cli(bad, tmp_path / "root", "--no-serve")
    assert result.returncode == 2
    for fragment in ("spec.arch: Input should be", "spec.source: source needs exactly one of inferenceModel",
                     "spec.serving.maxBatchSize", "spec.dataset is required", "spec.storage is required"):
        assert fragment in result.stderr


def test_gpu_resource_on_a_cpu_machine_says_how_to_run_it(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts")
    document["spec"]["serving"]["device"] = "gpu"
    result = run_cli(write_resource(tmp_path / "gpu.yaml", document), tmp_path / "root", "--no-serve")
    assert result.returncode == 2 and "--device cpu" in result.stderr


def test_run_serves_the_quantized_model(
    shapes_model: Path, shapes_dataset: Path, tmp_path: Path
) -> None:
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts", name="served")
    resource_file = write_resource(tmp_path / "resource.yaml", document)
    port = free_port()
    samples = sorted((shapes_dataset / "val2017").glob("*.jpg"))[:3]
    sample = samples[0]
    log_file = tmp_path / "run.log"
    command = [
        sys.executable, "-m", "rtdetr_edge.cli", "run", str(resource_file), "--root", str(tmp_path / "root"),
        "--port", str(port), "--sample-images", str(sample),
    ]  # fmt: skip
    with log_file.open("w") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while "Press Ctrl+C to stop." not in log_file.read_text():
            assert process.poll() is None, log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "run never became ready"
            time.sleep(0.5)
        output = log_file.read_text()
        assert "shapes not-needed" in output, "a CPU server neither collects nor reads TensorRT shape ranges"
        assert f"POST /v1/detect {sample.name}:" in output
        found = []
        for image in samples:
            response = requests.post(
                f"http://127.0.0.1:{port}/v1/detect?score_threshold=0.2",
                data=image.read_bytes(),
                headers={"Content-Type": "image/jpeg"},
                timeout=30,
            )
            assert response.status_code == 200 and response.json()["model"] == "served"
            found += response.json()["detections"]
        assert found, "the trained model finds shapes"
        assert {d["label"] for d in found} <= {"circle", "square", "triangle"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert process.returncode == 0


def pipeline_result(backend: str, fp32_ms: float, int8_ms: float) -> PipelineResult:
    """A result.json as the previous release wrote it (its nested records in snake_case): read as it is."""
    evaluation = {"map": 44.0, "map50": 59.0, "images": 64, "device": "cpu", "backend": backend,
                  "model_digest": "sha256:" + "b" * 64, "seconds": 9.0}  # fmt: skip
    quantize = {"method": "ptq", "act_config": {}, "iterations": 8, "final_loss": None, "seconds": 3.0,
                "input_digest": "sha256:" + "c" * 64, "output_digest": "sha256:" + "d" * 64, "input_bytes": 1_000_000,
                "output_bytes": 300_000, "params_ratio": 0.27}  # fmt: skip
    return PipelineResult.model_validate({
        "schema": "rtdetr.io/quantize-result/v1", "status": "Succeeded", "finishedAt": "2026-11-30T10:00:00+00:00",
        "pipelineDigest": "sha256:" + "a" * 64, "timingsSeconds": {"total": 30.0},
        "gate": {"passed": True, "reason": "WithinBudget", "message": "ok"},
        "source": {"digest": "sha256:" + "c" * 64, "sizeBytes": 1_000_000}, "quantize": quantize,
        "model": {"digest": "sha256:" + "d" * 64, "uri": "pvc://a/model", "sizeBytes": 2_000_000},
        "measuredOn": {"device": "cpu", "product": "AMD EPYC", "isaLevel": "avx2"},
        "baseline": {**evaluation, "precision": "fp32", "latency_ms": fp32_ms},
        "candidate": {**evaluation, "precision": "int8", "latency_ms": int8_ms},
    })  # fmt: skip


def test_the_summary_never_prints_a_simulated_int8_latency_as_a_speed(shapes_model: Path, shapes_dataset: Path,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    """PaddleSlim's model on a CPU runs its QDQ graph in FP32 kernels (accuracy for TensorRT): its
    latency is not INT8's. ONNX Runtime's INT8 is the CPU serving path: its latency is real, and the
    size is the file it loads. Every table says which CPU measured it."""
    from rtdetr_edge.local_run import summary_table
    from rtdetr_edge.resource import parse_resource

    model = parse_resource(resource(shapes_model, shapes_dataset, tmp_path))
    tensorrt = summary_table(model, pipeline_result("paddle", 17.1, 105.4), reused=False, endpoint=None)
    assert "105.4" not in tensorrt and "(GPU: TensorRT)" in tensorrt and "INT8 (for TensorRT)" in tensorrt
    assert "measured on cpu AMD EPYC, ISA avx2" in tensorrt
    cpu = summary_table(model, pipeline_result("onnxruntime", 5.8, 11.2), reused=False, endpoint=None)
    assert "11.2 ms" in cpu and "0.30 MB" in cpu and "INT8 is slower than FP32 here" in cpu
    assert "slower" not in summary_table(model, pipeline_result("onnxruntime", 375.0, 241.0), reused=False, endpoint=None)
    earlier = pipeline_result("paddle", 17.1, 105.4).model_copy(update={"measured_on": None})  # before measuredOn
    assert "measured on (not recorded: a result of an earlier release)" in summary_table(model, earlier, True, None)
