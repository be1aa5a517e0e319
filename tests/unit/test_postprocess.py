from __future__ import annotations

import numpy as np
import pytest

from rtdetr_edge.labels import coco_labels, label_for, load_labels
from rtdetr_edge.postprocess import ModelOutputs, select_detections, to_detections


def rows(*items: tuple[float, ...]) -> np.ndarray:
    return np.array(items, dtype=np.float32).reshape(-1, 6)


def test_split_by_bbox_num() -> None:
    outputs = ModelOutputs(bbox=rows(*[(0, 0.5, 0, 0, 1, 1)] * 5), bbox_num=np.array([2, 3], np.int32))
    parts = outputs.split()
    assert [len(p) for p in parts] == [2, 3]


def test_split_rejects_inconsistent_counts() -> None:
    with pytest.raises(ValueError, match="sums to 4"):
        ModelOutputs(bbox=rows((0, 0.5, 0, 0, 1, 1)), bbox_num=np.array([4], np.int32)).split()


def test_select_thresholds_sorts_limits_and_clips() -> None:
    raw = rows(
        (1, 0.40, 10, 10, 50, 50),
        (2, 0.90, -20, -5, 700, 500),  # clipped to the 640x427 image
        (3, 0.10, 0, 0, 5, 5),  # under the threshold
        (-1, 0.99, 0, 0, 5, 5),  # padding row
        (4, 0.70, 650, 10, 700, 50),  # entirely outside: no area after clipping
        (5, 0.60, 1, 2, 3, 4),
    )
    kept = select_detections(raw, height=427, width=640, score_threshold=0.3, max_detections=10)
    assert kept[:, 0].tolist() == [2, 5, 1]
    np.testing.assert_allclose(kept[0, 2:], [0, 0, 640, 427])
    top = select_detections(raw, height=427, width=640, score_threshold=0.3, max_detections=1)
    assert top[:, 0].tolist() == [2]


def test_to_detections_uses_labels() -> None:
    detections = to_detections(rows((0, 0.9, 1, 2, 3, 4), (99, 0.5, 1, 2, 3, 4)), coco_labels())
    assert detections[0].label == "person" and detections[0].box == (1.0, 2.0, 3.0, 4.0)
    assert detections[1].label == "class_99"


def test_label_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert len(coco_labels()) == 80 and coco_labels()[79] == "toothbrush"
    plain = tmp_path / "labels.txt"
    plain.write_text("cat\n\ndog\n")
    assert load_labels(plain) == ["cat", "dog"]
    infer_cfg = tmp_path / "infer_cfg.yml"
    infer_cfg.write_text("arch: DETR\nlabel_list:\n- bolt\n- nut\n")
    assert load_labels(infer_cfg) == ["bolt", "nut"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_labels(tmp_path / "empty.txt")
    assert label_for(["a"], 3) == "class_3"
