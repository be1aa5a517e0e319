"""The CPU INT8 model: ONNX Runtime's static QDQ quantization of the FP32 export.

Why not PaddleSlim's model on CPU: Paddle 2.6.2 runs ACT's QDQ graph with FP32 kernels
(RT-DETR-R18 3.5x slower than FP32), its oneDNN INT8 passes quantize no convolution of it
("quantized 0 conv2d ops", only pool2d: -12 mAP, FP32 speed), and paddle2onnx 1.3.1 turns it
into a graph whose scores are all equal. ONNX Runtime's own quantizer, calibrated on the
resource's training images, gives VNNI INT8 kernels: 2.4x ONNX Runtime's FP32 speed on R18
(BENCHMARKS.md), with the accuracy gate measured through the same ONNX Runtime session
that serves.

The decisions (:func:`ort_quantization_config`) are pure; :func:`quantize_for_onnxruntime`
is the adapter that runs paddle2onnx and ``onnxruntime.quantization``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtdetr_edge.model_files import ModelFiles

log = logging.getLogger(__name__)

# Paddle op type (quantization.quantizeOpTypes) -> the ONNX op paddle2onnx emits for it.
ONNX_OP_FOR_PADDLE_OP = {
    "conv2d": "Conv",
    "depthwise_conv2d": "Conv",
    "matmul_v2": "MatMul",
    "matmul": "MatMul",
    "mul": "MatMul",
}


def ort_quantization_config(quantize_op_types: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """How ONNX Runtime quantizes (recorded in the report; measured on the shapes model and R18).

    QDQ with per-channel signed weights and unsigned activations is what ORT's CPU kernels fuse
    into VNNI/AVX2 integer convolutions and matmuls; percentile calibration kept the most mAP on
    the shapes model (44.74 FP32 -> 44.01 INT8, min-max 43.59).
    """
    ops = sorted({ONNX_OP_FOR_PADDLE_OP[op] for op in quantize_op_types if op in ONNX_OP_FOR_PADDLE_OP})
    if not ops:
        raise ValueError(f"none of {list(quantize_op_types)} maps to an ONNX op ONNX Runtime quantizes")
    return {
        "method": "ptq",
        "runtime": "onnxruntime",
        "format": "QDQ",
        "calibration": "percentile",
        "perChannel": True,
        "activations": "uint8",
        "weights": "int8",
        "opTypes": ops,
    }


CALIBRATION_CHUNK = 4
"""Calibration images whose activations are held at once: ORT's histogram calibration keeps every
calibrated tensor of every image of a chunk (RT-DETR-R18: 8 images at once peaked at 4.7 GB)."""


def calibration_stride(count: int, chunk: int = CALIBRATION_CHUNK) -> int:
    """The largest divisor of ``count`` not above ``chunk`` (ORT wants equal chunks)."""
    return max(size for size in range(1, min(chunk, count) + 1) if count % size == 0)


def quantize_for_onnxruntime(
    model: ModelFiles,
    feed_at: Callable[[int], dict[str, Any]],
    count: int,
    out_file: Path,
    config: dict[str, Any],
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
        quantize_static(
            str(prepared),
            str(staging),
            Reader(inputs),
            quant_format=QuantFormat[config["format"]],
            per_channel=config["perChannel"],
            activation_type=types[config["activations"]],
            weight_type=types[config["weights"]],
            op_types_to_quantize=list(config["opTypes"]),
            calibrate_method=methods[config["calibration"]],
            extra_options={"CalibStridedMinMax": calibration_stride(count)},
        )
        os.replace(staging, out_file)
    log.info("ONNX Runtime INT8 model %s (%.1f MB, %s)", out_file, out_file.stat().st_size / 1e6, config["opTypes"])
    return out_file
