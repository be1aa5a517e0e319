"""``rtdetr-edge quantize``: PaddleSlim Auto Compression (QAT + distillation) or post-training
quantization of an RT-DETR export, always on a copy (ACT rewrites ``model.pdmodel`` in place).

For Paddle (``runtime="paddle"``) the output is a QDQ (``quantize_linear``/``dequantize_linear``)
inference model with INT8 weights, which Paddle-TensorRT runs with ``use_calib_mode=False``. For
ONNX Runtime (CPU serving) it is the FP32 export plus ``model.int8.onnx``, ONNX Runtime's static
QDQ quantization calibrated on the same images (:mod:`rtdetr_edge.quantize_onnx`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtdetr_edge.api.job import OnnxRuntimeInt8, QuantizeRun
from rtdetr_edge.coco import read_image
from rtdetr_edge.errors import RtdetrEdgeError
from rtdetr_edge.graph_links import unchecked_graph_links
from rtdetr_edge.model_files import LABELS_FILE, ONNX_INT8_NAME, PARAMS_NAME, PROGRAM_NAME, ModelFiles
from rtdetr_edge.paddle_import import import_paddle
from rtdetr_edge.preprocess import stack_batch
from rtdetr_edge.progress import ProgressReporter, format_eta
from rtdetr_edge.resource import act_defaults

log = logging.getLogger(__name__)
# Paddle's default histogram calibration (percentile clipping). "avg" crashes on the 0-d
# activations of RT-DETR-shaped graphs (IndexError in _sample_avg, Paddle 2.6.2).
PTQ_ALGO = "hist"
_LOSS_LINE = re.compile(r"Total iter: (?P<iteration>\d+).*?loss: (?P<loss>[-+0-9.eE]+|nan|inf)")


class QuantizationError(RtdetrEdgeError):
    code = "quantization_failed"


@dataclass(frozen=True)
class QuantizeSettings:
    arch: str
    method: str = "qat"  # qat | ptq
    train_iter: int | None = None
    eval_iter: int | None = None
    learning_rate: float | None = None
    quantize_op_types: tuple[str, ...] | None = None
    batch_size: int = 1
    calibration_batches: int = 32
    device: str = "cpu"
    runtime: str = "paddle"  # paddle | onnxruntime: which runtime the INT8 model is made for
    onnxruntime: OnnxRuntimeInt8 | None = None  # the plan's recipe; made from quantize_op_types when absent


def build_act_config(settings: QuantizeSettings) -> dict[str, Any]:
    """The ACT config: the arch's published defaults with the settings' overrides (pure)."""
    config = act_defaults(settings.arch)
    train = dict(config["TrainConfig"])
    if settings.train_iter is not None:
        train["train_iter"] = settings.train_iter
    if settings.eval_iter is not None:
        train["eval_iter"] = settings.eval_iter
    if settings.learning_rate is not None:
        train["learning_rate"] = {**train["learning_rate"], "learning_rate": settings.learning_rate}
    # We log progress ourselves from ACT's per-iteration loss line.
    train["logging_iter"] = 1
    quant = dict(config["QuantAware"])
    if settings.quantize_op_types is not None:
        quant["quantize_op_types"] = list(settings.quantize_op_types)
    return {"Distillation": dict(config["Distillation"]), "QuantAware": quant, "TrainConfig": train}


def feed_at(images: list[Path], batch_size: int, index: int) -> dict[str, Any]:
    """The ``index``-th batch, cycling through ``images``: a run never stops for lack of epochs."""
    if not images:
        raise QuantizationError("no training images")
    start = index * batch_size
    chunk = [images[(start + i) % len(images)] for i in range(batch_size)]
    return stack_batch([read_image(path) for path in chunk]).as_feed()


def feed_batches(images: list[Path], batch_size: int, count: int) -> Iterator[dict[str, Any]]:
    """``count`` batches from :func:`feed_at`, in order."""
    for index in range(count):
        yield feed_at(images, batch_size, index)


class _LossCapture(logging.Handler):
    """Reads ACT's "Total iter: N ... loss: X" lines (PaddleSlim has no callback for it)."""

    def __init__(self, progress: ProgressReporter) -> None:
        super().__init__(logging.INFO)
        self.progress = progress
        self.last_loss: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = _LOSS_LINE.search(record.getMessage())
        if match is None:
            return
        iteration = int(match.group("iteration")) + 1
        self.last_loss = float(match.group("loss"))
        state = self.progress.update(iteration, loss=self.last_loss)
        if iteration == 1 or iteration % 10 == 0 or iteration == self.progress.total:
            log.info(
                "quantize: iteration %d/%d loss %.4f elapsed %.0fs eta %s",
                iteration, self.progress.total, self.last_loss, state["elapsed_s"], format_eta(state["eta_s"]),
            )  # fmt: skip


