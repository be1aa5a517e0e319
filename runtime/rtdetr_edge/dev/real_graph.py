"""A real PaddleDetection RT-DETR export with seeded random weights.

The repository ships the real RT-DETR-R18 inference graph (``tests/fixtures/models/rtdetr_r18vd_6x_coco``:
PaddleDetection's export, 817 ops, no weights: the trained 80 MB cannot be downloaded here).
This module makes the weights from the graph, deterministically from a seed, so tests and
benchmarks run the exact program a user's export runs. Detections are meaningless (random
weights): use it for mechanics, memory and speed; accuracy comes from the trained tiny model.

Weights: batch-norm ``Variance``/``Scale`` and layer-norm scales are ones (conv+BN fusion
refuses a non-finite inverse variance), batch-norm ``Mean`` zeros, everything else a seeded
N(0, 0.02). The export is written to a staging directory and renamed into place, and a
marker records the graph digest and seed, so a cache directory is safe to share.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from rtdetr_edge.files import file_sha256
from rtdetr_edge.model_files import LABELS_FILE, PARAMS_NAME, PROGRAM_NAME

REPO_ROOT = Path(__file__).resolve().parents[3]
R18_GRAPH = REPO_ROOT / "tests" / "fixtures" / "models" / "rtdetr_r18vd_6x_coco"
MARKER = "seeded-weights.json"
_ONES = {("batch_norm", "Variance"), ("batch_norm", "Scale"), ("sync_batch_norm", "Variance"),
         ("sync_batch_norm", "Scale"), ("layer_norm", "Scale")}
_ZEROS = {("batch_norm", "Mean"), ("sync_batch_norm", "Mean")}


def _initial_values(program: object) -> dict[str, str]:
    """``{persistable variable: "ones" | "zeros"}`` for the normalisation statistics."""
    kinds: dict[str, str] = {}
    for op in program.global_block().ops:  # type: ignore[attr-defined]
        for slot in op.input_names:
            kind = "ones" if (op.type, slot) in _ONES else "zeros" if (op.type, slot) in _ZEROS else None
            if kind:
                for name in op.input(slot):
                    kinds[name] = kind
    return kinds


def seeded_export(graph_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Write ``graph_dir``'s program with seeded weights to ``out_dir`` (reused when it matches)."""
    graph_dir, out_dir = Path(graph_dir), Path(out_dir)
    wanted = {"graph_sha256": file_sha256(graph_dir / PROGRAM_NAME), "seed": seed}
    marker = out_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted and (out_dir / PARAMS_NAME).is_file():
        return out_dir

    from rtdetr_edge.paddle_import import import_paddle

    paddle = import_paddle()
    paddle.enable_static()
    try:
        program = paddle.static.deserialize_program((graph_dir / PROGRAM_NAME).read_bytes())
        block = program.global_block()
        feeds = [block.var(op.output("Out")[0]) for op in block.ops if op.type == "feed"]
        fetches = [block.var(op.input("X")[0]) for op in block.ops if op.type == "fetch"]
        kinds = _initial_values(program)
        rng = np.random.default_rng(seed)
        scope = paddle.static.global_scope()
        place = paddle.CPUPlace()
        for var in sorted(program.list_vars(), key=lambda v: v.name):
            if not var.persistable or var.name in ("feed", "fetch"):
                continue
            shape = [int(d) for d in var.shape]
            kind = kinds.get(var.name)
            if kind == "ones":
                value = np.ones(shape, "float32")
            elif kind == "zeros":
                value = np.zeros(shape, "float32")
            else:
                value = rng.normal(0.0, 0.02, shape).astype("float32")
            scope.var(var.name).get_tensor().set(value, place)
        executor = paddle.static.Executor(place)
        params = paddle.static.serialize_persistables(feeds, fetches, executor, program=program)
    finally:
        paddle.disable_static()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copyfile(graph_dir / PROGRAM_NAME, staging / PROGRAM_NAME)
    shutil.copyfile(graph_dir / LABELS_FILE, staging / LABELS_FILE)
    (staging / PARAMS_NAME).write_bytes(params)
    (staging / MARKER).write_text(json.dumps(wanted))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return out_dir
