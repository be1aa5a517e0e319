"""Deterministic synthetic scenes: coloured shapes on textured backgrounds, with boxes.

Used where real photographs with annotations cannot be shipped: demo images,
benchmark traffic, and (later) a small COCO-format dataset.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SHAPE_CLASSES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class SceneObject:
    class_index: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients plus blurred noise: enough texture to make detection non-trivial."""
    base = rng.integers(40, 216, size=3).astype(np.float32)
    ramp_y = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    ramp_x = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    tilt = rng.uniform(-40, 40, size=(2, 3)).astype(np.float32)
    image = base + ramp_y * tilt[0] + ramp_x * tilt[1]
    noise = rng.normal(0, 25, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    image += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 6, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def render_scene(
    rng: np.random.Generator,
    height: int = 427,
    width: int = 640,
    max_objects: int = 4,
    min_size: int = 40,
    max_size: int = 160,
) -> tuple[np.ndarray, list[SceneObject]]:
    """An RGB image and its objects; the same generator state gives the same scene."""
    image = textured_background(rng, height, width)
    objects: list[SceneObject] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        class_index = int(rng.integers(0, len(SHAPE_CLASSES)))
        size = int(rng.integers(min_size, max_size + 1))
        x1 = int(rng.integers(0, max(1, width - size)))
        y1 = int(rng.integers(0, max(1, height - size)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if SHAPE_CLASSES[class_index] == "circle":
            cv2.circle(image, (x1 + size // 2, y1 + size // 2), size // 2, colour, thickness=-1, lineType=cv2.LINE_AA)
        elif SHAPE_CLASSES[class_index] == "square":
            cv2.rectangle(image, (x1, y1), (x1 + size - 1, y1 + size - 1), colour, thickness=-1)
        else:
            points = np.array([[x1 + size // 2, y1], [x1, y1 + size - 1], [x1 + size - 1, y1 + size - 1]], np.int32)
            cv2.fillPoly(image, [points], colour, lineType=cv2.LINE_AA)
        objects.append(SceneObject(class_index, (float(x1), float(y1), float(x1 + size), float(y1 + size))))
    return image, objects


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


# COCO category ids of the synthetic shapes. Deliberately not 0-based or contiguous with
# the model's class index, so category-id mapping is exercised the way real datasets need.
SHAPE_CATEGORY_IDS = (1, 2, 3)


def coco_categories() -> list[dict[str, object]]:
    return [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in zip(SHAPE_CATEGORY_IDS, SHAPE_CLASSES)]


def write_coco_split(
    root: Path, split: str, count: int, seed: int, with_annotations: bool = True
) -> tuple[Path, Path | None]:
    """Write ``count`` scenes to ``root/<split>/`` and (optionally) ``annotations/instances_<split>.json``."""
    images_dir = root / split
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(count):
        height = int(rng.choice([360, 427, 480]))
        width = int(rng.choice([480, 640]))
        rgb, objects = render_scene(rng, height=height, width=width)
        image_id = index + 1
        file_name = f"{image_id:012d}.jpg"
        (images_dir / file_name).write_bytes(encode_jpeg(rgb))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": SHAPE_CATEGORY_IDS[obj.class_index],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    if not with_annotations:
        return images_dir, None
    annotation_file = root / "annotations" / f"instances_{split}.json"
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    document = {"images": images, "annotations": annotations, "categories": coco_categories()}
    annotation_file.write_text(json.dumps(document))
    return images_dir, annotation_file


def write_coco_dataset(root: Path, train: int = 64, val: int = 32, seed: int = 0) -> Path:
    """A COCO-layout dataset (``train2017``, ``val2017``, ``annotations/``), made atomically."""
    staging = root.with_name(f".{root.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    write_coco_split(staging, "train2017", train, seed)
    write_coco_split(staging, "val2017", val, seed + 1)
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return root
