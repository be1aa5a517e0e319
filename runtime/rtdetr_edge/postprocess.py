"""Turn the export's positional outputs into per-image detections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtdetr_edge.labels import label_for


@dataclass
class ModelOutputs:
    """Outputs by position, as PaddleDetection exports them.

    ``bbox``: ``[M, 6]`` float32 rows of (class, score, x1, y1, x2, y2) in original
    pixels; ``bbox_num``: ``[N]`` int32 rows per image.
    """

    bbox: np.ndarray
    bbox_num: np.ndarray

    def split(self) -> list[np.ndarray]:
        """Rows of ``bbox`` belonging to each image."""
        counts = self.bbox_num.astype(np.int64)
        if int(counts.sum()) != self.bbox.shape[0]:
            raise ValueError(f"bbox_num sums to {int(counts.sum())} but bbox has {self.bbox.shape[0]} rows")
        return np.split(self.bbox, np.cumsum(counts)[:-1])


@dataclass(frozen=True)
class Detection:
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels

    def to_json(self) -> dict[str, object]:
        return {"class_id": self.class_id, "label": self.label, "score": self.score, "box": list(self.box)}


def select_detections(
    rows: np.ndarray,
    height: int,
    width: int,
    score_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Keep valid rows above the threshold, best first, boxes clipped to the image.

    Returns a ``[K, 6]`` float32 array (a copy). Rows with a negative class id
    (padding some exports emit) and boxes with no area after clipping are dropped.
    """
    keep = (rows[:, 0] >= 0) & (rows[:, 1] >= score_threshold)
    kept = rows[keep]
    order = np.argsort(-kept[:, 1], kind="stable")[:max_detections]
    kept = kept[order].astype(np.float32, copy=True)
    np.clip(kept[:, 2], 0, width, out=kept[:, 2])
    np.clip(kept[:, 4], 0, width, out=kept[:, 4])
    np.clip(kept[:, 3], 0, height, out=kept[:, 3])
    np.clip(kept[:, 5], 0, height, out=kept[:, 5])
    has_area = (kept[:, 4] > kept[:, 2]) & (kept[:, 5] > kept[:, 3])
    return kept[has_area]


def to_detections(rows: np.ndarray, labels: list[str]) -> list[Detection]:
    result = []
    for class_id, score, x1, y1, x2, y2 in rows.tolist():
        cid = int(class_id)
        box = (round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))
        result.append(Detection(cid, label_for(labels, cid), round(score, 5), box))
    return result
