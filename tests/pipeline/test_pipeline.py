"""The quantize Job's sequence end to end: real ACT, real evaluation through the serving
predictor, the gate on real measurements, atomic artifacts, and faults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rtdetr_edge.api.job import RESULT_SCHEMA, TERMINATION_LIMIT, JobSummary, MeasuredOn, PipelineResult
from rtdetr_edge.coco import DatasetError
from rtdetr_edge.cpu_isa import this_cpu
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.pipeline import (
    PipelineError,
    artifact_paths,
    run_pipeline,
)
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import preprocess_bytes, stack_batch
from rtdetr_edge.quantize_onnx import int8_weights_portable
from rtdetr_edge.resource import parse_resource, pipeline_plan
from rtdetr_edge.storage import StorageResolver
from rtdetr_edge.warmup import warm_up

from .conftest import resource, write_resource


def run(document: dict, tmp_path: Path, termination_log: Path | None = None) -> PipelineResult:  # type: ignore[type-arg]
    resolver = StorageResolver(tmp_path / "pvc", tmp_path / "dl")
    return run_pipeline(parse_resource(document), resolver, tmp_path / "cache", "cpu", termination_log)


def test_good_candidate_passes_the_gate(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    """A GPU resource run on CPU: the candidate is PaddleSlim's QDQ model on Paddle, and the Job
    collects TensorRT's shape ranges so that serving pods never do."""
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts")
    document["spec"]["serving"]["device"] = "gpu"
    termination = tmp_path / "termination-log"
    result = run(document, tmp_path, termination)
    assert result.status == "Succeeded" and result.passed
    baseline, candidate = result.baseline, result.candidate
    assert baseline is not None and candidate is not None and result.gate is not None and result.model is not None
    assert baseline.precision == "fp32" and candidate.precision == "int8"
    assert (baseline.device, baseline.backend, candidate.backend) == ("cpu", "paddle", "paddle")
    assert baseline.map > 30, "the shipped shapes model is trained; its baseline mAP must mean something"
    assert result.gate.reason == "WithinBudget"
    assert result.accuracy is not None and result.accuracy.images == 32
    assert result.model.quantized and result.model.uri.endswith("/model")

    paths = artifact_paths(parse_resource(document), StorageResolver(tmp_path / "pvc", tmp_path / "dl"))
    final = paths.final
    written = json.loads((final / "result.json").read_text())
    assert written["schema"] == "rtdetr.io/quantize-result/v1" and written["candidate"]["latencyMs"] > 0
    assert PipelineResult.model_validate(written) == result, "result.json is the result's dump, camelCase"
    shapes = result.shape_ranges
    assert shapes is not None and (final / shapes.file).is_file() and (shapes.tensors or 0) > 100
    assert shapes.max_batch_size == 2
    assert not list(paths.run_dir.glob(".*partial*")) and not paths.progress_file.exists()

    line = termination.read_text()
    assert line.count("\n") == 1 and len(line.encode()) <= TERMINATION_LIMIT
    summary = JobSummary.model_validate_json(line)
    assert summary.ok and summary.gate is not None and summary.gate.passed
    assert summary.accuracy == result.accuracy and summary.model == result.model

    # Same inputs again: nothing is recomputed, the same document comes back.
    mtime = (final / "result.json").stat().st_mtime_ns
    started = time.perf_counter()
    assert run(document, tmp_path) == result
    assert time.perf_counter() - started < 5 and (final / "result.json").stat().st_mtime_ns == mtime


def test_cpu_int8_is_onnxruntime_quantization_gated_on_onnxruntime(
    shapes_model: Path, shapes_dataset: Path, tmp_path: Path, fixture_images: list[Path]
) -> None:
    """The CPU default: ONNX Runtime's static INT8 model, measured by the ONNX Runtime session that
    serves it, beside the FP32 export on the same runtime; no shape ranges (CPU reads none). Its
    7-bit weights keep it within the gate on AVX2 (8-bit weights lost 4.9 mAP there) and with VNNI."""
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts", method="ptq", calibrationBatches=8)
    document["spec"]["serving"]["cpuRuntime"] = "onnxruntime"
    assert pipeline_plan(parse_resource(document).spec).quantization.runtime == "onnxruntime"
    result = run(document, tmp_path)
    baseline, candidate, quantize = result.baseline, result.candidate, result.quantize
    assert baseline is not None and candidate is not None and quantize is not None and result.model is not None
    assert (baseline.backend, baseline.precision) == ("onnxruntime", "fp32")
    assert (candidate.backend, candidate.precision) == ("onnxruntime", "int8")
    assert quantize.act_config["runtime"] == "onnxruntime"
    assert result.passed, result.gate
    assert baseline.map - candidate.map <= document["spec"]["quantization"]["maxMapDrop"] and baseline.map > 30
    assert result.shape_ranges is None
    cpu = this_cpu()
    assert result.measured_on == MeasuredOn(device="cpu", product=cpu.product, isa_level=cpu.level)
    assert result.model.quantized is True and result.model.isa_portable is True
    measured_on = JobSummary.model_validate_json(result.summary().line()).measured_on
    assert measured_on is not None and measured_on.isa_level == cpu.level
    final = artifact_paths(parse_resource(document), StorageResolver(tmp_path / "pvc", tmp_path / "dl")).final
    model = ModelFiles.locate(final / "model")
    assert model.onnx_int8 is not None and model.is_quantized_for("onnxruntime") and not model.is_quantized()
    assert int8_weights_portable(model.onnx_int8), "7-bit weights: no CPU saturates them"
    assert quantize.act_config["weightBits"] == 7
    assert (final / "model" / "infer_cfg.yml").is_file(), "labels travel with the model"
    # What the gate measured is what serves: the same INT8 file, through warm-up.
    warmed = warm_up(final / "model", PredictorSettings(backend="onnxruntime", precision="int8"), tmp_path / "serve")
    try:
        batch = stack_batch([preprocess_bytes(fixture_images[0].read_bytes())])
        assert warmed.predictor.predict(batch).bbox.shape[1] == 6
    finally:
        warmed.predictor.close()
    assert warmed.report.shape_collection == "not-needed"


