"""``rtdetr-edge pipeline RESOURCE.yaml``: what the quantize Job runs.

quantize → evaluate(FP32 baseline) → evaluate(INT8, through the serving predictor)
→ accuracy gate → shape-range collection (for TensorRT: GPU serving only), all recorded in one ``result.json``.

Artifacts land in ``<artifacts>/<namespace>/<name>/<pipeline-digest[:16]>/``, built
in a hidden staging directory and renamed when complete, so a killed Job leaves
nothing that looks finished, and a re-run with the same digest is a no-op. A failed
run writes ``<digest[:16]>.failed.json`` beside it (never inside it) and exits
non-zero with the cause as the last line of stderr; in a pod, a one-line JSON
summary (≤ 4 KiB) goes to ``/dev/termination-log`` for the operator.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import ValidationError

from rtdetr_edge.api.job import (
    RESULT_SCHEMA,
    Accuracy,
    EffectiveQuantization,
    MeasuredOn,
    ModelRef,
    PipelinePlan,
    PipelineResult,
    QuantizeRun,
    ResourceRef,
    ShapeRangesRef,
    SourceRef,
)
from rtdetr_edge.coco import class_to_category_ids, list_images, load_ground_truth
from rtdetr_edge.cpu_isa import this_cpu
from rtdetr_edge.device_identity import detect_device_identity
from rtdetr_edge.engine_cache import shape_file_name
from rtdetr_edge.errors import RtdetrEdgeError
from rtdetr_edge.files import write_text_atomic
from rtdetr_edge.gate import accuracy_gate, judge, reported_map
from rtdetr_edge.model_files import LABELS_FILE, ModelFiles
from rtdetr_edge.oci import Reference, RegistryAccess, push_model
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.progress import ProgressReporter
from rtdetr_edge.resource import (
    RTDETRModel,
    artifact_key,
    installed_tool_versions,
    pipeline_digest,
    pipeline_plan,
    tool_version_problems,
)
from rtdetr_edge.storage import StorageResolver, find_model_dir

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
MODEL_SUBDIR = "model"
SHAPES_SUBDIR = "shapes"
TERMINATION_LOG = Path("/dev/termination-log")
EVALUATION_PROGRESS_SECONDS = 2.0  # the phase reporter writes at once; images are reported this often
DEFAULT_NUM_CLASSES = 80  # COCO, when the export has no infer_cfg.yml label_list


class PipelineError(RtdetrEdgeError):
    code = "pipeline_failed"

    def __init__(self, message: str, reason: str = "PipelineFailed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ArtifactPaths:
    run_dir: Path  # <artifacts>/<namespace>/<name>
    key: str  # pipeline digest, shortened
    digest: str = ""  # the pipeline digest itself (what results report)

    @property
    def final(self) -> Path:
        return self.run_dir / self.key

    @property
    def result_file(self) -> Path:
        return self.final / RESULT_FILE

    @property
    def progress_file(self) -> Path:
        return self.run_dir / f".{self.key}.progress.json"

    @property
    def failure_file(self) -> Path:
        return self.run_dir / f"{self.key}.failed.json"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / f".{self.key}.lock"

    def staging(self) -> Path:
        return self.run_dir / f".{self.key}.partial-{os.getpid()}"


def artifact_paths(model: RTDETRModel, resolver: StorageResolver, digest: str | None = None) -> ArtifactPaths:
    """Where this pipeline's result lives. ``digest``: the one the operator computed and hands
    the Job (for a checkpoint source it hashes the checkpoint, while the Job's spec names the
    export), so both agree on the key; computed from the spec when run by hand."""
    root = resolver.local_path(model.spec.artifacts)
    digest = digest or pipeline_digest(model.spec)
    return ArtifactPaths(root / model.namespace / model.name, artifact_key(digest), digest)


def read_result(paths: ArtifactPaths) -> PipelineResult | None:
    """The finished result for this digest, if any (a finished directory is always complete)."""
    try:
        text = paths.result_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise PipelineError(f"{paths.result_file} is unreadable ({error}); delete {paths.final} to redo it") from None
    try:
        schema = json.loads(text).get("schema")
    except (ValueError, AttributeError) as error:
        raise PipelineError(f"{paths.result_file} is not a JSON object ({error}); delete {paths.final} to redo it") from None
    if schema != RESULT_SCHEMA:
        raise PipelineError(f"{paths.result_file} has schema {schema!r}, expected {RESULT_SCHEMA}")
    try:
        return PipelineResult.model_validate_json(text)
    except ValidationError as error:
        raise PipelineError(f"{paths.result_file} is not a {RESULT_SCHEMA} ({error}); delete {paths.final} to redo it") from None


def write_termination_log(result: PipelineResult, path: Path | None) -> None:
    """One JSON line ≤ 4 KiB for the Pod's termination message (what the operator reads)."""
    target = path if path is not None else (TERMINATION_LOG if TERMINATION_LOG.exists() else None)
    if target is None:
        return
    try:
        target.write_text(result.summary().line() + "\n")
    except OSError as error:  # not in a pod, or no permission: the result file still has it
        log.warning("could not write the termination log %s: %s", target, error)