def quantize_model(
    model_dir: Path,
    train_images: list[Path],
    out_dir: Path,
    settings: QuantizeSettings,
    progress_file: Path | None = None,
) -> QuantizeRun:
    """Quantize ``model_dir`` into ``out_dir`` (which must not exist; it appears complete or not at all)."""
    started = time.perf_counter()
    source = ModelFiles.locate(model_dir)
    if source.is_quantized():
        raise QuantizationError(f"{model_dir} is already quantized; give the FP32 export")
    if out_dir.exists():
        raise QuantizationError(f"output {out_dir} already exists; refusing to overwrite it")
    input_digest = source.digest()
    paddle = import_paddle()
    paddle.set_device("gpu" if settings.device == "gpu" else "cpu")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=out_dir.parent))
    dynamic_mode = paddle.in_dynamic_mode()
    try:
        copy = work / "fp32"
        copy.mkdir()
        shutil.copy2(source.program, copy / PROGRAM_NAME)
        shutil.copy2(source.params, copy / PARAMS_NAME)
        result = work / "int8"
        # ACT's and PTQ's graph passes: 342 of 588 s on R18 were Paddle's per-link graph copies.
        with unchecked_graph_links():
            if settings.runtime == "onnxruntime":
                act_config, iterations, final_loss = _run_onnxruntime_ptq(copy, train_images, result, settings, progress_file)
            elif settings.method == "qat":
                act_config = build_act_config(settings)
                iterations, final_loss = _run_act(copy, train_images, result, settings, act_config, progress_file)
            elif settings.method == "ptq":
                act_config = {"method": "ptq", "algo": PTQ_ALGO, "batch_nums": settings.calibration_batches}
                iterations, final_loss = _run_ptq(copy, train_images, result, settings, progress_file), None
            else:
                raise QuantizationError(f"unknown quantization method {settings.method!r}")
        produced = ModelFiles.locate(result)
        if not produced.is_quantized_for(settings.runtime):
            raise QuantizationError(f"quantization for {settings.runtime} finished but the output holds no INT8 model")
        # Keep only the model files (ACT also leaves calibration scratch around), and the
        # export's label config: the output is a self-contained export.
        staging = work / "output"
        staging.mkdir()
        for path in produced.files():
            shutil.move(str(path), staging / path.name)
        if (model_dir / LABELS_FILE).is_file():
            shutil.copy2(model_dir / LABELS_FILE, staging / LABELS_FILE)
        os.replace(staging, out_dir)
    except RtdetrEdgeError:
        raise
    except Exception as error:  # PaddleSlim/Paddle raise bare exceptions from deep inside
        log.exception("quantization failed")
        raise QuantizationError(f"{settings.method} quantization failed: {type(error).__name__}: {error}") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if dynamic_mode and not paddle.in_dynamic_mode():
            paddle.disable_static()  # ACT switches Paddle to static mode and leaves it there
    output = ModelFiles.locate(out_dir)
    report = QuantizeRun(
        method=settings.method,
        act_config=act_config,
        iterations=iterations,
        final_loss=final_loss,
        seconds=round(time.perf_counter() - started, 1),
        input_digest=input_digest,
        output_digest=output.digest(),
        input_bytes=source.size_bytes(),
        output_bytes=output.size_bytes(),
        params_ratio=round(_int8_weights(output).stat().st_size / source.params.stat().st_size, 4),
    )
    log.info(
        "quantized %s -> %s in %.0fs: params %.1f MB -> %.1f MB (x%.2f)",
        model_dir, out_dir, report.seconds, source.params.stat().st_size / 1e6,
        _int8_weights(output).stat().st_size / 1e6, report.params_ratio,
    )  # fmt: skip
    return report


def _int8_weights(model: ModelFiles) -> Path:
    """The file holding the INT8 model's weights (what the size ratio compares)."""
    return model.onnx_int8 or model.params


