"""Fixtures for the pipeline tier: the shipped shapes model, synthetic COCO datasets, resources."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtdetr_edge.dev.demo import shipped_demo_weights
from rtdetr_edge.dev.synthetic import write_coco_dataset


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the shipped, trained 3-class shapes model (tests may damage copies)."""
    target = tmp_path_factory.mktemp("shapes-model") / "shapes-tiny"
    shutil.copytree(shipped_demo_weights(), target)
    return target


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco_dataset(tmp_path_factory.mktemp("datasets") / "shapes", train=8, val=32, seed=7)


def resource(
    model_dir: Path, dataset: Path, artifacts: Path, name: str = "shapes", **quantization: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "rtdetr.io/v1alpha1",
        "kind": "RTDETRModel",
        "metadata": {"name": name, "namespace": "tests"},
        "spec": {
            "arch": "tiny",
            "source": {"inferenceModel": f"file://{model_dir}"},
            "dataset": {"uri": f"file://{dataset}"},
            "quantization": {"method": "qat", "trainIter": 8, "maxMapDrop": 2.0, **quantization},
            # PaddleSlim's QDQ model on CPU (Paddle): the accuracy TensorRT INT8 will give.
            "serving": {"replicas": 1, "device": "cpu", "cpuRuntime": "paddle", "precision": "int8",
                        "maxBatchSize": 2, "engineCache": {"emptyDir": {}}},
            "storage": {"artifacts": f"file://{artifacts}"},
        },
    }  # fmt: skip


def write_resource(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(copy.deepcopy(document)))
    return path
