"""Class-index → label names (COCO's 80 by default, or a user's label file)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def coco_labels() -> list[str]:
    """The 80 COCO category names in PaddleDetection's class-index order."""
    text = resources.files("rtdetr_edge").joinpath("data/coco_labels.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_labels(path: str | Path | None) -> list[str]:
    """Read one label per line (blank lines ignored); ``None`` gives the COCO labels.

    PaddleDetection's ``label_list.txt`` and the ``label_list`` of an
    ``infer_cfg.yml`` both fit this format.
    """
    if path is None:
        return coco_labels()
    file = Path(path)
    if file.suffix in (".yml", ".yaml"):
        import yaml

        document = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        names = document.get("label_list") if isinstance(document, dict) else None
        if not isinstance(names, list) or not names:
            raise ValueError(f"{file} has no 'label_list' (expected PaddleDetection's infer_cfg.yml)")
        return [str(name) for name in names]
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"label file {file} is empty")
    return names


def label_for(labels: list[str], class_id: int) -> str:
    """The name of ``class_id``, or ``class_<id>`` when the label list is shorter than the model."""
    if 0 <= class_id < len(labels):
        return labels[class_id]
    return f"class_{class_id}"
