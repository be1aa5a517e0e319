"""Collect and read Paddle's shape-range file (the "dynamic_shape.txt" of the manual flow).

TensorRT with dynamic shapes needs, for every subgraph input, the min/max/opt
shapes it will see. Paddle records them with ``collect_shape_range_info`` but
writes the file only when the collecting predictor is destroyed — so we destroy
it, then check the file really appeared before publishing it atomically.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rtdetr_edge.errors import WarmupError
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.predictor.paddle_backend import PaddlePredictor
from rtdetr_edge.predictor.plan import plan_shape_collection
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import synthetic_inputs

log = logging.getLogger(__name__)

_ENTRY = re.compile(r"shape_range_info\s*\{(?P<body>[^{}]*)\}", re.S)
_NAME = re.compile(r'name:\s*"(?P<name>[^"]*)"')
_FIELD = re.compile(r"(?P<field>min_shape|max_shape|opt_shape):\s*(?P<value>-?\d+)")


@dataclass(frozen=True)
class ShapeRange:
    min_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]


def parse_shape_range_text(text: str) -> dict[str, ShapeRange]:
    """Parse Paddle's protobuf-text shape-range file into ``{tensor: ShapeRange}``."""
    ranges: dict[str, ShapeRange] = {}
    for entry in _ENTRY.finditer(text):
        body = entry.group("body")
        name = _NAME.search(body)
        if name is None:
            continue
        fields: dict[str, list[int]] = {"min_shape": [], "max_shape": [], "opt_shape": []}
        for match in _FIELD.finditer(body):
            fields[match.group("field")].append(int(match.group("value")))
        ranges[name.group("name")] = ShapeRange(
            tuple(fields["min_shape"]), tuple(fields["max_shape"]), tuple(fields["opt_shape"])
        )
    return ranges


def collection_batch_sizes(max_batch_size: int) -> list[int]:
    """Every batch size the server may form, then batch 1 until it is the most frequent.

    Paddle takes the most frequent size as TensorRT's "opt" shape (the one the
    engine is tuned for); edge serving is latency-first, so we tune for batch 1.
    (With ``[1, 1, 2, 3, 4]`` Paddle 2.6.2 was seen to pick 4: be generous.)
    """
    return [*range(1, max_batch_size + 1), *([1] * max_batch_size)]


def shape_file_covers(ranges: dict[str, ShapeRange], max_batch_size: int) -> bool:
    """True if the file has the ``image`` input ranging over batch 1..``max_batch_size``."""
    image = ranges.get("image")
    return bool(image and image.min_shape[:1] == (1,) and image.max_shape[:1] == (max_batch_size,))


def collect_shape_ranges(model: ModelFiles, settings: PredictorSettings, out_file: Path) -> dict[str, ShapeRange]:
    """Run the model on ``settings.device`` at every batch size and publish the shape file at ``out_file``."""
    staging = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    predictor = PaddlePredictor(model, plan_shape_collection(settings, str(staging)))
    try:
        for batch_size in collection_batch_sizes(settings.max_batch_size):
            predictor.predict(synthetic_inputs(batch_size))
    finally:
        predictor.close()  # Paddle writes the file in the predictor's destructor
    if not staging.is_file() or staging.stat().st_size == 0:
        raise WarmupError(
            f"Paddle did not write the shape-range file {staging} after the collecting predictor was destroyed"
        )
    ranges = parse_shape_range_text(staging.read_text(encoding="utf-8"))
    if not shape_file_covers(ranges, settings.max_batch_size):
        staging.unlink(missing_ok=True)
        raise WarmupError(f"the collected shape ranges do not cover batch 1..{settings.max_batch_size} for 'image'")
    os.replace(staging, out_file)
    log.info("collected %d tensor shape ranges into %s", len(ranges), out_file)
    return ranges


def read_valid_shape_file(path: Path, max_batch_size: int) -> dict[str, ShapeRange] | None:
    """The file's ranges if it exists and covers the batch sizes, else ``None``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    ranges = parse_shape_range_text(text)
    if not shape_file_covers(ranges, max_batch_size):
        log.warning("ignoring shape-range file %s: it does not cover batch 1..%d", path, max_batch_size)
        return None
    return ranges
