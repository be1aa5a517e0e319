"""Paddle Inference adapter: applies a :class:`PaddlePlan`, feeds by name, fetches by position."""

from __future__ import annotations

import gc
import os
from typing import Any

from rtdetr_edge.errors import InferenceError, ModelNotFoundError
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.paddle_import import import_paddle_inference
from rtdetr_edge.postprocess import ModelOutputs
from rtdetr_edge.predictor.plan import PaddlePlan, PrecisionArg
from rtdetr_edge.preprocess import ModelInputs

EXPECTED_INPUTS = ("im_shape", "image", "scale_factor")


def _resolve(value: object, inference: Any) -> object:
    if isinstance(value, PrecisionArg):
        return {
            "fp32": inference.PrecisionType.Float32,
            "fp16": inference.PrecisionType.Half,
            "int8": inference.PrecisionType.Int8,
        }[value.name]
    return value


def build_config(model: ModelFiles, plan: PaddlePlan) -> Any:
    """A ``paddle.inference.Config`` with every call of ``plan`` applied in order."""
    inference = import_paddle_inference()
    for name, value in plan.environment:
        os.environ[name] = value
    config = inference.Config(str(model.program), str(model.params))
    for call in plan.calls:
        args = [_resolve(arg, inference) for arg in call.args]
        kwargs = {key: _resolve(value, inference) for key, value in call.kwargs}
        getattr(config, call.method)(*args, **kwargs)
    return config


class PaddlePredictor:
    """One Paddle Inference predictor. Not thread-safe: callers serialize ``predict``."""

    backend_name = "paddle"

    def __init__(self, model: ModelFiles, plan: PaddlePlan) -> None:
        inference = import_paddle_inference()
        self.plan = plan
        try:
            self._predictor = inference.create_predictor(build_config(model, plan))
        except (RuntimeError, ValueError, OSError) as error:
            raise InferenceError(f"Paddle Inference could not load {model.directory}: {error}") from error
        names = list(self._predictor.get_input_names())
        missing = [name for name in EXPECTED_INPUTS if name not in names]
        if missing:
            raise ModelNotFoundError(
                f"{model.directory} is not an RT-DETR export: inputs are {names}, missing {missing} "
                "(export with PaddleDetection's tools/export_model.py)"
            )
        self._inputs = {name: self._predictor.get_input_handle(name) for name in EXPECTED_INPUTS}
        output_names = list(self._predictor.get_output_names())
        if len(output_names) < 2:
            raise ModelNotFoundError(f"{model.directory} has {len(output_names)} outputs; RT-DETR exports have 2")
        # Exports name outputs save_infer_model/scale_N.tmp_0 (2.x) or fetch_name_N (3.x): use positions.
        self._outputs = [self._predictor.get_output_handle(name) for name in output_names[:2]]

    def predict(self, inputs: ModelInputs) -> ModelOutputs:
        for name, array in inputs.as_feed().items():
            handle = self._inputs[name]
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(array)
        try:
            self._predictor.run()
        except (RuntimeError, ValueError) as error:
            raise InferenceError(f"Paddle Inference failed on a batch of {inputs.batch_size}: {error}") from error
        bbox, bbox_num = (handle.copy_to_cpu() for handle in self._outputs)
        return ModelOutputs(bbox=bbox, bbox_num=bbox_num)

    def close(self) -> None:
        """Destroy the predictor (Paddle writes shape-range files only at this point)."""
        self._inputs.clear()
        self._outputs.clear()
        predictor = self.__dict__.pop("_predictor", None)
        if predictor is not None:
            try:
                predictor.clear_intermediate_tensor()
                predictor.try_shrink_memory()
            finally:
                del predictor
                gc.collect()