def write_result(path: Path, result: PipelineResult) -> None:
    write_text_atomic(path, json.dumps(result.wire(), indent=2, sort_keys=True))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def num_model_classes(model_dir: Path) -> int:
    labels = ModelFiles.locate(model_dir).label_list()
    return len(labels) if labels else DEFAULT_NUM_CLASSES


def published(result: PipelineResult, model: RTDETRModel, paths: ArtifactPaths, access: RegistryAccess | None) -> PipelineResult:
    """With storage.registry, the model (and its shape ranges) pushed there, and the result naming
    it by digest (what serving pods pull); result.json keeps where the Job wrote it. Pushing the
    same files again pushes nothing new."""
    registry = model.spec.storage.registry
    if registry is None or result.model is None:
        return result
    access = replace(access or RegistryAccess(), plain_http=registry.plain_http)
    shapes = paths.final / result.shape_ranges.file if result.shape_ranges is not None else None
    mark = time.perf_counter()
    pinned = push_model(paths.final / MODEL_SUBDIR, Reference.parse(f"{registry.repository}:{paths.key}"), access, shapes)
    log.info("pushed the model to %s in %.1f s", pinned, time.perf_counter() - mark)
    return result.model_copy(update={"model": result.model.model_copy(update={"uri": str(pinned)})})


