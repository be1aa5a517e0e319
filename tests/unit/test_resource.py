from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtdetr_edge.resource import SpecError, configs_dir, load_resource, parse_resource, pipeline_digest

REPO = Path(__file__).resolve().parents[2]


def base() -> dict[str, Any]:
    return {
        "apiVersion": "rtdetr.io/v1alpha1",
        "kind": "RTDETRModel",
        "metadata": {"name": "m", "namespace": "vision"},
        "spec": {
            "arch": "r50vd",
            "source": {"inferenceModel": "pvc://models/rtdetr_r50vd_6x_coco"},
            "dataset": {"uri": "pvc://datasets/coco"},
            "serving": {"device": "gpu", "precision": "int8"},
            "storage": {"artifacts": "pvc://rtdetr-artifacts"},
        },
    }


def with_spec(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(base())
    for dotted, value in changes.items():
        target = document["spec"]
        *parents, last = dotted.split("__")
        for key in parents:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return document


def test_defaults() -> None:
    model = parse_resource(base())
    assert (model.name, model.namespace) == ("m", "vision")
    spec = model.spec
    assert spec.quantization.method == "qat" and spec.quantization.max_map_drop == 0.5
    assert spec.serving.replicas == 2 and spec.serving.max_batch_size == 4
    assert spec.serving.engine_cache is None, "absent: the operator's configured default applies"
    assert spec.dataset.val_annotations == "annotations/instances_val2017.json"
    assert spec.compression.active_deadline_seconds == 7200


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arch": "yolo"}, "spec.arch must be one of"),
        ({"source__checkpoint": "https://x/y.pdparams"}, "exactly one of inferenceModel"),
        ({"source__inferenceModel": None}, "exactly one of inferenceModel"),
        ({"source__inferenceModel": "s3://bucket/model"}, "'s3://'"),
        ({"source__sha256": "abc"}, "64 hex digits"),
        ({"dataset__uri": None}, "spec.dataset.uri is required"),
        ({"dataset__maxValImages": 0}, "maxValImages must be >= 1"),
        ({"quantization__method": "awq"}, "method must be one of qat, ptq, none"),
        ({"quantization__method": "none"}, "int8 needs spec.quantization.method qat or ptq"),
        ({"quantization__trainIter": 0}, "trainIter must be >= 1"),
        ({"quantization__learningRate": -1}, "learningRate must be > 0"),
        ({"quantization__maxMapDrop": "a lot"}, "maxMapDrop must be"),
        ({"serving__precision": "fp16", "serving__device": "cpu", "quantization__method": "none"}, "fp16 needs device gpu"),
        ({"serving__precision": "fp16"}, "serves the FP32 model"),
        ({"serving__maxBatchSize": 0}, "maxBatchSize must be within 1..64"),
        ({"serving__scoreThreshold": 2}, "scoreThreshold must be within 0..1"),
        ({"serving__engineCache": {"hostPath": "/a", "emptyDir": {}}}, "exactly one of hostPath, pvcName or emptyDir"),
        ({"storage__artifacts": "https://example.com/x"}, "must be writable"),
        ({"storage": None}, "spec.storage.artifacts is required"),
        ({"serving__replicas": True}, "replicas must be int"),
    ],
)
def test_invalid_specs_explain_themselves(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_resource(with_spec(**changes))
    assert any(message in error for error in raised.value.errors), raised.value.errors


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(SpecError) as raised:
        parse_resource(with_spec(arch="x", serving__maxBatchSize=0, storage=None))
    assert len(raised.value.errors) == 3


def test_digest_changes_with_what_changes_the_model() -> None:
    reference = pipeline_digest(parse_resource(base()).spec)
    for changes in (
        {"arch": "r18vd"},
        {"source__inferenceModel": "pvc://models/other"},
        {"dataset__maxValImages": 100},
        {"quantization__trainIter": 501},
        {"quantization__maxMapDrop": 1.0},
    ):
        assert pipeline_digest(parse_resource(with_spec(**changes)).spec) != reference, changes


def test_digest_ignores_serving_compression_and_storage() -> None:
    reference = pipeline_digest(parse_resource(base()).spec)
    for changes in (
        {"serving__replicas": 5},
        {"serving__scoreThreshold": 0.3},
        {"serving__maxBatchSize": 8},
        {"compression__activeDeadlineSeconds": 600},
        {"storage__artifacts": "pvc://elsewhere"},
        {"quantization__trainIter": 500},  # the r50vd default, written out: same model
    ):
        assert pipeline_digest(parse_resource(with_spec(**changes)).spec) == reference, changes


def test_act_defaults_follow_paddleslim_recipes() -> None:
    for arch, train_iter, eval_iter in (("r50vd", 500, 100), ("hgnetv2_x", 500, 100), ("r101vd", 200, 50), ("hgnetv2_l", 200, 50)):
        config = yaml.safe_load((configs_dir() / "act" / f"{arch}.yaml").read_text())
        assert config["TrainConfig"]["train_iter"] == train_iter and config["TrainConfig"]["eval_iter"] == eval_iter
        assert config["Distillation"] == {"alpha": 1.0, "loss": "soft_label"}
        assert config["QuantAware"]["onnx_format"] is True
        assert config["QuantAware"]["activation_quantize_type"] == "moving_average_abs_max"
        assert config["QuantAware"]["quantize_op_types"] == ["conv2d", "depthwise_conv2d", "matmul_v2"]
        assert config["TrainConfig"]["learning_rate"] == {"type": "CosineAnnealingDecay", "learning_rate": 3e-5, "T_max": 10000}
        assert config["TrainConfig"]["optimizer_builder"] == {"optimizer": {"type": "SGD"}, "weight_decay": 4e-5}


def test_every_sample_parses() -> None:
    samples = sorted((REPO / "configs" / "samples").glob("*.yaml"))
    assert samples
    for sample in samples:
        load_resource(sample)


def test_load_resource_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpecError, match="exactly one RTDETRModel"):
        load_resource(empty)
    with pytest.raises(SpecError, match="cannot read"):
        load_resource(tmp_path / "missing.yaml")
