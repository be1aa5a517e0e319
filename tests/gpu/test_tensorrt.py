"""Paddle-TensorRT on a real GPU: engines are built once, serialized into the cache entry,
reloaded on restart, and isolated per model. Skipped (with the reason) without CUDA + TensorRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.paddle_import import import_paddle, import_paddle_inference
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import preprocess_bytes, stack_batch
from rtdetr_edge.shape_ranges import collect_shape_ranges
from rtdetr_edge.warmup import warm_up


def _gpu_skip_reason() -> str | None:
    paddle = import_paddle()
    if not paddle.is_compiled_with_cuda():
        return "paddlepaddle is a CPU build (install paddlepaddle-gpu==2.6.2 with CUDA 11.8 + TensorRT 8.5)"
    if paddle.device.cuda.device_count() == 0:
        return "no CUDA device visible"
    if import_paddle_inference().get_trt_compile_version() == (0, 0, 0):
        return "paddlepaddle-gpu was built without TensorRT"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_gpu_skip_reason() is not None, reason=str(_gpu_skip_reason()))]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_is_built_once_and_reloaded(tiny_model_dir: Path, tmp_path: Path, precision: str) -> None:
    settings = PredictorSettings(device="gpu", precision=precision, max_batch_size=2)  # type: ignore[arg-type]
    cold = warm_up(tiny_model_dir, settings, tmp_path)
    cold.predictor.close()
    assert cold.report.engine_cache == "built"
    engines = list(Path(cold.report.engine_dir).rglob("trt_serialized_*"))
    assert engines, "use_static=True must serialize engines into the cache entry"
    warm = warm_up(tiny_model_dir, settings, tmp_path)
    try:
        assert warm.report.engine_cache == "hit" and warm.report.shape_collection == "reused"
        assert warm.report.seconds["engine"] < cold.report.seconds["engine"]
    finally:
        warm.predictor.close()


def test_tensorrt_matches_cpu_fp32(tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]) -> None:
    batch = stack_batch([preprocess_bytes(p.read_bytes()) for p in fixture_images[:2]])
    gpu = warm_up(tiny_model_dir, PredictorSettings(device="gpu", max_batch_size=2), tmp_path)
    cpu = warm_up(tiny_model_dir, PredictorSettings(max_batch_size=2), tmp_path)
    try:
        a, b = gpu.predictor.predict(batch), cpu.predictor.predict(batch)
    finally:
        gpu.predictor.close()
        cpu.predictor.close()
    np.testing.assert_allclose(a.bbox[:, 1], b.bbox[:, 1], atol=1e-3)


def test_other_weights_get_their_own_engine(tiny_model_dir: Path, other_model_dir: Path, tmp_path: Path) -> None:
    """Paddle's own engine key ignores weights; serving model B must never load A's engine."""
    settings = PredictorSettings(device="gpu", max_batch_size=1)
    first = warm_up(tiny_model_dir, settings, tmp_path)
    second = warm_up(other_model_dir, settings, tmp_path)
    first.predictor.close()
    second.predictor.close()
    assert second.report.engine_cache == "built" and second.report.engine_dir != first.report.engine_dir


def test_collecting_on_the_gpu_records_what_the_cpu_does(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A GPU pod collects on its GPU (keeping activations out of host memory); the quantize Job
    on its CPU. TensorRT must get the same tensors and ranges either way."""
    model = ModelFiles.locate(tiny_model_dir)
    on_gpu = collect_shape_ranges(model, PredictorSettings(device="gpu", max_batch_size=2), tmp_path / "gpu.pbtxt")
    on_cpu = collect_shape_ranges(model, PredictorSettings(max_batch_size=2), tmp_path / "cpu.pbtxt")
    assert on_gpu == on_cpu and on_gpu["image"].max_shape[0] == 2
