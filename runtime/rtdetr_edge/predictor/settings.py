"""Predictor settings shared by evaluate, warm-up and serve."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rtdetr_edge.api.spec import (
    CPU_RUNTIMES,
    DEFAULT_MAX_BATCH_SIZE,
    DEVICES,
    MAX_BATCH_SIZE_LIMIT,
    PRECISIONS,
    CpuRuntime,
    Device,
    Precision,
)

Backend = CpuRuntime
"""``paddle`` on a GPU is Paddle Inference with TensorRT; on a CPU either runs."""
BACKENDS: tuple[str, ...] = CPU_RUNTIMES
CPU_INT8_MODES = ("simulated", "onednn")


@dataclass(frozen=True)
class PredictorSettings:
    """How to run a model. Every field has a default that works on a CPU-only machine."""

    device: Device = "cpu"
    """``gpu`` runs Paddle Inference with TensorRT; ``cpu`` runs oneDNN (or ONNX Runtime)."""
    precision: Precision = "fp32"
    """``int8`` needs a quantized (ACT/PTQ) model; ``fp16`` needs a GPU."""
    backend: Backend = "paddle"
    """``onnxruntime`` is CPU only: fp32 converts the Paddle export with paddle2onnx at warm-up;
    int8 runs the model's ``model.int8.onnx`` (ONNX Runtime's static QDQ quantization)."""
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    """Largest batch the server forms; shape ranges and TensorRT engines cover 1..this."""
    cpu_threads: int = 2
    """Math threads for oneDNN / ONNX Runtime (and for shape collection)."""
    gpu_device_id: int = 0
    gpu_memory_pool_mb: int = 1024
    """Initial GPU memory pool Paddle reserves (it grows on demand)."""
    trt_workspace_bytes: int = 1 << 30
    trt_min_subgraph_size: int = 3
    """Smaller subgraphs stay on Paddle's own GPU kernels."""
    cpu_int8: str = "simulated"
    """INT8 models on CPU: ``simulated`` runs the QDQ graph with FP32 kernels (the quantized
    model's own accuracy); ``onednn`` runs Paddle's oneDNN INT8 kernels, which measured
    44.2 -> 32.3 mAP on the shapes model (AVX-512 VNNI CPU) and were no faster (10.7 vs 9.0 ms),
    so they are opt-in. Either way the accuracy gate measures what is served."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 1 <= self.max_batch_size <= MAX_BATCH_SIZE_LIMIT:
            raise ValueError(f"max_batch_size must be within 1..{MAX_BATCH_SIZE_LIMIT}, got {self.max_batch_size}")
        if self.cpu_int8 not in CPU_INT8_MODES:
            raise ValueError(f"cpu_int8 must be one of {CPU_INT8_MODES}, got {self.cpu_int8!r}")
        if self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {self.cpu_threads}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
