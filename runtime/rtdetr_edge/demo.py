"""``rtdetr-edge demo``: the no-cluster first run — build the tiny model, serve it, show how to call it."""

from __future__ import annotations

import logging
import shlex
import shutil
from pathlib import Path

import numpy as np

from rtdetr_edge.model_files import PROGRAM_NAME
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.server.model_service import ServeOptions
from rtdetr_edge.synthetic import encode_jpeg, render_scene
from rtdetr_edge.warmup import WarmedModel

log = logging.getLogger(__name__)


def ensure_tiny_model(model_dir: Path, seed: int = 0) -> Path:
    """Export the seeded tiny model into ``model_dir`` unless it is already there."""
    if (model_dir / PROGRAM_NAME).is_file():
        return model_dir
    from rtdetr_edge.tiny_model import TinyModelSpec, export_tiny_model

    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    export_tiny_model(staging, TinyModelSpec(seed=seed))
    staging.rename(model_dir)
    log.info("exported the tiny RT-DETR-shaped model to %s", model_dir)
    return model_dir


def run_demo(work_dir: Path, host: str, port: int) -> int:
    from rtdetr_edge.server.run import run_server

    work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = ensure_tiny_model(work_dir / "model")
    sample = work_dir / "sample.jpg"
    if not sample.exists():
        rgb, _ = render_scene(np.random.default_rng(7))
        sample.write_bytes(encode_jpeg(rgb))
    url = f"http://{host}:{port}"

    def announce(warmed: WarmedModel) -> None:
        report = warmed.report
        print(
            f"\nrtdetr-edge demo is ready at {url}  (model {report.model_digest[:19]}…, "
            f"warm-up {report.seconds['total']:.1f}s, engine cache {report.engine_cache})\n"
            f"  curl -s -H 'Content-Type: image/jpeg' --data-binary @{shlex.quote(str(sample))} "
            f"'{url}/v1/detect?score_threshold=0.1'\n"
            f"  rtdetr-edge detect {shlex.quote(str(sample))} --url {url} --score-threshold 0.1\n"
            f"  curl -s {url}/metrics | grep rtdetr_\n"
            "The tiny model has random weights: its boxes show the serving path works, not accuracy.\n"
            "Press Ctrl+C to stop.",
            flush=True,
        )

    options = ServeOptions(
        model_dir=model_dir,
        cache_dir=work_dir / "engine-cache",
        predictor=PredictorSettings(),
        model_name="rtdetr-demo",
    )
    return run_server(options, host, port, drain_seconds=5, on_ready=announce)
