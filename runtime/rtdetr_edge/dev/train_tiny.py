"""Train the tiny RT-DETR-shaped model on synthetic shapes, so the demo's mAP means something.

RT-DETR's recipe, scaled down: Hungarian matching (class + L1 + GIoU costs), sigmoid
focal classification loss, L1 + GIoU box losses, applied to the decoder output and to
the encoder's selected queries. Every batch is freshly generated (no overfitting), so
the validation split measures generalisation. ``rtdetr-edge train-tiny`` writes the
export; the shipped demo weights were produced by it (see ``configs/demo/``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from rtdetr_edge.preprocess import preprocess_rgb
from rtdetr_edge.dev.synthetic import SHAPE_CLASSES, render_scene
from rtdetr_edge.dev.tiny_model import TinyModelSpec, TinyRTDETR, export_inference_model, paddle

log = logging.getLogger(__name__)
functional = paddle.nn.functional


@dataclass(frozen=True)
class TrainSettings:
    iterations: int = 1500
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_grad_norm: float = 0.1
    seed: int = 0
    num_queries: int = 100
    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0


def make_batch(rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Images [B,3,640,640] and, per image, class indices and normalized cxcywh boxes."""
    images, labels, boxes = [], [], []
    for _ in range(batch_size):
        height = int(rng.choice([360, 427, 480]))
        width = int(rng.choice([480, 640]))
        rgb, objects = render_scene(rng, height=height, width=width)
        images.append(preprocess_rgb(rgb).image)
        labels.append(np.array([o.class_index for o in objects], dtype=np.int64))
        xyxy = np.array([o.box for o in objects], dtype=np.float32) / np.array([width, height, width, height], np.float32)
        boxes.append(np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                               xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], axis=1))  # fmt: skip
    return np.stack(images), labels, boxes


def cxcywh_to_xyxy(boxes: Any) -> Any:
    cx, cy, w, h = boxes.unbind(-1)
    return paddle.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def generalized_iou(a: Any, b: Any) -> Any:
    """Pairwise GIoU of matched xyxy boxes ``a[i]`` and ``b[i]``."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = paddle.maximum(a[:, :2], b[:, :2])
    rb = paddle.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clip(min=0).prod(-1)
    union = area_a + area_b - inter
    iou = inter / union.clip(min=1e-7)
    hull = (paddle.maximum(a[:, 2:], b[:, 2:]) - paddle.minimum(a[:, :2], b[:, :2])).clip(min=0).prod(-1)
    return iou - (hull - union) / hull.clip(min=1e-7)


def numpy_giou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs GIoU of xyxy boxes (for matching costs)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    hull = np.clip(np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2]), 0, None).prod(-1)
    return inter / np.maximum(union, 1e-7) - (hull - union) / np.maximum(hull, 1e-7)


def match(logits: np.ndarray, boxes: np.ndarray, labels: np.ndarray, targets: np.ndarray, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of one image's queries to its ground truth (RT-DETR's costs)."""
    prob = 1 / (1 + np.exp(-logits[:, labels]))
    alpha, gamma = 0.25, 2.0
    cost_class = alpha * (1 - prob) ** gamma * -np.log(prob + 1e-8) - (1 - alpha) * prob**gamma * -np.log(1 - prob + 1e-8)
    cost_l1 = np.abs(boxes[:, None, :] - targets[None, :, :]).sum(-1)

    def xyxy(b: np.ndarray) -> np.ndarray:
        return np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)

    cost = settings.cost_class * cost_class + settings.cost_l1 * cost_l1 - settings.cost_giou * numpy_giou(xyxy(boxes), xyxy(targets))
    rows, cols = linear_sum_assignment(cost)
    return rows, cols


def detection_loss(logits: Any, boxes: Any, labels: list[np.ndarray], targets: list[np.ndarray], settings: TrainSettings) -> Any:
    num_classes = logits.shape[-1]
    logits_np, boxes_np = logits.numpy(), boxes.numpy()
    target_classes = np.zeros(logits.shape, dtype=np.float32)
    query_index, target_boxes = [], []
    for image, (image_labels, image_targets) in enumerate(zip(labels, targets)):
        rows, cols = match(logits_np[image], boxes_np[image], image_labels, image_targets, settings)
        target_classes[image, rows, image_labels[cols]] = 1.0
        query_index.extend(image * logits.shape[1] + rows)
        target_boxes.append(image_targets[cols])
    num_boxes = max(1.0, float(sum(len(t) for t in targets)))
    focal = functional.sigmoid_focal_loss(
        logits.reshape([-1, num_classes]), paddle.to_tensor(target_classes.reshape(-1, num_classes)), reduction="sum"
    ) / num_boxes
    matched = paddle.gather(boxes.reshape([-1, 4]), paddle.to_tensor(np.array(query_index, dtype=np.int64)))
    wanted = paddle.to_tensor(np.concatenate(target_boxes).astype(np.float32))
    l1 = functional.l1_loss(matched, wanted, reduction="sum") / num_boxes
    giou = (1 - generalized_iou(cxcywh_to_xyxy(matched), cxcywh_to_xyxy(wanted))).sum() / num_boxes
    return focal + settings.cost_l1 * l1 + settings.cost_giou * giou


def train_tiny_model(out_dir: Path, settings: TrainSettings, log_every: int = 25) -> TinyRTDETR:
    """Train from scratch and export to ``out_dir``. Deterministic for a given seed and machine."""
    spec = TinyModelSpec(num_classes=len(SHAPE_CLASSES), num_queries=settings.num_queries, seed=settings.seed)
    with paddle.utils.unique_name.guard():
        paddle.seed(settings.seed)
        model = TinyRTDETR(spec)
        model.train()
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(settings.learning_rate, T_max=settings.iterations)
        optimizer = paddle.optimizer.AdamW(
            learning_rate=schedule,
            parameters=model.parameters(),
            weight_decay=settings.weight_decay,
            grad_clip=paddle.nn.ClipGradByGlobalNorm(settings.max_grad_norm),
        )
        rng = np.random.default_rng(settings.seed)
        started = time.perf_counter()
        for iteration in range(1, settings.iterations + 1):
            images, labels, targets = make_batch(rng, settings.batch_size)
            logits, boxes, enc_logits, enc_boxes = model(paddle.to_tensor(images))
            loss = detection_loss(logits, boxes, labels, targets, settings) + detection_loss(
                enc_logits, enc_boxes, labels, targets, settings
            )
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            if iteration % log_every == 0 or iteration == settings.iterations:
                elapsed = time.perf_counter() - started
                eta = elapsed / iteration * (settings.iterations - iteration)
                log.info("train iteration %d/%d loss %.3f elapsed %.0fs eta %.0fs",
                         iteration, settings.iterations, float(loss), elapsed, eta)  # fmt: skip
        model.eval()
        export_inference_model(model, out_dir, labels=list(SHAPE_CLASSES))
    return model


