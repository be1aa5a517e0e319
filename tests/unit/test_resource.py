from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtdetr_edge.api.job import OnnxRuntimeInt8
from rtdetr_edge.resource import (
    SpecError,
    configs_dir,
    earlier_pipeline_digest,
    installed_tool_versions,
    load_resource,
    parse_resource,
    pipeline_digest,
    pipeline_plan,
    tool_version_problems,
    tool_versions,
)

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
        ({"arch": "yolo"}, "spec.arch: Input should be 'r18vd', 'r34vd'"),
        ({"source__checkpoint": "https://x/y.pdparams"}, "spec.source: source needs exactly one of inferenceModel"),
        ({"source__inferenceModel": None}, "exactly one of inferenceModel"),
        ({"source__inferenceModel": "s3://bucket/model"}, "spec.source.inferenceModel: 's3://bucket/model' has 's3://'"),
        ({"source__sha256": "abc"}, "spec.source.sha256: String should match pattern"),
        ({"dataset__uri": None}, "spec.dataset.uri is required"),
        ({"dataset__maxValImages": 0}, "spec.dataset.maxValImages: Input should be greater than or equal to 1, got 0"),
        ({"quantization__method": "awq"}, "spec.quantization.method: Input should be 'qat', 'ptq' or 'none', got 'awq'"),
        ({"quantization__method": "none"}, "spec: serving.precision int8 needs quantization.method qat or ptq"),
        ({"serving__device": "cpu", "serving__cpuRuntime": "onnxruntime"}, "set quantization.method ptq, or serving.cpuRuntime paddle"),
        ({"quantization__trainIter": 0}, "trainIter: Input should be greater than or equal to 1"),
        ({"quantization__learningRate": -1}, "learningRate: Input should be greater than 0"),
        ({"quantization__maxMapDrop": "a lot"}, "maxMapDrop: Input should be a valid number, got 'a lot'"),
        ({"quantization__quantizeOpTypes": ["conv2d", "relu"]}, "spec.quantization.quantizeOpTypes[1]: Input should be"),
        ({"serving__precision": "fp16", "serving__device": "cpu", "quantization__method": "none"}, "fp16 needs serving.device gpu"),
        ({"serving__precision": "fp16"}, "serves the FP32 model"),
        ({"serving__maxBatchSize": 0}, "maxBatchSize: Input should be greater than or equal to 1"),
        ({"serving__scoreThreshold": 2}, "scoreThreshold: Input should be less than or equal to 1"),
        ({"serving__engineCache": {"hostPath": "/a", "emptyDir": {}}}, "exactly one of hostPath, pvcName or emptyDir"),
        ({"storage__artifacts": "https://example.com/x"}, "must be writable"),
        ({"storage": None}, "spec.storage is required"),
        ({"serving__replicas": True}, "spec.serving.replicas: Input should be a valid integer, got True"),
        ({"serving__replicas": "3"}, "spec.serving.replicas: Input should be a valid integer, got '3'"),
        ({"serving__replica": 3}, "spec.serving.replica: unknown field"),
    ],
)
def test_invalid_specs_explain_themselves(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_resource(with_spec(**changes))
    assert any(message in error for error in raised.value.errors), raised.value.errors


def test_names_that_cannot_name_a_service_are_refused_as_the_api_server_does() -> None:
    document = base()
    document["metadata"]["name"] = "2024-r50.v2"
    with pytest.raises(SpecError, match="it also names the model's Service"):
        parse_resource(document)


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
    ):
        assert pipeline_digest(parse_resource(with_spec(**changes)).spec) != reference, changes


