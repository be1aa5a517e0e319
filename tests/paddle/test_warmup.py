"""Warm-up against real Paddle Inference / ONNX Runtime on CPU: the engine cache (reuse,
isolation between models, corruption, concurrent builders), the self-test, and the TensorRT
shape-range file (collected on CPU for GPU predictors; CPU predictors never collect one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtdetr_edge.engine_cache import EngineCache
from rtdetr_edge.errors import UnsupportedSettingsError
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import preprocess_bytes, stack_batch
from rtdetr_edge.shape_ranges import parse_shape_range_text
from rtdetr_edge.warmup import ensure_shape_file, warm_up


@pytest.mark.parametrize("backend", ["paddle", "onnxruntime"])
def test_cold_then_warm_without_shape_collection(tiny_model_dir: Path, tmp_path: Path, backend: str) -> None:
    """CPU predictors read no shape ranges, so a cold start collects none (it was most of the
    cold-start time and several GB of memory on real exports)."""
    settings = PredictorSettings(max_batch_size=3, backend=backend)  # type: ignore[arg-type]
    cold = warm_up(tiny_model_dir, settings, tmp_path)
    cold.predictor.close()
    assert (cold.report.shape_collection, cold.report.engine_cache, cold.report.shape_file) == ("not-needed", "built", None)
    assert list(EngineCache(tmp_path).shapes_dir.iterdir()) == []

    warm = warm_up(tiny_model_dir, settings, tmp_path)
    warm.predictor.close()
    assert (warm.report.shape_collection, warm.report.engine_cache) == ("not-needed", "hit")
    assert warm.report.engine_key == cold.report.engine_key


def shape_file(model_dir: Path, cache: Path, max_batch_size: int, seed: Path | None = None) -> tuple[Path, str]:
    model = ModelFiles.locate(model_dir)
    # Collected on this CPU, as the quantize Job does (a GPU pod collects on its GPU: tests/gpu).
    settings = PredictorSettings(device="cpu", max_batch_size=max_batch_size)
    return ensure_shape_file(model, model.digest(), settings, EngineCache(cache), seed)


def test_tensorrt_shape_ranges_collected_once_then_reused(tiny_model_dir: Path, tmp_path: Path) -> None:
    path, how = shape_file(tiny_model_dir, tmp_path, 3)
    assert how == "collected"
    ranges = parse_shape_range_text(path.read_text())
    assert ranges["image"].min_shape == (1, 3, 640, 640) and ranges["image"].max_shape == (3, 3, 640, 640)
    assert ranges["image"].opt_shape[0] == 1
    assert shape_file(tiny_model_dir, tmp_path, 3) == (path, "reused")
    # A larger batch needs a new file; the pipeline's file seeds a fresh cache.
    bigger, how = shape_file(tiny_model_dir, tmp_path, 4)
    assert how == "collected" and bigger != path
    assert shape_file(tiny_model_dir, tmp_path / "fresh", 3, seed=path)[1] == "seeded"


def test_another_model_never_reuses_an_entry(tiny_model_dir: Path, other_model_dir: Path, tmp_path: Path) -> None:
    """Same graph, different weights: Paddle's own key would collide; ours must not."""
    first = warm_up(tiny_model_dir, PredictorSettings(), tmp_path)
    second = warm_up(other_model_dir, PredictorSettings(), tmp_path)
    for warmed in (first, second):
        warmed.predictor.close()
    assert second.report.engine_cache == "built"
    assert second.report.engine_key != first.report.engine_key
    assert len(EngineCache(tmp_path).entries()) == 2
    assert shape_file(tiny_model_dir, tmp_path, 2)[0] != shape_file(other_model_dir, tmp_path, 2)[0]


def test_corrupt_entry_is_rebuilt(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = PredictorSettings(backend="onnxruntime")
    first = warm_up(tiny_model_dir, settings, tmp_path)
    first.predictor.close()
    onnx_file = Path(first.report.engine_dir) / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])  # a half-written / damaged engine
    second = warm_up(tiny_model_dir, settings, tmp_path)
    second.predictor.close()
    assert second.report.engine_cache == "rebuilt"
    assert second.report.discarded_reason is not None and "model.onnx" in second.report.discarded_reason
    third = warm_up(tiny_model_dir, settings, tmp_path)
    third.predictor.close()
    assert third.report.engine_cache == "hit"


def test_two_concurrent_warmups_build_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "rtdetr_edge.cli", "--log-level", "WARNING", "warmup",
        "--model", str(tiny_model_dir), "--cache-dir", str(tmp_path),
    ]  # fmt: skip
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    assert sorted(r["engine_cache"] for r in reports) == ["built", "hit"]
    assert [r["shape_collection"] for r in reports] == ["not-needed", "not-needed"]
    assert [r["backend"] for r in reports] == ["onnxruntime"] * 2, "--backend auto: ONNX Runtime for FP32 on CPU"
    assert len(EngineCache(tmp_path).entries()) == 1


def test_backends_agree(tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]) -> None:
    batch = stack_batch([preprocess_bytes(p.read_bytes()) for p in fixture_images[:2]])
    paddle = warm_up(tiny_model_dir, PredictorSettings(), tmp_path)
    onnx = warm_up(tiny_model_dir, PredictorSettings(backend="onnxruntime"), tmp_path)
    try:
        a, b = paddle.predictor.predict(batch), onnx.predictor.predict(batch)
    finally:
        paddle.predictor.close()
        onnx.predictor.close()
    np.testing.assert_array_equal(a.bbox_num, b.bbox_num)
    # Scores are sorted; near-ties may swap between backends, so compare the top scores
    # and the boxes of the best-scoring queries.
    np.testing.assert_allclose(a.bbox[:, 1], b.bbox[:, 1], atol=1e-4)
    np.testing.assert_allclose(a.bbox[:5, 2:], b.bbox[:5, 2:], atol=1e-2)


def test_unsupported_settings_fail_before_any_work(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedSettingsError, match="needs a quantized model"):
        warm_up(tiny_model_dir, PredictorSettings(precision="int8"), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_missing_model_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    from rtdetr_edge.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        warm_up(tmp_path / "nope", PredictorSettings(), tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_model_dir / "model.pdmodel", partial)
    with pytest.raises(ModelNotFoundError, match="no matching model.pdiparams"):
        warm_up(partial, PredictorSettings(), tmp_path)
    pir = tmp_path / "pir"
    pir.mkdir()
    (pir / "model.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="Paddle 3 PIR"):
        warm_up(pir, PredictorSettings(), tmp_path)


def test_a_failed_conversion_names_its_cause_and_leaves_no_file(tmp_path: Path) -> None:
    from rtdetr_edge.errors import WarmupError
    from rtdetr_edge.predictor.onnx_backend import convert_to_onnx

    (tmp_path / "model.pdmodel").write_bytes(b"not a paddle program")
    (tmp_path / "model.pdiparams").write_bytes(b"")
    with pytest.raises(WarmupError, match="paddle2onnx could not convert .*: .+"):
        convert_to_onnx(ModelFiles.locate(tmp_path), tmp_path / "model.onnx", 16)
    assert not (tmp_path / "model.onnx").exists() and not list(tmp_path.glob(".*tmp"))
