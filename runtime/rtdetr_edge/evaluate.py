"""COCO mAP of a model measured through the *serving* predictor (``rtdetr-edge evaluate``).

On a GPU node that is the TensorRT engine the pods will run — not ACT's fake-quant
training program — so the accuracy gate judges what users will actually get.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rtdetr_edge.api.job import Evaluation
from rtdetr_edge.coco import CocoGroundTruth, iterate_batches
from rtdetr_edge.postprocess import ModelOutputs, select_detections
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import ModelInputs
from rtdetr_edge.warmup import warm_up

log = logging.getLogger(__name__)

COCO_MAX_DETECTIONS = 100  # pycocotools' maxDets for AP


def rows_to_coco(image_id: int, rows: np.ndarray, class_to_category: list[int]) -> list[dict[str, object]]:
    """``[K, 6]`` (class, score, x1, y1, x2, y2) → COCO result dicts; unmapped classes are dropped."""
    results: list[dict[str, object]] = []
    for class_id, score, x1, y1, x2, y2 in rows.tolist():
        index = int(class_id)
        if not 0 <= index < len(class_to_category):
            continue
        results.append(
            {
                "image_id": image_id,
                "category_id": class_to_category[index],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": score,
            }
        )
    return results


def coco_map(ground_truth: dict[str, object], predictions: list[dict[str, object]]) -> tuple[float, float]:
    """(AP@[.50:.95], AP@.50) in points, computed by pycocotools over the GT's images."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # pycocotools prints progress to stdout
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        if not predictions:
            return 0.0, 0.0
        dt = gt.loadRes(predictions)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap, ap50 = float(evaluator.stats[0]), float(evaluator.stats[1])
    # -1 means "no ground truth to score against"; report 0 rather than a negative mAP.
    return max(ap, 0.0) * 100.0, max(ap50, 0.0) * 100.0


def coco_predictions(
    predict: Callable[[ModelInputs], ModelOutputs],
    ground_truth: CocoGroundTruth,
    class_to_category: list[int],
    batch_size: int = 1,
    on_progress: Callable[[int, int, float], None] | None = None,
    started: float | None = None,
) -> tuple[list[dict[str, object]], float]:
    """``predict`` over every validation image → (COCO result dicts, seconds spent in ``predict``)."""
    started = time.perf_counter() if started is None else started
    predictions: list[dict[str, object]] = []
    predictor_seconds = 0.0
    by_path = {image.path: image for image in ground_truth.images}
    done = 0
    for paths, inputs in iterate_batches([image.path for image in ground_truth.images], batch_size):
        mark = time.perf_counter()
        outputs = predict(inputs)
        predictor_seconds += time.perf_counter() - mark
        for path, rows in zip(paths, outputs.split()):
            image = by_path[path]
            kept = select_detections(rows, image.height, image.width, 0.0, COCO_MAX_DETECTIONS)
            predictions.extend(rows_to_coco(image.id, kept, class_to_category))
        done += len(paths)
        if on_progress is not None:
            on_progress(done, len(ground_truth.images), time.perf_counter() - started)
    return predictions, predictor_seconds


def evaluate_model(
    model_dir: Path,
    settings: PredictorSettings,
    cache_dir: Path,
    ground_truth: CocoGroundTruth,
    class_to_category: list[int],
    batch_size: int = 1,
    on_progress: Callable[[int, int, float], None] | None = None,
) -> Evaluation:
    """Warm up the serving predictor for ``model_dir`` and score it on ``ground_truth``."""
    started = time.perf_counter()
    warmed = warm_up(model_dir, settings, cache_dir)
    try:
        predictions, predictor_seconds = coco_predictions(
            warmed.predictor.predict, ground_truth, class_to_category, batch_size, on_progress, started
        )
    finally:
        warmed.predictor.close()
    ap, ap50 = coco_map(ground_truth.document, predictions)
    result = Evaluation(
        map=round(ap, 3),
        map50=round(ap50, 3),
        images=len(ground_truth.images),
        model_digest=warmed.report.model_digest,
        precision=settings.precision,
        device=settings.device,
        backend=settings.backend,
        latency_ms=round(predictor_seconds * 1000 / max(1, len(ground_truth.images)), 3),
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info("evaluated %s: mAP %.2f, AP50 %.2f on %d images", model_dir, result.map, result.map50, result.images)
    return result