def test_damaged_candidate_fails_the_gate(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    """Damage by really training: ACT with a learning rate 10,000x the recipe's wrecks the weights."""
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts", learningRate=0.3, trainIter=8)
    result = run(document, tmp_path)
    gate = result.gate
    assert gate is not None and not gate.passed and gate.reason == "DropExceedsBudget", gate
    assert result.candidate is not None and result.baseline is not None
    assert result.candidate.map < result.baseline.map - 2.0
    assert "not deployed" in gate.message and not result.passed
    assert result.status == "Succeeded", "a failed gate is a result, not a crashed Job"


def test_termination_summary_is_bounded() -> None:
    huge = PipelineResult(status="Failed", reason="QuantizationFailed", message="x" * 10000, pipeline_digest="sha256:0",
                          finished_at="2026-12-05T00:00:00+00:00")  # fmt: skip
    line = huge.summary().line()
    assert len(line.encode()) <= TERMINATION_LIMIT and json.loads(line)["message"].endswith("...")


def corrupt_jpeg(dataset: Path) -> Path:
    victim = sorted((dataset / "train2017").glob("*.jpg"))[2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    return victim


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (corrupt_jpeg, "corrupt or truncated JPEG"),
        (lambda d: (d / "annotations" / "instances_val2017.json").unlink(), "instances_val2017.json does not exist"),
        (lambda d: [p.unlink() for p in (d / "train2017").iterdir()], "train2017 holds no .jpg"),
        (lambda d: shutil.rmtree(d / "val2017"), "does not exist"),
    ],
)
def test_dataset_faults_name_the_file(
    shapes_model: Path, shapes_dataset: Path, tmp_path: Path, damage, message: str  # type: ignore[no-untyped-def]
) -> None:
    dataset = tmp_path / "dataset"
    shutil.copytree(shapes_dataset, dataset)
    named = damage(dataset)
    document = resource(shapes_model, dataset, tmp_path / "artifacts")
    with pytest.raises(DatasetError, match=message) as raised:
        run(document, tmp_path)
    if isinstance(named, Path):
        assert named.name in str(raised.value)
    paths = artifact_paths(parse_resource(document), StorageResolver(tmp_path / "pvc", tmp_path / "dl"))
    failure = json.loads(paths.failure_file.read_text())
    assert failure["status"] == "Failed" and message.split()[0] in failure["message"]
    assert not paths.final.exists()


def test_a_category_the_model_cannot_produce(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    shutil.copytree(shapes_dataset, dataset)
    annotations = dataset / "annotations" / "instances_val2017.json"
    document = json.loads(annotations.read_text())
    document["categories"].append({"id": 99, "name": "hexagon"})
    document["annotations"][0]["category_id"] = 99
    annotations.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match=r"instances_val2017.json has 4 categories but the model predicts 3"):
        run(resource(shapes_model, dataset, tmp_path / "artifacts"), tmp_path)


