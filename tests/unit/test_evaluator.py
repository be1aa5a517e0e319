"""The mAP computation on hand-made cases whose answers are worked out by hand.

pycocotools: AP per category = mean over IoU thresholds .50:.05:.95 of the
101-point interpolated precision; mAP = mean over categories with ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtdetr_edge.coco import DatasetError, class_to_category_ids, load_ground_truth
from rtdetr_edge.evaluate import coco_map, rows_to_coco
from rtdetr_edge.gate import accuracy_gate


def ground_truth(boxes: list[tuple[int, int, list[float]]], categories: tuple[int, ...] = (1, 2)) -> dict[str, object]:
    """boxes: (image_id, category_id, [x, y, w, h])"""
    image_ids = sorted({image_id for image_id, _, _ in boxes} | {1})
    return {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in image_ids],
        "annotations": [
            {"id": n + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for n, (i, c, b) in enumerate(boxes)
        ],
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
    }


def prediction(image_id: int, category_id: int, bbox: list[float], score: float = 0.9) -> dict[str, object]:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_perfect_predictions_score_100() -> None:
    gt = ground_truth([(1, 1, [10, 10, 100, 100]), (1, 2, [300, 200, 50, 80]), (2, 1, [0, 0, 640, 480])])
    preds = [prediction(i, c, b) for i, c, b in [(1, 1, [10, 10, 100, 100]), (1, 2, [300, 200, 50, 80]), (2, 1, [0, 0, 640, 480])]]
    assert coco_map(gt, preds) == pytest.approx((100.0, 100.0))


def test_shifted_box() -> None:
    # Shift a 100x100 box right by 10 px: IoU = 90*100 / (110*100) = 0.818 -> it counts at the
    # thresholds .50 .55 .60 .65 .70 .75 .80 (7 of 10): AP = 70, AP50 = 100.
    gt = ground_truth([(1, 1, [100, 100, 100, 100])], categories=(1,))
    assert coco_map(gt, [prediction(1, 1, [110, 100, 100, 100])]) == pytest.approx((70.0, 100.0))


def test_missed_object() -> None:
    # Two objects, one found: precision 1 up to recall 0.5, then nothing. Of the 101
    # recall points 0.00..1.00, the 51 at or below 0.50 have precision 1: AP = 51/101.
    gt = ground_truth([(1, 1, [10, 10, 100, 100]), (1, 1, [300, 300, 100, 100])], categories=(1,))
    expected = 51 / 101 * 100
    assert coco_map(gt, [prediction(1, 1, [10, 10, 100, 100])]) == pytest.approx((expected, expected))


def test_wrong_class() -> None:
    # The box is right but labelled 2: category 1 (the only one with ground truth) has AP 0;
    # category 2 has no ground truth and does not count.
    gt = ground_truth([(1, 1, [10, 10, 100, 100])], categories=(1, 2))
    assert coco_map(gt, [prediction(1, 2, [10, 10, 100, 100])]) == pytest.approx((0.0, 0.0))


def test_no_predictions() -> None:
    assert coco_map(ground_truth([(1, 1, [1, 1, 5, 5])]), []) == (0.0, 0.0)


def test_category_id_mapping() -> None:
    # A dataset whose ids are 7 and 42 (not 0-based, not contiguous). The model's class 0
    # is category 7 and class 1 is 42 (sorted ids); rows_to_coco must apply that.
    gt = ground_truth([(1, 7, [10, 10, 100, 100]), (1, 42, [200, 200, 60, 60])], categories=(42, 7))
    rows = np.array([[0, 0.9, 10, 10, 110, 110], [1, 0.8, 200, 200, 260, 260]], dtype=np.float32)
    assert coco_map(gt, rows_to_coco(1, rows, [7, 42])) == pytest.approx((100.0, 100.0))
    # Without the mapping (class index taken as the category id) nothing matches.
    assert coco_map(gt, rows_to_coco(1, rows, [0, 1])) == pytest.approx((0.0, 0.0))
    # A swapped mapping gets the classes wrong.
    assert coco_map(gt, rows_to_coco(1, rows, [42, 7])) == pytest.approx((0.0, 0.0))


def test_rows_to_coco_drops_unmapped_classes() -> None:
    rows = np.array([[5, 0.9, 0, 0, 10, 20]], dtype=np.float32)
    assert rows_to_coco(1, rows, [1, 2]) == []
    converted = rows_to_coco(3, np.array([[1, 0.5, 5, 6, 15, 26]], np.float32), [1, 2])
    assert converted == [{"image_id": 3, "category_id": 2, "bbox": [5.0, 6.0, 10.0, 20.0], "score": 0.5}]


def write_dataset(tmp_path: Path, document: dict[str, object], files: list[str]) -> tuple[Path, Path]:
    images = tmp_path / "val"
    images.mkdir()
    for name in files:
        (images / name).write_bytes(b"")
    annotations = tmp_path / "instances_val.json"
    annotations.write_text(json.dumps(document))
    return annotations, images


def test_mapping_rejects_categories_the_model_cannot_produce(tmp_path: Path) -> None:
    annotations, images = write_dataset(
        tmp_path, ground_truth([(1, 1, [0, 0, 5, 5]), (1, 9, [0, 0, 5, 5])], categories=(1, 2, 9)), ["1.jpg"]
    )
    gt = load_ground_truth(annotations, images)
    with pytest.raises(DatasetError, match=r"category ids \[9\] cannot be produced"):
        class_to_category_ids(gt, num_classes=2)
    with pytest.raises(DatasetError, match=r"annotates category ids \[9\]"):
        class_to_category_ids(gt, num_classes=80, explicit=[1, 2])
    assert class_to_category_ids(gt, num_classes=3) == [1, 2, 9]


def test_dataset_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing.json does not exist"):
        load_ground_truth(tmp_path / "missing.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(DatasetError, match="bad.json is not valid JSON"):
        load_ground_truth(bad, tmp_path)
    annotations, images = write_dataset(tmp_path, ground_truth([(1, 1, [0, 0, 5, 5])]), [])
    with pytest.raises(DatasetError, match=r"val/1.jpg listed in .*instances_val.json does not exist"):
        load_ground_truth(annotations, images)


def test_max_images_keeps_the_first_ids(tmp_path: Path) -> None:
    document = ground_truth([(1, 1, [0, 0, 5, 5]), (2, 1, [0, 0, 5, 5]), (3, 1, [0, 0, 5, 5])])
    annotations, images = write_dataset(tmp_path, document, ["1.jpg", "2.jpg", "3.jpg"])
    subset = load_ground_truth(annotations, images, max_images=2)
    assert [image.id for image in subset.images] == [1, 2]
    assert {a["image_id"] for a in subset.document["annotations"]} == {1, 2}  # type: ignore[index, union-attr]


def test_gate() -> None:
    good = accuracy_gate(53.1, 53.0, 0.5)
    assert good.passed and good.reason == "WithinBudget"
    assert good.message == "mAP 53.1 -> 53.0 (drop 0.1 <= 0.5)"
    bad = accuracy_gate(53.1, 51.0, 0.5)
    assert not bad.passed and bad.reason == "DropExceedsBudget" and "drop 2.1 > 0.5" in bad.message
    assert accuracy_gate(40.0, 40.5, 0.0).passed, "a better candidate passes even a zero budget"
    assert accuracy_gate(40.0, 39.5, 0.5).passed, "exactly on the budget passes"
    with pytest.raises(ValueError):
        accuracy_gate(float("nan"), 1.0, 0.5)
    with pytest.raises(ValueError):
        accuracy_gate(1.0, 1.0, -1.0)


def test_a_baseline_near_zero_cannot_pass_the_gate() -> None:
    """A wrong categoryIds mapping scores the FP32 model ~0 mAP; a candidate at 0 would 'lose
    nothing'. The gate refuses and says what to check, unless the check is turned off."""
    refused = accuracy_gate(0.0, 0.0, 0.5)
    assert not refused.passed and refused.reason == "BaselineTooLow"
    assert "baseline scores mAP 0.0" in refused.message and "categoryIds" in refused.message
    assert accuracy_gate(0.0, 0.0, 0.5, min_baseline_map=0).passed
    assert accuracy_gate(1.2, 1.0, 0.5).passed, "the default threshold is 1 mAP point"


