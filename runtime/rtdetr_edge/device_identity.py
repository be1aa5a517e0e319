"""What hardware and software an engine is built for (part of the engine-cache key).

Paddle's own TensorRT cache key ignores the GPU model and the TensorRT version;
a serialized engine is only valid for the exact GPU architecture and TensorRT
build that made it, so ours includes both.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from rtdetr_edge.cpu_isa import this_cpu
from rtdetr_edge.predictor.settings import PredictorSettings


@dataclass(frozen=True)
class DeviceIdentity:
    kind: str  # "cpu" | "gpu"
    product: str
    capability: str  # GPU compute capability "8.6", or the CPU's relevant ISA flags

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "product": self.product, "capability": self.capability}


def detect_device_identity(settings: PredictorSettings) -> DeviceIdentity:
    if settings.device == "gpu":
        from rtdetr_edge.paddle_import import import_paddle

        paddle = import_paddle()
        properties = paddle.device.cuda.get_device_properties(settings.gpu_device_id)
        return DeviceIdentity("gpu", str(properties.name), f"{properties.major}.{properties.minor}")
    cpu = this_cpu()
    return DeviceIdentity("cpu", cpu.product, ",".join(cpu.isa_flags()) or platform.machine())


def software_versions(settings: PredictorSettings) -> dict[str, str]:
    """Versions of everything that produces or runs the engine."""
    from rtdetr_edge.paddle_import import import_paddle, import_paddle_inference

    paddle = import_paddle()
    versions = {"paddle": f"{paddle.__version__}+{paddle.version.commit[:12]}"}
    if settings.device == "gpu":
        inference = import_paddle_inference()
        versions["cuda"] = str(paddle.version.cuda())
        versions["cudnn"] = str(paddle.version.cudnn())
        versions["tensorrt_compile"] = ".".join(map(str, inference.get_trt_compile_version()))
        versions["tensorrt_runtime"] = ".".join(map(str, inference.get_trt_runtime_version()))
    if settings.backend == "onnxruntime":
        import onnxruntime
        import paddle2onnx

        versions["onnxruntime"] = onnxruntime.__version__
        versions["paddle2onnx"] = paddle2onnx.__version__
    return versions
