"""What to call on ``paddle.inference.Config`` (or ONNX Runtime) — decided here, purely.

The adapters in :mod:`paddle_backend` / :mod:`onnx_backend` apply a plan without
making any decision of their own, so the GPU/TensorRT path is fully tested on
machines without CUDA by asserting on the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtdetr_edge.errors import UnsupportedSettingsError
from rtdetr_edge.predictor.settings import Backend, PredictorSettings

# oneDNN INT8 with Paddle 2.6.2's default quantizable op set fails at
# create_predictor ("cpu_quantize_squash_pass: operator after requantize should
# have input scale"); this set is measured to work on RT-DETR QDQ models.
CPU_INT8_OPS = ("conv2d", "depthwise_conv2d", "pool2d", "transpose2")
# oneDNN caches primitives per input shape; the server feeds one shape per batch size.
MKLDNN_CACHE_CAPACITY_PER_BATCH = 2
ONNX_OPSET = 16  # grid_sample (RT-DETR's deformable attention) needs opset 16


@dataclass(frozen=True)
class PrecisionArg:
    """A ``paddle.inference.PrecisionType`` by name (the adapter resolves it)."""

    name: str  # "fp32" | "fp16" | "int8"


@dataclass(frozen=True)
class ConfigCall:
    """One method call on ``paddle.inference.Config``."""

    method: str
    args: tuple[object, ...] = ()
    kwargs: tuple[tuple[str, object], ...] = ()

    def kwargs_dict(self) -> dict[str, object]:
        return dict(self.kwargs)


@dataclass(frozen=True)
class PaddlePlan:
    calls: tuple[ConfigCall, ...]
    environment: tuple[tuple[str, str], ...] = ()
    """Process environment the plan needs before CUDA initialises."""
    uses_tensorrt: bool = False

    def methods(self) -> list[str]:
        return [call.method for call in self.calls]

    def call(self, method: str) -> ConfigCall:
        matches = [call for call in self.calls if call.method == method]
        if len(matches) != 1:
            raise KeyError(f"{method} appears {len(matches)} times in the plan")
        return matches[0]


@dataclass(frozen=True)
class OnnxRuntimePlan:
    intra_op_threads: int
    opset: int = ONNX_OPSET
    providers: tuple[str, ...] = field(default=("CPUExecutionProvider",))


PredictorPlan = PaddlePlan | OnnxRuntimePlan


def _call(method: str, *args: object, **kwargs: object) -> ConfigCall:
    return ConfigCall(method, tuple(args), tuple(sorted(kwargs.items())))


def default_backend(device: str, precision: str, has_onnx_int8: bool) -> Backend:
    """The fastest runtime that serves this model correctly, for ``--backend auto``.

    GPU: Paddle (TensorRT). CPU: ONNX Runtime (R18 FP32 312 vs 418 ms/image on Paddle oneDNN;
    its INT8 model 129 ms), except an INT8 model without ``model.int8.onnx`` — PaddleSlim's QDQ
    program, which only Paddle runs at its accuracy (ONNX Runtime on its conversion: 0 mAP).
    """
    if device != "cpu":
        return "paddle"
    if precision == "int8" and not has_onnx_int8:
        return "paddle"
    return "onnxruntime"


def check_supported(settings: PredictorSettings, model_is_quantized: bool) -> None:
    """Raise :class:`UnsupportedSettingsError` with the fix for impossible combinations.

    ``model_is_quantized``: the model holds an INT8 model for ``settings.backend``
    (:meth:`ModelFiles.is_quantized_for`).
    """
    if settings.backend == "onnxruntime" and settings.device != "cpu":
        raise UnsupportedSettingsError("backend onnxruntime is CPU-only here; use backend paddle (TensorRT) on GPU")
    if settings.precision == "int8" and not model_is_quantized:
        if settings.backend == "onnxruntime":
            raise UnsupportedSettingsError(
                "precision int8 on backend onnxruntime needs the ONNX Runtime INT8 model (model.int8.onnx, made by "
                "'rtdetr-edge quantize --method ptq --for onnxruntime' or a pipeline with serving.cpuRuntime "
                "onnxruntime); this model has none — quantize it for onnxruntime, or use --backend paddle for a "
                "PaddleSlim model"
            )
        raise UnsupportedSettingsError(
            "precision int8 needs a quantized model (the output of 'rtdetr-edge quantize'); "
            "this model has no PaddleSlim INT8 program — serve it with precision fp32/fp16, quantize it "
            "first, or serve its model.int8.onnx (if it has one) with --backend onnxruntime"
        )
    if settings.precision != "int8" and model_is_quantized:
        raise UnsupportedSettingsError(
            f"this model is INT8-quantized; serve it with precision int8, not {settings.precision} "
            "(serve the FP32 export for fp32/fp16)"
        )
    if settings.device == "cpu" and settings.precision == "fp16":
        raise UnsupportedSettingsError("precision fp16 needs device gpu; on CPU use fp32 (or int8 for a quantized model)")


def uses_shape_ranges(settings: PredictorSettings) -> bool:
    """Only TensorRT (Paddle on a GPU) reads a shape-range file; CPU predictors never do, so
    they never pay for collecting one (most of a cold start, and several GB of memory)."""
    return settings.backend == "paddle" and settings.device == "gpu"


def _device_calls(settings: PredictorSettings) -> tuple[ConfigCall, ...]:
    """Where a Paddle predictor runs: the GPU (with its initial memory pool) or the CPU's math threads."""
    if settings.device == "gpu":
        return (_call("enable_use_gpu", settings.gpu_memory_pool_mb, settings.gpu_device_id),)
    return (_call("disable_gpu"), _call("set_cpu_math_library_num_threads", settings.cpu_threads))