def test_kill_9_during_quantize_leaves_nothing_that_looks_finished(
    shapes_model: Path, shapes_dataset: Path, tmp_path: Path
) -> None:
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts", trainIter=60)
    resource_file = write_resource(tmp_path / "resource.yaml", document)
    paths = artifact_paths(parse_resource(document), StorageResolver(tmp_path / "pvc", tmp_path / "dl"))
    command = [
        sys.executable, "-m", "rtdetr_edge.cli", "pipeline", str(resource_file),
        "--pvc-root", str(tmp_path / "pvc"), "--cache-dir", str(tmp_path / "cache"),
        "--termination-log", str(tmp_path / "termination-log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            state = json.loads(paths.progress_file.read_text())
            if state.get("stage") == "quantize" and int(state.get("done", 0)) >= 2:
                break
        except (FileNotFoundError, ValueError):
            pass
        assert process.poll() is None, "the pipeline ended before it could be killed"
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("quantization never reported progress")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not paths.final.exists(), "a killed run must not leave a finished-looking artifact"
    assert list(paths.run_dir.glob(f".{paths.key}.partial-*")), "its work stays hidden in a staging dir"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (paths.final / "result.json").is_file()
    assert not list(paths.run_dir.glob(f".{paths.key}.partial-*")), "the interrupted run's leftovers are removed"


def test_failed_stage_exits_non_zero_with_the_cause(shapes_dataset: Path, tmp_path: Path) -> None:
    empty_model = tmp_path / "not-a-model"
    empty_model.mkdir()
    resource_file = write_resource(tmp_path / "r.yaml", resource(empty_model, shapes_dataset, tmp_path / "artifacts"))
    termination = tmp_path / "termination-log"
    result = subprocess.run(
        [sys.executable, "-m", "rtdetr_edge.cli", "pipeline", str(resource_file), "--cache-dir", str(tmp_path / "c"),
         "--termination-log", str(termination)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no model.pdmodel in")
    summary = json.loads(termination.read_text())
    assert summary["ok"] is False and "no model.pdmodel" in summary["message"]


def test_evaluate_cli_matches_hand_check(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    """`rtdetr-edge evaluate` on the FP32 model reports the same mAP as the pipeline's baseline."""
    out = subprocess.run(
        [sys.executable, "-m", "rtdetr_edge.cli", "--log-level", "WARNING", "evaluate", "--model", str(shapes_model),
         "--images", str(shapes_dataset / "val2017"),
         "--annotations", str(shapes_dataset / "annotations" / "instances_val2017.json"),
         "--cache-dir", str(tmp_path / "c"), "--max-images", "16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["images"] == 16 and 0 <= result["map"] <= result["map50"] <= 100
    assert np.isfinite(result["latencyMs"])


def test_the_job_runs_the_operators_plan(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    """For a checkpoint source the operator hashes the checkpoint while the Job's spec names the
    export: `pipeline --plan` makes the Job use the operator's digest, so a finished run is
    found again (no second QAT) and its result names the digest the operator expects."""
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts")
    resource_file = write_resource(tmp_path / "resource.yaml", document)
    operators = "sha256:" + "5a" * 32
    plan = pipeline_plan(parse_resource(document).spec).model_copy(update={"pipeline_digest": operators})
    paths = artifact_paths(parse_resource(document), StorageResolver(tmp_path / "pvc", tmp_path / "dl"), operators)
    assert paths.digest == operators and paths.key == "5a" * 8
    paths.final.mkdir(parents=True)
    finished = {"schema": RESULT_SCHEMA, "status": "Succeeded", "pipelineDigest": operators, "message": "done before",
                "finishedAt": "2026-12-01T00:00:00+00:00",
                "model": {"digest": "sha256:" + "00" * 32, "uri": "pvc://artifacts/x/model"},
                "accuracy": {"baselineMap": 1.0, "quantizedMap": 1.0, "mapDrop": 0.0, "images": 4}}  # fmt: skip
    paths.result_file.write_text(json.dumps(finished))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.model_dump_json(by_alias=True))
    command = [
        sys.executable, "-m", "rtdetr_edge.cli", "pipeline", str(resource_file), "--pvc-root", str(tmp_path / "pvc"),
        "--cache-dir", str(tmp_path / "cache"), "--termination-log", str(tmp_path / "termination-log"),
    ]  # fmt: skip
    done = subprocess.run([*command, "--plan", str(plan_file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = JobSummary.from_termination_message((tmp_path / "termination-log").read_text())
    assert summary is not None and summary.pipeline_digest == operators, summary
    assert summary.model is not None and summary.model.digest == "sha256:" + "00" * 32, "reused, not run again"
    # ... and judged with the resource's budget (maxMapDrop 2.0), which is not part of the digest.
    assert summary.gate is not None and summary.gate.passed and summary.message == "mAP 1.0 -> 1.0 (drop 0.0 <= 2)", summary
    plan_file.write_text(plan.model_dump_json(by_alias=True).replace(operators, "latest"))
    bad = subprocess.run([*command, "--plan", str(plan_file)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and f"--plan {plan_file}" in bad.stderr and "pipelineDigest" in bad.stderr, bad.stderr


def test_an_image_with_other_tools_refuses_the_plan(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    """The digest names the tool versions; an image with others would make a different model
    under the same name: the Job stops before any work, with the cause."""
    document = resource(shapes_model, shapes_dataset, tmp_path / "artifacts")
    model = parse_resource(document)
    plan = pipeline_plan(model.spec)
    other = plan.model_copy(update={"tools": {**plan.tools, "paddleslim": "2.5.0"}})
    with pytest.raises(PipelineError, match="paddleslim 2.6.0 is installed, the pipeline needs 2.5.0") as raised:
        run_pipeline(model, StorageResolver(tmp_path / "pvc", tmp_path / "dl"), tmp_path / "cache", "cpu", None, other)
    assert raised.value.reason == "ToolVersionMismatch"
    failure = json.loads(artifact_paths(model, StorageResolver(tmp_path / "pvc", tmp_path / "dl")).failure_file.read_text())
    assert failure["reason"] == "ToolVersionMismatch"
