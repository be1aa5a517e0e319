"""Deterministic synthetic scenes: coloured shapes on textured backgrounds, with boxes.

Used where real photographs with annotations cannot be shipped: demo images,
benchmark traffic, and (later) a small COCO-format dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

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
