"""ONNX Runtime adapter (CPU, fp32): the model is converted once by paddle2onnx at warm-up."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from rtdetr_edge.errors import InferenceError, WarmupError
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.paddle_import import import_paddle
from rtdetr_edge.postprocess import ModelOutputs
from rtdetr_edge.predictor.plan import OnnxRuntimePlan
from rtdetr_edge.preprocess import ModelInputs

ONNX_FILE_NAME = "model.onnx"
log = logging.getLogger(__name__)


def convert_to_onnx(model: ModelFiles, out_file: Path, opset: int) -> Path:
    """Convert with paddle2onnx 1.3.1 (pinned: 2.x pip-installs packages at run time), in a child
    process: paddle2onnx holds the GIL for the whole export (RT-DETR-R18: three stalls of 0.5-1.2 s),
    which would stop a warming-up server from answering its health checks."""
    command = [sys.executable, "-m", __name__, str(model.program), str(model.params), str(out_file), str(opset)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out_file.is_file():
        lines = (done.stderr or done.stdout or "no output").strip().splitlines()
        cause = lines[-1] if lines else f"exit status {done.returncode}"
        raise WarmupError(f"paddle2onnx could not convert {model.directory}: {cause}")
    log.info("converted %s to ONNX opset %d (%d bytes)", model.directory, opset, out_file.stat().st_size)
    return out_file


def _export(program: str, params: str, out_file: Path, opset: int) -> None:
    """The conversion itself (run by :func:`convert_to_onnx` in a child process)."""
    import_paddle()  # paddle2onnx imports paddle; keep the safe import order
    import paddle2onnx

    try:
        onnx_bytes = paddle2onnx.export(
            program,
            params,
            opset_version=opset,
            auto_upgrade_opset=False,
            verbose=False,
            enable_onnx_checker=True,
        )
    except Exception as error:  # paddle2onnx raises bare Exception subclasses from C++
        raise SystemExit(f"{type(error).__name__}: {error}") from error
    if not onnx_bytes:
        raise SystemExit("paddle2onnx produced no ONNX model (unsupported op?)")
    staging = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp")
    staging.write_bytes(onnx_bytes)
    os.replace(staging, out_file)


class OnnxRuntimePredictor:
    backend_name = "onnxruntime"

    def __init__(self, onnx_file: Path, plan: OnnxRuntimePlan) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = plan.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(str(onnx_file), options, providers=list(plan.providers))
        except Exception as error:  # ORT raises its own Fail/InvalidGraph types
            raise WarmupError(f"ONNX Runtime could not load {onnx_file}: {error}") from error
        self._input_names = {item.name for item in self._session.get_inputs()}

    def predict(self, inputs: ModelInputs) -> ModelOutputs:
        feed = {name: array for name, array in inputs.as_feed().items() if name in self._input_names}
        try:
            outputs = self._session.run(None, feed)
        except Exception as error:
            raise InferenceError(f"ONNX Runtime failed on a batch of {inputs.batch_size}: {error}") from error
        return ModelOutputs(bbox=outputs[0], bbox_num=outputs[1])

    def close(self) -> None:
        self.__dict__.pop("_session", None)


if __name__ == "__main__":
    _export(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
