"""Real PaddleSlim on the shapes model: ACT and PTQ produce QDQ INT8 models from a copy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rtdetr_edge.coco import list_images
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.paddle_import import import_paddle
from rtdetr_edge.quantize import QuantizationError, QuantizeSettings, quantize_model


def file_digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_qat_makes_a_small_qdq_model_and_leaves_the_export_alone(
    shapes_model: Path, shapes_dataset: Path, tmp_path: Path
) -> None:
    before = file_digests(shapes_model)
    import_paddle().disable_static()  # dynamic, as in a fresh process
    progress = tmp_path / "progress.json"
    out = tmp_path / "int8"
    report = quantize_model(
        shapes_model, list_images(shapes_dataset / "train2017"), out, QuantizeSettings(arch="tiny", train_iter=6), progress
    )
    assert file_digests(shapes_model) == before, "ACT must work on a copy: the input export is byte-identical"
    ops = ModelFiles.locate(out).op_counts()
    assert ops["quantize_linear"] > 0 and ops["dequantize_linear"] > 0
    assert report.params_ratio <= 0.35, report
    assert sorted(p.name for p in out.iterdir()) == ["infer_cfg.yml", "model.pdiparams", "model.pdmodel"], "self-contained"
    assert ModelFiles.locate(out).label_list() == ModelFiles.locate(shapes_model).label_list() == ["circle", "square", "triangle"]
    assert report.iterations == 6 and report.final_loss is not None
    state = json.loads(progress.read_text())
    assert state["stage"] == "quantize" and state["done"] == state["total"] == 6 and state["loss"] is not None
    assert not list(tmp_path.glob(".quantize-*")), "the work directory is removed"
    assert import_paddle().in_dynamic_mode(), "Paddle is left in the mode it was in (ACT switches to static)"


def test_ptq(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ptq"
    report = quantize_model(
        shapes_model,
        list_images(shapes_dataset / "train2017"),
        out,
        QuantizeSettings(arch="tiny", method="ptq", calibration_batches=3),
    )
    assert ModelFiles.locate(out).is_quantized() and report.params_ratio <= 0.35


def test_refuses_to_overwrite_or_requantize(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    images = list_images(shapes_dataset / "train2017")
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(QuantizationError, match="already exists"):
        quantize_model(shapes_model, images, existing, QuantizeSettings(arch="tiny", train_iter=1))
    quantized = tmp_path / "q"
    quantize_model(shapes_model, images, quantized, QuantizeSettings(arch="tiny", method="ptq", calibration_batches=1))
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_model(quantized, images, tmp_path / "again", QuantizeSettings(arch="tiny", train_iter=1))


@pytest.mark.slow
def test_the_cli_logs_progress_not_progress_bars(shapes_model: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    """PaddleSlim's tqdm bars once wrote 212 KB for 20 iterations into Job logs; our progress
    lines (iteration, loss, ETA) are what is left."""
    out = tmp_path / "int8"
    result = subprocess.run(
        [sys.executable, "-m", "rtdetr_edge.cli", "quantize", "--model", str(shapes_model), "--train-images",
         str(shapes_dataset / "train2017"), "--out", str(out), "--arch", "tiny", "--method", "ptq", "--calibration-batches", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    logs = result.stdout + result.stderr
    assert "RTDETR_PROGRESS" in logs, "our progress lines are printed"
    assert "\u2588" not in logs and "it/s]" not in logs and "Adding quant op" not in logs, logs[-2000:]
    assert (out / "infer_cfg.yml").is_file()
