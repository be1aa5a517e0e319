"""Warm-up: the manual "run it twice" flow, made safe to repeat and to run concurrently.

0. Numerics: a CPU INT8 model whose numbers differ on this CPU from what its accuracy gate
   measured (8-bit ONNX Runtime weights, gated with VNNI, served without) is refused.
1. Shape ranges (TensorRT only; CPU predictors skip this step): reuse
   ``shapes/<model>-b<max>.pbtxt`` or the pipeline's seed if it covers every batch
   size, else collect it on the serving device (under a per-model lock) and publish atomically.
2. Engine: key = hash(model digest, shape-file digest, backend, device,
   precision, max batch, device identity, versions). A verified entry is loaded;
   a missing or corrupt one is built in a staging directory under the key's lock
   and published by rename, so two processes on one node never build twice.
3. Self-test: batch 1 and the max batch must give well-formed outputs.
Only then is the predictor handed to the caller (the server reports ready).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rtdetr_edge.cpu_isa import IsaLevel, isa_mismatch, this_cpu
from rtdetr_edge.device_identity import detect_device_identity, software_versions
from rtdetr_edge.engine_cache import EngineCache, EngineEntry, EngineKey, engine_cache_key
from rtdetr_edge.files import digest_hex, file_sha256
from rtdetr_edge.errors import CpuIsaMismatchError, WarmupError
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.predictor import Predictor
from rtdetr_edge.predictor.onnx_backend import ONNX_FILE_NAME, OnnxRuntimePredictor, convert_to_onnx
from rtdetr_edge.predictor.paddle_backend import PaddlePredictor
from rtdetr_edge.predictor.plan import (
    OnnxRuntimePlan,
    PaddlePlan,
    check_supported,
    plan_predictor,
    uses_shape_ranges,
)
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import synthetic_inputs
from rtdetr_edge.shape_ranges import collect_shape_ranges, read_valid_shape_file

log = logging.getLogger(__name__)


@dataclass
class WarmupReport:
    """What warm-up did; logged as one JSON line and exposed in metrics."""

    model_digest: str
    quantized: bool
    backend: str
    device: str
    precision: str
    max_batch_size: int
    shape_file: str | None  # None: the predictor does not use shape ranges (CPU)
    shape_collection: str  # "collected" | "reused" | "seeded" | "not-needed"
    engine_key: str
    engine_cache: str  # "hit" | "built" | "rebuilt" (a corrupt entry was discarded)
    engine_dir: str
    discarded_reason: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class WarmedModel:
    model: ModelFiles
    settings: PredictorSettings
    predictor: Predictor
    report: WarmupReport


def self_test(predictor: Predictor, max_batch_size: int) -> None:
    """Raise :class:`WarmupError` unless batch 1 and the max batch give well-formed outputs."""
    for batch_size in sorted({1, max_batch_size}):
        outputs = predictor.predict(synthetic_inputs(batch_size))
        bbox, bbox_num = outputs.bbox, outputs.bbox_num
        if bbox.ndim != 2 or bbox.shape[1] != 6:
            raise WarmupError(f"self-test: bbox output has shape {bbox.shape}, expected [M, 6]")
        if bbox_num.shape != (batch_size,):
            raise WarmupError(f"self-test: bbox_num has shape {bbox_num.shape} for a batch of {batch_size}")
        if int(bbox_num.sum()) != bbox.shape[0]:
            raise WarmupError(f"self-test: bbox_num sums to {int(bbox_num.sum())}, bbox has {bbox.shape[0]} rows")
        if not np.isfinite(bbox).all():
            raise WarmupError("self-test: the model produced NaN/Inf boxes or scores")


def _open_predictor(model: ModelFiles, plan: PaddlePlan | OnnxRuntimePlan, engine_dir: Path) -> Predictor:
    if isinstance(plan, OnnxRuntimePlan):
        return OnnxRuntimePredictor(engine_dir / ONNX_FILE_NAME, plan)
    return PaddlePredictor(model, plan)


def ensure_shape_file(
    model: ModelFiles, digest: str, settings: PredictorSettings, cache: EngineCache, seed: Path | None
) -> tuple[Path, str]:
    """The shape-range file covering batch 1..max for ``model``, and how it was obtained."""
    shape_file = cache.shape_file(digest, settings.max_batch_size)
    if read_valid_shape_file(shape_file, settings.max_batch_size) is not None:
        return shape_file, "reused"
    with cache.lock(f"shapes-{digest_hex(digest)[:32]}"):
        if read_valid_shape_file(shape_file, settings.max_batch_size) is not None:
            return shape_file, "reused"  # another process collected it while we waited
        if seed is not None and read_valid_shape_file(seed, settings.max_batch_size) is not None:
            # The quantize Job collected it for this model and batch size already.
            staging = shape_file.with_name(f".{shape_file.name}.{os.getpid()}.tmp")
            shutil.copyfile(seed, staging)
            os.replace(staging, shape_file)
            log.info("seeded shape ranges from %s", seed)
            return shape_file, "seeded"
        if seed is not None:
            log.warning("ignoring shape-range seed %s: missing or not covering batch 1..%d", seed, settings.max_batch_size)
        log.info("collecting shape ranges for batch 1..%d (model %s)", settings.max_batch_size, digest[:19])
        collect_shape_ranges(model, settings, shape_file)
        return shape_file, "collected"


def cpu_numerics_portable(model: ModelFiles, settings: PredictorSettings) -> bool:
    """Whether ``model`` run with ``settings`` computes the same numbers on every x86 ISA level:
    ONNX Runtime INT8 with 7-bit weights does (read from the model), Paddle's oneDNN INT8 kernels
    are not checked (opt-in, CPU-specific); FP32 kernels, and GPUs (engines per GPU), are."""
    if settings.device != "cpu" or settings.precision != "int8":
        return True
    if settings.backend == "onnxruntime" and model.onnx_int8 is not None:
        from rtdetr_edge.quantize_onnx import int8_weights_portable

        return int8_weights_portable(model.onnx_int8)
    return settings.backend == "paddle" and settings.cpu_int8 == "simulated"


def check_cpu_numerics(model: ModelFiles, settings: PredictorSettings, measured_on: IsaLevel | None) -> None:
    """Refuse to serve an INT8 model whose numbers differ on this CPU from those its gate measured
    on ``measured_on`` (:func:`rtdetr_edge.cpu_isa.isa_mismatch`)."""
    if settings.device != "cpu":
        return
    portable = cpu_numerics_portable(model, settings)
    if measured_on is None:
        if not portable:
            log.warning("this INT8 model's numbers depend on the CPU (8-bit weights) and where its gate ran is "
                        "unknown: pass --measured-on-isa, or re-quantize it with this release (7-bit weights)")  # fmt: skip
        return
    here = this_cpu().level
    problem = isa_mismatch(portable, measured_on, here)
    if problem:
        raise CpuIsaMismatchError(problem)
    log.info("CPU %s computes the numbers the gate measured on %s", here, measured_on)


def warm_up(
    model_dir: str | Path,
    settings: PredictorSettings,
    cache_dir: str | Path,
    shape_seed: Path | None = None,
    measured_on: IsaLevel | None = None,
) -> WarmedModel:
    """Return a self-tested predictor for ``model_dir``, reusing the engine cache.

    ``shape_seed``: a shape-range file collected earlier for this model (the
    pipeline's ``shapes/`` artifact); used instead of collecting when it covers
    the batch sizes. ``measured_on``: the CPU ISA level the model's accuracy gate ran on; a model
    whose numbers differ here is refused (:class:`CpuIsaMismatchError`).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model = ModelFiles.locate(model_dir)
    digest = model.digest()
    quantized = model.is_quantized_for(settings.backend)
    check_supported(settings, quantized)  # fail before any expensive work
    check_cpu_numerics(model, settings, measured_on)
    cache = EngineCache(cache_dir)
    timings["identify"] = time.perf_counter() - started

    mark = time.perf_counter()
    shape_file: Path | None = None
    shape_collection, shape_file_digest = "not-needed", ""
    if uses_shape_ranges(settings):
        shape_file, shape_collection = ensure_shape_file(model, digest, settings, cache, shape_seed)
        shape_file_digest = "sha256:" + file_sha256(shape_file)
    timings["shape_ranges"] = time.perf_counter() - mark

    identity = detect_device_identity(settings)
    variant = ""
    if settings.device == "cpu" and settings.precision == "int8" and settings.backend == "paddle":
        variant = f"cpu-int8-{settings.cpu_int8}"
        log.info("INT8 on CPU: %s kernels (--cpu-int8)", "oneDNN INT8" if settings.cpu_int8 == "onednn" else "FP32 (QDQ graph)")
    key = EngineKey(
        model_digest=digest,
        shape_file_digest=shape_file_digest,
        backend=settings.backend,
        device=settings.device,
        precision=settings.precision,
        max_batch_size=settings.max_batch_size,
        device_identity=identity,
        versions=tuple(sorted(software_versions(settings).items())),
        variant=variant,
    )
    key_name = engine_cache_key(key)
    mark = time.perf_counter()
    with cache.lock(key_name):
        entry, discarded_reason = cache.load_entry(key_name)
        if entry is not None:
            outcome = "hit"
            plan = plan_predictor(settings, quantized, _optional(shape_file), str(entry.path))
            predictor = _open_predictor(model, plan, entry.path)
        else:
            outcome = "rebuilt" if discarded_reason else "built"
            predictor, entry = _build_entry(model, settings, quantized, shape_file, cache, key, key_name)
    timings["engine"] = time.perf_counter() - mark

    mark = time.perf_counter()
    try:
        self_test(predictor, settings.max_batch_size)
    except Exception:
        predictor.close()
        raise
    timings["self_test"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    report = WarmupReport(
        model_digest=digest,
        quantized=quantized,
        backend=settings.backend,
        device=settings.device,
        precision=settings.precision,
        max_batch_size=settings.max_batch_size,
        shape_file=_optional(shape_file),
        shape_collection=shape_collection,
        engine_key=key_name,
        engine_cache=outcome,
        engine_dir=str(entry.path),
        discarded_reason=discarded_reason,
        seconds={name: round(value, 3) for name, value in timings.items()},
    )
    log.info(
        "warm-up done in %.1fs: shapes %s, engine cache %s (%s)",
        timings["total"],
        shape_collection,
        outcome,
        key_name,
    )
    return WarmedModel(model=model, settings=settings, predictor=predictor, report=report)


def _build_entry(
    model: ModelFiles,
    settings: PredictorSettings,
    quantized: bool,
    shape_file: Path | None,
    cache: EngineCache,
    key: EngineKey,
    key_name: str,
) -> tuple[Predictor, EngineEntry]:
    """Build into a staging dir, self-test, publish; return a predictor on the final entry."""
    staging = cache.new_staging_dir(key_name)
    build_started = time.perf_counter()
    log.info("building engine cache entry %s", key_name)
    plan = plan_predictor(settings, quantized, _optional(shape_file), str(staging))
    if isinstance(plan, OnnxRuntimePlan) and settings.precision == "int8" and model.onnx_int8 is not None:
        shutil.copyfile(model.onnx_int8, staging / ONNX_FILE_NAME)  # made (and gated) by the pipeline
    elif isinstance(plan, OnnxRuntimePlan):
        convert_to_onnx(model, staging / ONNX_FILE_NAME, plan.opset)
    predictor = _open_predictor(model, plan, staging)
    try:
        # TensorRT builds (and serializes into staging) during the first runs.
        self_test(predictor, settings.max_batch_size)
        if isinstance(plan, PaddlePlan) and plan.uses_tensorrt:
            predictor.close()  # reopen below from the published path
    except Exception:
        predictor.close()
        raise
    entry = cache.publish(
        staging, key_name, key, {"build_seconds": round(time.perf_counter() - build_started, 3)}
    )
    if isinstance(plan, PaddlePlan) and plan.uses_tensorrt:
        plan = plan_predictor(settings, quantized, _optional(shape_file), str(entry.path))
        predictor = _open_predictor(model, plan, entry.path)
    return predictor, entry


def _optional(path: Path | None) -> str | None:
    return None if path is None else str(path)

