"""The CPU INT8 model: ONNX Runtime's static QDQ quantization of the FP32 export.

Why not PaddleSlim's model on CPU: Paddle 2.6.2 runs ACT's QDQ graph with FP32 kernels
(RT-DETR-R18 3.5x slower than FP32), its oneDNN INT8 passes quantize no convolution of it
("quantized 0 conv2d ops", only pool2d: -12 mAP, FP32 speed), and paddle2onnx 1.3.1 turns it
into a graph whose scores are all equal. ONNX Runtime's own quantizer, calibrated on the
resource's training images, gives integer kernels: RT-DETR-R18 2.4x ONNX Runtime's FP32 speed
with AVX-512 VNNI, 1.5x on AVX2 (BENCHMARKS.md), with the accuracy gate measured through the same
ONNX Runtime session that serves. Its weights have 7 bits, so every x86 CPU computes the same
numbers (:mod:`rtdetr_edge.cpu_isa`).

The recipe (:class:`~rtdetr_edge.api.job.OnnxRuntimeInt8`, in the operator's plan) and
:func:`weights_portable` are pure; :func:`quantize_for_onnxruntime`
is the adapter that runs paddle2onnx and ``onnxruntime.quantization``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from rtdetr_edge.api.job import OnnxRuntimeInt8
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.progress import PROGRESS_PREFIX

log = logging.getLogger(__name__)

PORTABLE_WEIGHT_LIMIT = 64
"""|w| at most this (7 bits): uint8 x int8 pairs sum to at most 2 x 255 x 64 = 32,640 and never
saturate int16 (:mod:`rtdetr_edge.cpu_isa`)."""


def weights_portable(weights: Iterable[np.ndarray]) -> bool:
    """Whether INT8 weights compute the same integers on every x86 CPU (pure)."""
    return all(int(np.abs(w.astype(np.int16)).max(initial=0)) <= PORTABLE_WEIGHT_LIMIT for w in weights)


def int8_weights_portable(onnx_file: Path) -> bool:
    """:func:`weights_portable` of the int8 weights a QDQ model dequantizes, read from its bytes
    (so a model made by an earlier release, or by hand, is judged by what it is)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_file)).graph
    dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    return weights_portable(
        numpy_helper.to_array(tensor)
        for tensor in graph.initializer
        if tensor.name in dequantized and tensor.data_type == onnx.TensorProto.INT8
    )


CALIBRATION_CHUNK = 4
"""Calibration images whose activations are held at once: ORT's histogram calibration keeps every
calibrated tensor of every image of a chunk (RT-DETR-R18: 8 images at once peaked at 4.7 GB)."""


def calibration_stride(count: int, chunk: int = CALIBRATION_CHUNK) -> int:
    """The largest divisor of ``count`` not above ``chunk`` (ORT wants equal chunks)."""
    return max(size for size in range(1, min(chunk, count) + 1) if count % size == 0)


class _PrintsToLog(io.TextIOBase):
    """Stdout for a library that print()s: its lines go to the debug log, our progress lines
    (printed from the calibration feed) to the real stdout."""

    def __init__(self, stdout: TextIO) -> None:
        self._stdout = stdout

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.startswith(PROGRESS_PREFIX):
                print(line, file=self._stdout, flush=True)
            elif line.strip():
                log.debug("onnxruntime: %s", line.strip())
        return len(text)


def quantize_for_onnxruntime(
    model: ModelFiles,
    feed_at: Callable[[int], dict[str, Any]],
    count: int,
    out_file: Path,
    config: OnnxRuntimeInt8,
    opset: int,
) -> Path:
    """Write the INT8 QDQ ONNX model of ``model`` to ``out_file`` (atomically).

    ``feed_at(i)`` is the i-th of ``count`` calibration feeds (``{input name: array}``), made from
    the resource's training images; they are read a chunk at a time.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from rtdetr_edge.predictor.onnx_backend import convert_to_onnx

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        """ORT calls set_range per chunk (extra option CalibStridedMinMax, used by every calibrator)."""

        def __init__(self, inputs: set[str]) -> None:
            self._inputs = inputs  # paddle2onnx drops inputs the graph does not read (im_shape)
            self._next, self._end = 0, count

        def __len__(self) -> int:
            return count

        def set_range(self, start_index: int, end_index: int) -> None:
            self._next, self._end = start_index, end_index

        def get_next(self) -> dict[str, Any] | None:
            if self._next >= self._end:
                return None
            feed = feed_at(self._next)
            self._next += 1
            return {name: array for name, array in feed.items() if name in self._inputs}

    with tempfile.TemporaryDirectory(prefix=".ort-quantize-", dir=out_file.parent) as work:
        fp32 = convert_to_onnx(model, Path(work) / "fp32.onnx", opset)
        prepared = Path(work) / "prepared.onnx"
        # Constant folding and shape inference first, as ORT's quantization guide asks; the symbolic
        # shape pass is skipped (it does not know paddle2onnx's grid_sample/top-k shapes).
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        staging = Path(work) / "int8.onnx"
        import onnx

        inputs = {item.name for item in onnx.load(str(prepared), load_external_data=False).graph.input}
        # The recorded config drives the call (no second copy of the choices).
        types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        methods = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax}
        with contextlib.redirect_stdout(_PrintsToLog(sys.stdout)):  # ORT's calibrator print()s its steps
            quantize_static(
                str(prepared),
                str(staging),
                Reader(inputs),
                quant_format=QuantFormat[config.format],
                per_channel=config.per_channel,
                reduce_range=config.weight_bits == 7,
                activation_type=types[config.activations],
                weight_type=types[config.weights],
                op_types_to_quantize=list(config.op_types),
                calibrate_method=methods[config.calibration],
                extra_options={"CalibStridedMinMax": calibration_stride(count)},
            )
        os.replace(staging, out_file)
    log.info("ONNX Runtime INT8 model %s (%.1f MB, %s)", out_file, out_file.stat().st_size / 1e6, config.op_types)
    return out_file