def _run_onnxruntime_ptq(
    model_copy: Path, train_images: list[Path], save_dir: Path, settings: QuantizeSettings, progress_file: Path | None
) -> tuple[dict[str, Any], int, None]:
    from rtdetr_edge.predictor.plan import ONNX_OPSET
    from rtdetr_edge.quantize_onnx import quantize_for_onnxruntime

    if settings.method != "ptq":
        raise QuantizationError(
            f"ONNX Runtime INT8 is post-training quantization: use method ptq, not {settings.method} "
            "(QAT models are for Paddle: TensorRT on GPU)"
        )
    ops = settings.quantize_op_types or tuple(act_defaults(settings.arch)["QuantAware"]["quantize_op_types"])
    recipe = settings.onnxruntime or OnnxRuntimeInt8.for_paddle_ops(ops)
    config = {"method": "ptq", "runtime": "onnxruntime", **recipe.model_dump(by_alias=True)}
    config["batches"] = settings.calibration_batches
    batches = settings.calibration_batches
    if not train_images:
        raise QuantizationError("no training images")
    progress = ProgressReporter(progress_file, "calibrate", batches)

    def calibration_feed(index: int) -> dict[str, Any]:
        progress.update(index + 1)
        return feed_at(train_images, settings.batch_size, index)

    save_dir.mkdir()
    shutil.copy2(model_copy / PROGRAM_NAME, save_dir / PROGRAM_NAME)
    shutil.copy2(model_copy / PARAMS_NAME, save_dir / PARAMS_NAME)
    quantize_for_onnxruntime(
        ModelFiles.locate(save_dir), calibration_feed, batches, save_dir / ONNX_INT8_NAME, recipe, ONNX_OPSET
    )
    return config, batches, None


def _run_act(
    model_copy: Path,
    train_images: list[Path],
    save_dir: Path,
    settings: QuantizeSettings,
    act_config: dict[str, Any],
    progress_file: Path | None,
) -> tuple[int, float | None]:
    from paddleslim.auto_compression import AutoCompression

    train_iter = int(act_config["TrainConfig"]["train_iter"])
    progress = ProgressReporter(progress_file, "quantize", train_iter)
    progress.update(0, loss=None, phase="preparing graph")
    capture = _LossCapture(progress)
    act_logger = logging.getLogger("paddleslim.auto_compression.compressor")
    act_logger.addHandler(capture)
    try:
        compressor = AutoCompression(
            model_dir=str(model_copy),
            model_filename=PROGRAM_NAME,
            params_filename=PARAMS_NAME,
            save_dir=str(save_dir),
            config=act_config,
            train_dataloader=lambda: feed_batches(train_images, settings.batch_size, train_iter),
            # A small eval loader, or ACT would materialise the whole training set to make one.
            eval_dataloader=lambda: feed_batches(train_images, settings.batch_size, 2),
            deploy_hardware="gpu",
        )
        compressor.compress()
    finally:
        act_logger.removeHandler(capture)
    return train_iter, capture.last_loss


def _run_ptq(
    model_copy: Path, train_images: list[Path], save_dir: Path, settings: QuantizeSettings, progress_file: Path | None
) -> int:
    paddle = import_paddle()
    from paddleslim.quant import quant_post_static

    batches = settings.calibration_batches
    progress = ProgressReporter(progress_file, "calibrate", batches)
    quant_types = list(settings.quantize_op_types or act_defaults(settings.arch)["QuantAware"]["quantize_op_types"])

    def calibration_feeds() -> Iterator[dict[str, Any]]:
        for index, feed in enumerate(feed_batches(train_images, settings.batch_size, batches), start=1):
            progress.update(index)
            yield feed

    class FeedLoader(paddle.io.DataLoader):  # type: ignore[misc]
        """Paddle's PTQ insists on a DataLoader instance, then only calls it and len() on it."""

        def __init__(self) -> None:  # no super().__init__: we are not a real dataset loader
            pass

        def __call__(self) -> Iterator[dict[str, Any]]:
            return calibration_feeds()

        def __iter__(self) -> Iterator[dict[str, Any]]:
            return calibration_feeds()

        def __len__(self) -> int:
            return batches

    paddle.enable_static()
    try:
        executor = paddle.static.Executor(paddle.CUDAPlace(0) if settings.device == "gpu" else paddle.CPUPlace())
        quant_post_static(
            executor=executor,
            model_dir=str(model_copy),
            quantize_model_path=str(save_dir),
            data_loader=FeedLoader(),
            model_filename=PROGRAM_NAME,
            params_filename=PARAMS_NAME,
            batch_nums=batches,
            algo=PTQ_ALGO,
            quantizable_op_type=quant_types,
            onnx_format=True,
        )
    finally:
        paddle.disable_static()
    return batches
