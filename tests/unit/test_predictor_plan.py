"""The decision of what to call on paddle.inference.Config — including the GPU/TensorRT
path, which cannot run here but must be exactly what Paddle's documented API needs."""

from __future__ import annotations

import pytest

from rtdetr_edge.errors import UnsupportedSettingsError
from rtdetr_edge.predictor.plan import (
    CPU_INT8_OPS,
    OnnxRuntimePlan,
    PaddlePlan,
    PrecisionArg,
    check_supported,
    default_backend,
    plan_predictor,
    plan_shape_collection,
    uses_shape_ranges,
)
from rtdetr_edge.predictor.settings import PredictorSettings


def gpu_plan(precision: str, quantized: bool) -> PaddlePlan:
    plan = plan_predictor(
        PredictorSettings(device="gpu", precision=precision, max_batch_size=4),  # type: ignore[arg-type]
        model_is_quantized=quantized,
        shape_file="/cache/shapes/abc-b4.pbtxt",
        engine_dir="/cache/engines/key",
    )
    assert isinstance(plan, PaddlePlan)
    return plan


def test_tensorrt_int8_plan_for_a_qat_model() -> None:
    plan = gpu_plan("int8", quantized=True)
    assert plan.uses_tensorrt
    assert plan.methods()[0] == "enable_use_gpu"
    trt = plan.call("enable_tensorrt_engine").kwargs_dict()
    assert trt["precision_mode"] == PrecisionArg("int8")
    assert trt["use_calib_mode"] is False, "QAT models carry scales; calibration would re-calibrate"
    assert trt["use_static"] is True, "engines must be serialized into the cache entry"
    assert trt["max_batch_size"] == 4
    assert plan.call("enable_tuned_tensorrt_dynamic_shape").args == ("/cache/shapes/abc-b4.pbtxt", False)
    assert plan.call("set_optim_cache_dir").args == ("/cache/engines/key",)
    # The tuned shape file must be set after the engine is enabled (Paddle reads both at create time).
    methods = plan.methods()
    assert methods.index("enable_tensorrt_engine") < methods.index("enable_tuned_tensorrt_dynamic_shape")
    assert "enable_mkldnn" not in methods


def test_fp16_plan_disables_tf32() -> None:
    plan = gpu_plan("fp16", quantized=False)
    assert plan.call("enable_tensorrt_engine").kwargs_dict()["precision_mode"] == PrecisionArg("fp16")
    assert dict(plan.environment) == {"NVIDIA_TF32_OVERRIDE": "0"}
    assert gpu_plan("fp32", quantized=False).environment == ()


def test_tensorrt_needs_a_shape_file() -> None:
    with pytest.raises(UnsupportedSettingsError, match="shape-range"):
        plan_predictor(PredictorSettings(device="gpu"), False, None, "/e")


def test_cpu_plans() -> None:
    fp32 = plan_predictor(PredictorSettings(cpu_threads=3), False, None, "/e")
    assert isinstance(fp32, PaddlePlan) and not fp32.uses_tensorrt
    assert fp32.call("set_cpu_math_library_num_threads").args == (3,)
    assert "enable_mkldnn" in fp32.methods() and "enable_mkldnn_int8" not in fp32.methods()
    onednn = plan_predictor(PredictorSettings(precision="int8", cpu_int8="onednn"), True, None, "/e")
    assert isinstance(onednn, PaddlePlan)
    assert onednn.call("enable_mkldnn_int8").args == (set(CPU_INT8_OPS),)


def test_cpu_int8_defaults_to_the_accurate_qdq_graph() -> None:
    """oneDNN INT8 kernels measured 44.2 -> 32.3 mAP on the shapes model: opt-in only."""
    default = plan_predictor(PredictorSettings(precision="int8"), True, None, "/e")
    assert isinstance(default, PaddlePlan) and "enable_mkldnn_int8" not in default.methods()
    assert "enable_mkldnn" in default.methods()


def test_onnxruntime_plan() -> None:
    plan = plan_predictor(PredictorSettings(backend="onnxruntime", cpu_threads=2), False, None, "/e")
    assert plan == OnnxRuntimePlan(intra_op_threads=2, opset=16)


def test_onnxruntime_serves_its_own_int8_model() -> None:
    check_supported(PredictorSettings(backend="onnxruntime", precision="int8"), True)


def test_only_tensorrt_uses_shape_ranges() -> None:
    assert uses_shape_ranges(PredictorSettings(device="gpu"))
    assert not uses_shape_ranges(PredictorSettings(device="cpu"))
    assert not uses_shape_ranges(PredictorSettings(device="cpu", backend="onnxruntime"))


def test_shape_collection_runs_without_ir_passes_on_the_settings_device() -> None:
    on_cpu = plan_shape_collection(PredictorSettings(device="cpu", cpu_threads=3), "/tmp/shapes.pbtxt")
    assert on_cpu.methods()[:2] == ["disable_gpu", "set_cpu_math_library_num_threads"]
    assert on_cpu.call("set_cpu_math_library_num_threads").args == (3,)
    # A GPU pod collects on its GPU: the activations stay out of the pod's host memory.
    on_gpu = plan_shape_collection(PredictorSettings(device="gpu", gpu_device_id=1), "/tmp/shapes.pbtxt")
    assert on_gpu.call("enable_use_gpu").args == (1024, 1) and "disable_gpu" not in on_gpu.methods()
    for plan in (on_cpu, on_gpu):
        assert plan.call("switch_ir_optim").args == (False,)
        assert plan.call("collect_shape_range_info").args == ("/tmp/shapes.pbtxt",)
        assert not plan.uses_tensorrt and "enable_tensorrt_engine" not in plan.methods()


@pytest.mark.parametrize(
    ("settings", "quantized", "message"),
    [
        (PredictorSettings(precision="int8"), False, "needs a quantized model"),
        (PredictorSettings(precision="fp32"), True, "INT8-quantized"),
        (PredictorSettings(device="gpu", precision="fp16"), True, "INT8-quantized"),
        (PredictorSettings(precision="fp16"), False, "fp16 needs device gpu"),
        (PredictorSettings(backend="onnxruntime", device="gpu"), False, "CPU-only"),
        (PredictorSettings(backend="onnxruntime", precision="int8"), False, "model.int8.onnx"),
    ],
)
def test_impossible_combinations_explain_the_fix(settings: PredictorSettings, quantized: bool, message: str) -> None:
    with pytest.raises(UnsupportedSettingsError, match=message):
        check_supported(settings, quantized)


@pytest.mark.parametrize(
    "kwargs",
    [{"device": "tpu"}, {"precision": "int4"}, {"backend": "tvm"}, {"max_batch_size": 0}, {"cpu_threads": 0},
     {"cpu_int8": "fast"}],
)
def test_settings_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PredictorSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("device", "precision", "has_onnx_int8", "expected"),
    [
        ("gpu", "fp16", False, "paddle"),  # TensorRT
        ("gpu", "int8", True, "paddle"),  # model.int8.onnx is for CPUs; TensorRT runs the QAT program
        ("cpu", "fp32", False, "onnxruntime"),  # 312 vs 418 ms on R18
        ("cpu", "int8", True, "onnxruntime"),  # ONNX Runtime's own INT8 model: 129 ms
        ("cpu", "int8", False, "paddle"),  # PaddleSlim's QDQ program: ONNX Runtime on its conversion = 0 mAP
    ],
)
def test_auto_backend_is_the_fastest_correct_runtime(
    device: str, precision: str, has_onnx_int8: bool, expected: str
) -> None:
    assert default_backend(device, precision, has_onnx_int8) == expected