def run_pipeline(
    model: RTDETRModel,
    resolver: StorageResolver,
    cache_dir: Path,
    device: str = "cpu",
    termination_log: Path | None = None,
    plan: PipelinePlan | None = None,
    registry: RegistryAccess | None = None,
) -> PipelineResult:
    """Run (or reuse) the quantize Job's sequence for ``model``; return its result.
    ``plan``: the operator's (digest, ACT settings, tool versions); made from the resource
    when run by hand. ``registry``: credentials and CA for storage.registry."""
    plan = plan or pipeline_plan(model.spec)
    paths = artifact_paths(model, resolver, plan.pipeline_digest)
    existing = read_result(paths)
    if existing is not None:
        log.info("pipeline %s already finished (%s); nothing to do", paths.key, paths.final)
        existing = published(judged_again(existing, plan.quantization), model, paths, registry)
        write_termination_log(existing, termination_log)
        return existing
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.lock_file)):
        existing = read_result(paths)
        if existing is not None:
            existing = published(judged_again(existing, plan.quantization), model, paths, registry)
            write_termination_log(existing, termination_log)
            return existing
        for stale in paths.run_dir.glob(f".{paths.key}.partial-*"):
            log.info("removing %s left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)
        staging = paths.staging()
        try:
            result = _run_stages(model, resolver, cache_dir, device, plan, paths, staging)
        except RtdetrEdgeError as error:
            shutil.rmtree(staging, ignore_errors=True)
            failure = PipelineResult(
                status="Failed",
                reason=getattr(error, "reason", type(error).__name__.removesuffix("Error") + "Failed"),
                message=str(error),
                pipeline_digest=paths.digest,
                finished_at=now(),
            )
            write_result(paths.failure_file, failure)
            write_termination_log(failure, termination_log)
            raise
        paths.failure_file.unlink(missing_ok=True)
        paths.progress_file.unlink(missing_ok=True)
    result = published(result, model, paths, registry)
    write_termination_log(result, termination_log)
    return result


def judged_again(result: PipelineResult, quantization: EffectiveQuantization) -> PipelineResult:
    """A finished run's result judged with this plan's gate budget (the budget is not part of the
    pipeline digest: the same model may be judged again with another). result.json keeps the
    verdict of the run that made it."""
    if result.accuracy is None:
        return result
    verdict = judge(result.accuracy, quantization)
    if verdict != result.gate:
        log.info("accuracy gate, with this resource's budget: %s", verdict.message)
    return result.model_copy(update={"gate": verdict, "message": verdict.message})


def evaluation_settings(spec: Any, int8_runtime: str, device: str) -> tuple[PredictorSettings, PredictorSettings]:
    """(baseline, candidate) predictor settings: the candidate exactly as it will be served, the
    baseline the FP32 export on the same runtime, side by side.

    A CPU INT8 model made for ONNX Runtime is evaluated on CPU whatever node the Job runs on. fp16
    exists only on GPU, so a CPU run of a GPU resource (rtdetr-edge run --device cpu) measures fp32
    and says so. On CPU the runtime is serving.cpuRuntime, except for a PaddleSlim INT8 model.
    """
    precision = spec.serving.precision
    if int8_runtime == "onnxruntime":
        device, backend = "cpu", "onnxruntime"
    elif device == "cpu" and precision == "int8":
        backend = "paddle"  # the PaddleSlim QDQ model: the accuracy TensorRT INT8 will give
    else:
        backend = spec.serving.cpu_runtime if device == "cpu" else "paddle"
    if device == "cpu" and precision == "fp16":
        log.warning("fp16 needs a GPU; evaluating the candidate in fp32 on CPU")
        precision = "fp32"
    batch = spec.serving.max_batch_size
    baseline = PredictorSettings(device=device, precision="fp32", backend=backend, max_batch_size=batch)  # type: ignore[arg-type]
    candidate = PredictorSettings(device=device, precision=precision, backend=backend, max_batch_size=batch)  # type: ignore[arg-type]
    return baseline, candidate


def measured_on(settings: PredictorSettings) -> MeasuredOn:
    """Where the gate ran (JobSummary's ``measuredOn``): serving pods compare their CPU with it."""
    identity = detect_device_identity(settings)
    return MeasuredOn(device=identity.kind, product=identity.product,
                      isa_level=this_cpu().level if identity.kind == "cpu" else None)  # fmt: skip


def _run_stages(
    model: RTDETRModel,
    resolver: StorageResolver,
    cache_dir: Path,
    device: str,
    plan: PipelinePlan,
    paths: ArtifactPaths,
    staging: Path,
) -> PipelineResult:
    from rtdetr_edge.evaluate import evaluate_model
    from rtdetr_edge.quantize import QuantizeSettings, quantize_model
    from rtdetr_edge.shape_ranges import collect_shape_ranges
    from rtdetr_edge.warmup import cpu_numerics_portable

    spec = model.spec
    wrong_tools = tool_version_problems(plan.tools, installed_tool_versions())
    if wrong_tools:
        raise PipelineError(
            f"this image cannot make the model the plan names: {'; '.join(wrong_tools)}. Use the runtime image "
            "of the operator's release (Helm values images.runtimeGpu / images.runtimeCpu)",
            reason="ToolVersionMismatch",
        )
    timings: dict[str, float] = {}
    started = time.perf_counter()
    phases = ProgressReporter(paths.progress_file, "pipeline", 5, min_interval_seconds=0)

    if spec.source.inference_model is None:
        raise PipelineError(
            "source.checkpoint needs the export step (PaddleDetection, exporter image); "
            "give source.inferenceModel for a model exported with trt=True",
            reason="ExportRequired",
        )
    source_dir = find_model_dir(resolver.local_path(spec.source.inference_model, spec.source.sha256))
    source = ModelFiles.locate(source_dir)
    dataset_root = resolver.local_path(spec.dataset.uri)
    train_images = list_images(dataset_root / spec.dataset.train_images)
    ground_truth = load_ground_truth(
        dataset_root / spec.dataset.val_annotations, dataset_root / spec.dataset.val_images, spec.dataset.max_val_images
    )
    category_map = class_to_category_ids(
        ground_truth,
        num_model_classes(source_dir),
        list(spec.dataset.category_ids) if spec.dataset.category_ids is not None else None,
    )
    quantization = plan.quantization
    staging.mkdir(parents=True)
    model_dir = staging / MODEL_SUBDIR

    phases.update(0, phase="quantize")
    mark = time.perf_counter()
    quantize_run: QuantizeRun | None = None
    if quantization.method == "none":
        model_dir.mkdir()
        shutil.copy2(source.program, model_dir / source.program.name)
        shutil.copy2(source.params, model_dir / source.params.name)
        if (source_dir / LABELS_FILE).is_file():  # quantize_model keeps it itself
            shutil.copy2(source_dir / LABELS_FILE, model_dir / LABELS_FILE)
    else:
        report = quantize_model(
            source_dir,
            train_images,
            model_dir,
            QuantizeSettings(
                arch=spec.arch,
                method=quantization.method,
                train_iter=quantization.train_iter,
                eval_iter=quantization.eval_iter,
                learning_rate=quantization.learning_rate,
                quantize_op_types=tuple(quantization.quantize_op_types),
                batch_size=quantization.batch_size,
                calibration_batches=quantization.calibration_batches,
                device=device,
                runtime=quantization.runtime,
                onnxruntime=quantization.onnxruntime,
            ),
            progress_file=paths.progress_file,
        )
        quantize_run = report
    timings["quantize"] = time.perf_counter() - mark

    baseline_settings, candidate_settings = evaluation_settings(spec, quantization.runtime, device)
    log.info(
        "evaluating on %s: baseline %s fp32, candidate %s %s", baseline_settings.device, baseline_settings.backend,
        candidate_settings.backend, candidate_settings.precision,
    )  # fmt: skip

    def evaluation_progress(label: str, step: int) -> Any:
        last = [float("-inf")]  # when images_done was last reported: every 2 s, not every image

        def report(done: int, total: int, elapsed: float) -> None:
            if done == total or elapsed - last[0] >= EVALUATION_PROGRESS_SECONDS:
                last[0] = elapsed
                phases.update(step, phase=label, images_done=done, images_total=total)
            if done == total or done % 50 == 0:
                log.info("%s: %d/%d images (%.0fs)", label, done, total, elapsed)

        return report

    phases.update(1, phase="evaluate baseline (fp32)")
    mark = time.perf_counter()
    baseline = evaluate_model(
        source_dir, baseline_settings, cache_dir, ground_truth, category_map,
        on_progress=evaluation_progress("evaluate baseline (fp32)", 1),
    )  # fmt: skip
    timings["evaluate_baseline"] = time.perf_counter() - mark

    phases.update(2, phase=f"evaluate candidate ({candidate_settings.precision})")
    mark = time.perf_counter()
    candidate = evaluate_model(
        model_dir, candidate_settings, cache_dir, ground_truth, category_map,
        on_progress=evaluation_progress(f"evaluate candidate ({candidate_settings.precision})", 2),
    )  # fmt: skip
    timings["evaluate_candidate"] = time.perf_counter() - mark

    phases.update(3, phase="accuracy gate")
    baseline_map, quantized_map = reported_map(baseline.map), reported_map(candidate.map)  # as the gate judges them
    verdict = accuracy_gate(baseline_map, quantized_map, quantization.max_map_drop, quantization.min_baseline_map)
    log.info("accuracy gate: %s", verdict.message)

    candidate_files = ModelFiles.locate(model_dir)
    candidate_digest = candidate_files.digest()
    shape_ranges_ref: ShapeRangesRef | None = None
    if spec.serving.device == "gpu":
        # TensorRT needs every tensor's shape range; collect them here, where memory is sized for
        # quantization, so serving pods never collect on first start. CPU predictors use none.
        phases.update(4, phase="shape-range collection")
        mark = time.perf_counter()
        shape_name = shape_file_name(candidate_digest, spec.serving.max_batch_size)
        (staging / SHAPES_SUBDIR).mkdir()
        shape_ranges = collect_shape_ranges(
            candidate_files, PredictorSettings(device="cpu", max_batch_size=spec.serving.max_batch_size),
            staging / SHAPES_SUBDIR / shape_name,
        )  # fmt: skip
        timings["shape_ranges"] = time.perf_counter() - mark
        shape_ranges_ref = ShapeRangesRef(
            file=f"{SHAPES_SUBDIR}/{shape_name}", max_batch_size=spec.serving.max_batch_size, tensors=len(shape_ranges)
        )
    timings["total"] = time.perf_counter() - started

    artifacts_uri = spec.artifacts.rstrip("/")
    final_uri = f"{artifacts_uri}/{model.namespace}/{model.name}/{paths.key}"
    result = PipelineResult(
        status="Succeeded",
        resource=ResourceRef(name=model.name, namespace=model.namespace),
        pipeline_digest=paths.digest,
        message=verdict.message,
        model=ModelRef(
            digest=candidate_digest,
            uri=f"{final_uri}/{MODEL_SUBDIR}",
            size_bytes=candidate_files.size_bytes(),
            quantized=candidate_files.is_quantized_for(candidate_settings.backend),
            method=quantization.method,
            isa_portable=cpu_numerics_portable(candidate_files, candidate_settings),
        ),
        source=SourceRef(digest=source.digest(), size_bytes=source.size_bytes()),
        quantize=quantize_run,
        quantization=quantization,
        baseline=baseline,
        candidate=candidate,
        gate=verdict,
        accuracy=Accuracy(
            baseline_map=baseline_map,
            quantized_map=quantized_map,
            map_drop=reported_map(baseline_map - quantized_map),
            images=candidate.images,
        ),
        shape_ranges=shape_ranges_ref,
        category_ids=category_map,
        measured_on=measured_on(candidate_settings),  # ONNX Runtime INT8: CPU, wherever the Job runs
        timings_seconds={name: round(value, 1) for name, value in timings.items()},
        tools=plan.tools,
        finished_at=now(),
    )
    write_result(staging / RESULT_FILE, result)
    phases.update(5, phase="done")
    os.replace(staging, paths.final)
    log.info("pipeline %s finished: %s", paths.key, paths.final)
    return result

