"""COCO-layout datasets: our own reader (PaddleDetection's ``ppdet`` is not usable here).

Train images need no labels (ACT distils the FP32 model); validation needs the
annotation file. Every problem names the file it is about.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rtdetr_edge.errors import InvalidImageError, PayloadTooLargeError, RtdetrEdgeError
from rtdetr_edge.preprocess import DEFAULT_MAX_IMAGE_PIXELS, ModelInputs, PreprocessedImage, preprocess_bytes, stack_batch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(RtdetrEdgeError):
    """The dataset is missing, empty, malformed or incompatible with the model."""

    http_status = 400
    code = "invalid_dataset"


@dataclass(frozen=True)
class CocoImage:
    id: int
    path: Path
    width: int
    height: int


@dataclass
class CocoGroundTruth:
    annotation_file: Path
    document: dict[str, object]
    images: list[CocoImage]

    @property
    def category_ids(self) -> list[int]:
        return sorted(int(c["id"]) for c in self.document["categories"])  # type: ignore[index, union-attr]

    def used_category_ids(self) -> set[int]:
        return {int(a["category_id"]) for a in self.document["annotations"]}  # type: ignore[index, union-attr]


def list_images(images_dir: Path) -> list[Path]:
    """Image files of a folder (train split), sorted; an empty or missing folder is an error."""
    if not images_dir.is_dir():
        raise DatasetError(f"image folder {images_dir} does not exist")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DatasetError(f"image folder {images_dir} holds no .jpg/.jpeg/.png files")
    return images


def load_ground_truth(annotation_file: Path, images_dir: Path, max_images: int | None = None) -> CocoGroundTruth:
    """Read and check a COCO ``instances_*.json``; keep the first ``max_images`` images by id."""
    if not annotation_file.is_file():
        raise DatasetError(f"annotation file {annotation_file} does not exist")
    try:
        document = json.loads(annotation_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"annotation file {annotation_file} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or not all(
        isinstance(document.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise DatasetError(f"{annotation_file} is not COCO: it needs 'images', 'annotations' and 'categories' lists")
    if not document["images"]:
        raise DatasetError(f"{annotation_file} lists no images")
    if not document["categories"]:
        raise DatasetError(f"{annotation_file} lists no categories")
    entries = sorted(document["images"], key=lambda image: int(image["id"]))
    if max_images is not None:
        entries = entries[:max_images]
    images = []
    for entry in entries:
        path = images_dir / str(entry["file_name"])
        if not path.is_file():
            raise DatasetError(f"image {path} listed in {annotation_file} does not exist")
        images.append(CocoImage(int(entry["id"]), path, int(entry["width"]), int(entry["height"])))
    kept = {image.id for image in images}
    subset = {
        **document,
        "images": [e for e in document["images"] if int(e["id"]) in kept],
        "annotations": [a for a in document["annotations"] if int(a["image_id"]) in kept],
    }
    subset.setdefault("info", {"description": str(annotation_file)})
    return CocoGroundTruth(annotation_file, subset, images)


def class_to_category_ids(
    ground_truth: CocoGroundTruth, num_classes: int, explicit: list[int] | None = None
) -> list[int]:
    """Model class index → dataset category id.

    Default (PaddleDetection's convention): the dataset's category ids, sorted.
    ``explicit`` overrides it (``categoryIds`` in the resource). Either way, every
    category the annotations use must be one the model can produce.
    """
    mapping = list(explicit) if explicit is not None else ground_truth.category_ids
    if len(mapping) > num_classes:
        extra = mapping[num_classes:]
        raise DatasetError(
            f"{ground_truth.annotation_file} has {len(mapping)} categories but the model predicts {num_classes} "
            f"classes; category ids {extra} cannot be produced (map classes with categoryIds)"
        )
    unknown = sorted(ground_truth.used_category_ids() - set(mapping))
    if unknown:
        raise DatasetError(
            f"{ground_truth.annotation_file} annotates category ids {unknown} that the model cannot produce "
            f"(class index -> category id mapping is {mapping})"
        )
    return mapping


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> PreprocessedImage:
    try:
        return preprocess_bytes(path.read_bytes(), max_pixels)
    except (InvalidImageError, PayloadTooLargeError) as error:
        raise DatasetError(f"{path}: {error}") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror})") from None


def iterate_batches(paths: list[Path], batch_size: int) -> Iterator[tuple[list[Path], ModelInputs]]:
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        yield chunk, stack_batch([read_image(path) for path in chunk])