def test_the_onnxruntime_recipe_is_in_the_plan_and_its_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU INT8 resource's plan carries ONNX Runtime's recipe (7-bit weights: the same numbers on
    every CPU), and a different recipe is a different model, never the old one reused."""
    cpu = parse_resource(with_spec(serving={"device": "cpu", "precision": "int8"}, quantization={"method": "ptq"})).spec
    plan = pipeline_plan(cpu)
    recipe = plan.quantization.onnxruntime
    assert recipe is not None and recipe.weight_bits == 7 and recipe.op_types == ["Conv", "MatMul"]
    assert pipeline_plan(parse_resource(base()).spec).quantization.onnxruntime is None, "GPU: PaddleSlim's model"
    # An earlier release's recipe (8-bit weights) gives another digest.
    eight_bit = recipe.model_copy(update={"weight_bits": 8})
    monkeypatch.setattr(OnnxRuntimeInt8, "for_paddle_ops", classmethod(lambda cls, ops: eight_bit))
    assert pipeline_plan(cpu).quantization.onnxruntime.weight_bits == 8  # type: ignore[union-attr]
    assert pipeline_plan(cpu).pipeline_digest != plan.pipeline_digest


# Digests of the GPU samples as the previous release computed them (the gate budget hashed in): a
# release that stops recognising one re-runs hours of quantization for every user's model of that
# kind. Change them only on purpose (a new pin, a new recipe), and say so in the release notes.
RELEASED_DIGESTS = {
    "rtdetr-r50.yaml": "sha256:d43db03cdbcfd8e7dba2a4685483ec835293e4e3b190ee2717b497dbb9a0b5db",
    "rtdetr-hgnetv2-l.yaml": "sha256:0203625447124762dbc8afbc65e915d0e59723dbf58d3df2fc65d84254bd9154",
    "demo-shapes.yaml": "sha256:b5ccb3cc5db00f721fbd809f5c4738ae3f92b2ccf236a8950c7424302120a52e",
}


@pytest.mark.parametrize("sample", sorted(RELEASED_DIGESTS))
def test_an_upgrade_does_not_requantize_what_it_did_not_change(sample: str) -> None:
    """The ONNX Runtime recipe joined the plan (resources that do not use it kept their digest);
    the gate budget left the digest: the previous release's digest is still recognised as the
    spec's (the operator reads its models, results and Jobs as this spec's)."""
    document = yaml.safe_load((configs_dir() / "samples" / sample).read_text())
    spec = parse_resource(document).spec
    assert earlier_pipeline_digest(spec) == RELEASED_DIGESTS[sample]
    assert pipeline_digest(spec) != RELEASED_DIGESTS[sample]


def test_the_gate_budget_judges_the_model_and_does_not_make_it() -> None:
    reference = parse_resource(base()).spec
    for changes in ({"quantization__maxMapDrop": 1.0}, {"quantization__minBaselineMap": 0.0}):
        spec = parse_resource(with_spec(**changes)).spec
        assert pipeline_digest(spec) == pipeline_digest(reference), changes
        assert earlier_pipeline_digest(spec) != earlier_pipeline_digest(reference), changes
        assert pipeline_plan(spec).quantization != pipeline_plan(reference).quantization, "the Job still gets the budget"


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


def test_tool_versions_are_the_packages_own_pins_and_installed_here() -> None:
    pins = tool_versions()
    assert pins["paddlepaddle"] == "2.6.2" and pins["paddleslim"] == "2.6.0", "pyproject.toml's pins, via metadata"
    assert tool_version_problems(pins, installed_tool_versions()) == []
    assert pipeline_plan(parse_resource(base()).spec).tools == pins


@pytest.mark.parametrize(
    ("installed", "problems"),
    [
        ({"paddlepaddle": "2.6.2", "paddleslim": "2.6.0"}, []),
        ({"paddlepaddle": "3.0.0", "paddleslim": "2.6.0"}, ["paddlepaddle 3.0.0 is installed, the pipeline needs 2.6.2"]),
        ({"paddlepaddle": "2.6.2", "paddleslim": None}, ["paddleslim is not installed (the pipeline needs 2.6.0)"]),
    ],
)
def test_tool_version_problems(installed: dict[str, str | None], problems: list[str]) -> None:
    expected = {"paddlepaddle": "2.6.2", "paddleslim": "2.6.0", "rtdetr-edge": "0.1"}
    assert tool_version_problems(expected, installed) == problems