def plan_shape_collection(settings: PredictorSettings, shape_file: str) -> PaddlePlan:
    """A predictor that records every tensor's shape range into ``shape_file``, on ``settings.device``.

    IR optimisation is off so the file names every tensor of the original program: a superset
    of what TensorRT's subgraph inputs look up later, whatever passes the GPU predictor runs.
    On a GPU (a serving pod whose ``maxBatchSize`` grew past what its Job collected for) the
    activations stay in GPU memory, as in Paddle's documented collection, and the predictor is
    gone before TensorRT builds; collecting on a CPU took 5.7 GB (R18) / 11.7 GB (R50) of host
    memory at batch 4, more than a serving pod's limits. The quantize Job collects on its CPU,
    where memory is sized for quantization and the GPU stays free for evaluation.
    """
    return PaddlePlan(
        calls=(
            *_device_calls(settings),
            _call("switch_ir_optim", False),
            _call("collect_shape_range_info", shape_file),
            _call("disable_glog_info"),
        )
    )


def plan_predictor(
    settings: PredictorSettings,
    model_is_quantized: bool,
    shape_file: str | None,
    engine_dir: str,
) -> PredictorPlan:
    """The serving predictor for ``settings``.

    ``engine_dir`` is the engine-cache entry (TensorRT serializes engines there);
    ``shape_file`` is the collected shape-range file (required for TensorRT).
    """
    check_supported(settings, model_is_quantized)
    if settings.backend == "onnxruntime":
        return OnnxRuntimePlan(intra_op_threads=settings.cpu_threads)
    if settings.device == "cpu":
        calls = [
            *_device_calls(settings),
            _call("switch_ir_optim", True),
            _call("enable_memory_optim"),
            _call("enable_mkldnn"),
            _call("set_mkldnn_cache_capacity", settings.max_batch_size * MKLDNN_CACHE_CAPACITY_PER_BATCH),
        ]
        if settings.precision == "int8" and settings.cpu_int8 == "onednn":
            calls.append(_call("enable_mkldnn_int8", set(CPU_INT8_OPS)))
        # Otherwise ("simulated") the QDQ graph runs as is: quantize/dequantize ops in FP32.
        calls.append(_call("disable_glog_info"))
        return PaddlePlan(calls=tuple(calls))
    if shape_file is None:
        raise UnsupportedSettingsError("TensorRT needs a collected shape-range file; run warm-up first")
    environment: tuple[tuple[str, str], ...] = ()
    if settings.precision == "fp16":
        # RT-DETR FP16 on Ampere gives wrong boxes with TF32 math enabled (reported upstream).
        environment = (("NVIDIA_TF32_OVERRIDE", "0"),)
    calls = [
        *_device_calls(settings),
        _call("switch_ir_optim", True),
        _call("enable_memory_optim"),
        _call(
            "enable_tensorrt_engine",
            workspace_size=settings.trt_workspace_bytes,
            max_batch_size=settings.max_batch_size,
            min_subgraph_size=settings.trt_min_subgraph_size,
            precision_mode=PrecisionArg(settings.precision),
            # Serialize engines into the cache entry instead of rebuilding per start.
            use_static=True,
            # QAT/PTQ models carry their own scales; calibration mode would
            # silently re-calibrate (and slow down) an already-quantized model.
            use_calib_mode=False,
        ),
        # Never rebuild mid-serving: an out-of-range shape must fail loudly, not
        # stall requests for minutes and rewrite the shape file under our key.
        _call("enable_tuned_tensorrt_dynamic_shape", shape_file, False),
        _call("set_optim_cache_dir", engine_dir),
        _call("disable_glog_info"),
    ]
    return PaddlePlan(calls=tuple(calls), environment=environment, uses_tensorrt=True)