def test_the_operator_judging_reported_maps_agrees_with_the_job() -> None:
    """The Job judges measured mAPs; the operator judges again, from what the Job reported, when
    the budget changes: both must reach the same verdict (the gate rounds as it reports)."""
    import random

    from rtdetr_edge.api.job import Accuracy
    from rtdetr_edge.api.spec import QuantizationSpec
    from rtdetr_edge.gate import judge, reported_map

    rng = random.Random(7)
    for _ in range(2000):
        baseline = rng.uniform(0, 60)
        candidate = baseline - rng.choice([rng.uniform(-1, 3), 0.5 + rng.uniform(-0.006, 0.006)])
        budget, floor = rng.choice([0.0, 0.5, 1.0, 2.0]), rng.choice([0.0, 1.0, 30.0])
        job = accuracy_gate(baseline, candidate, budget, floor)
        reported = Accuracy(baseline_map=reported_map(baseline), quantized_map=reported_map(candidate),
                            map_drop=reported_map(baseline - candidate), images=1)  # fmt: skip
        spec = QuantizationSpec(max_map_drop=budget, min_baseline_map=floor)
        assert judge(reported, spec) == job, (baseline, candidate, budget, floor)
    measured = Accuracy(baseline_map=44.74, quantized_map=43.52, map_drop=1.22, images=32)
    raised = judge(measured, QuantizationSpec(max_map_drop=2.0))
    tightened = judge(measured, QuantizationSpec(max_map_drop=1.0))
    assert raised is not None and raised.passed and tightened is not None and not tightened.passed
