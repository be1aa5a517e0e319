"""The CRD on the real kube-apiserver: it installs (structural schema, CEL rules within the
cost budget), defaults what users leave out, accepts every sample, and rejects the invalid
resources users will write with messages they can act on — exactly what `kubectl apply`
prints."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from rtdetr_edge.api.spec import NAME_MESSAGE, AutoscalingSpec, EngineCacheSpec, RTDETRModelSpec, SourceSpec
from rtdetr_edge.resource import SpecError, parse_resource

from .conftest import CRD_FILE, OPERATOR_NAMESPACE, RELEASE, SAMPLES, Cluster, load_sample


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> str:
    """The CRD applied as a user would (server-side), established; returns a test namespace."""
    cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", "crd/rtdetrmodels.rtdetr.io", "--timeout=60s")
    # Adopted by the chart's release as the user guide's "Upgrading" says (the operator tests
    # install it next: helm refuses objects it does not own).
    cluster.kubectl("label", "crd", "rtdetrmodels.rtdetr.io", "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl("annotate", "crd", "rtdetrmodels.rtdetr.io", f"meta.helm.sh/release-name={RELEASE}",
                    f"meta.helm.sh/release-namespace={OPERATOR_NAMESPACE}")  # fmt: skip
    return cluster.namespace(pod_security="baseline")


def dry_run(cluster: Cluster, namespace: str, document: dict[str, Any]) -> tuple[bool, str, dict[str, Any] | None]:
    """``kubectl create --dry-run=server``: full admission (defaulting, schema, CEL), nothing stored."""
    document = copy.deepcopy(document)
    document["metadata"]["namespace"] = namespace
    result = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(document), check=False)
    created = json.loads(result.stdout) if result.returncode == 0 else None
    return result.returncode == 0, result.stderr, created


def test_crd_is_established_with_its_printer_columns(cluster: Cluster, crd: str) -> None:
    established = cluster.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rtdetrmodels.rtdetr.io")
    assert established is not None
    conditions = {c["type"]: c["status"] for c in established["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    assert "NonStructuralSchema" not in conditions
    assert established["status"]["acceptedNames"]["shortNames"] == ["rtdetr"]


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_every_sample_is_accepted_and_parses_after_defaulting(cluster: Cluster, crd: str, sample: str) -> None:
    accepted, message, created = dry_run(cluster, crd, load_sample(sample))
    assert accepted, message
    assert created is not None
    parse_resource(created)  # the operator reads what the server stored


def test_server_fills_the_documented_defaults(cluster: Cluster, crd: str) -> None:
    minimal = {
        "apiVersion": "rtdetr.io/v1alpha1", "kind": "RTDETRModel", "metadata": {"name": "minimal"},
        "spec": {"arch": "r18vd", "source": {"inferenceModel": "pvc://models/r18"}, "dataset": {"uri": "pvc://datasets/coco"},
                 "storage": {"artifacts": "pvc://rtdetr-artifacts"}},
    }  # fmt: skip
    accepted, message, created = dry_run(cluster, crd, minimal)
    assert accepted and created is not None, message
    spec = created["spec"]
    assert spec["quantization"]["method"] == "qat" and spec["quantization"]["maxMapDrop"] == 0.5
    assert spec["serving"]["replicas"] == 2 and spec["serving"]["device"] == "gpu" and spec["serving"]["precision"] == "int8"
    assert spec["serving"]["maxBatchSize"] == 4 and spec["compression"]["activeDeadlineSeconds"] == 7200


def rule_messages(node: Any) -> list[str]:
    """Every CEL rule's message in the CRD (each one has an example below)."""
    found = [rule["message"] for rule in node.get("x-kubernetes-validations", [])] if isinstance(node, dict) else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return found + [message for child in children for message in rule_messages(child)]


PRECISION_INT8_RULE, PRECISION_FP_RULE, ORT_QAT_RULE, FP16_CPU_RULE = (rule.message for rule in RTDETRModelSpec.rules)
SOURCE_RULE, ENGINE_CACHE_RULE = SourceSpec.rules[0].message, EngineCacheSpec.rules[0].message
AUTOSCALING_BOUNDS_RULE, AUTOSCALING_METRIC_RULE = (rule.message for rule in AutoscalingSpec.rules)

INVALID: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("two sources", lambda s: s["source"].update(checkpoint="pvc://models/x.pdparams"), SOURCE_RULE),
    ("no source", lambda s: s.update(source={}), SOURCE_RULE),
    ("int8 without quantization", lambda s: s["quantization"].update(method="none"), PRECISION_INT8_RULE),
    ("fp16 on cpu", lambda s: (s["serving"].update(precision="fp16", device="cpu"), s["quantization"].update(method="none")),
     FP16_CPU_RULE),
    ("fp16 with quantization", lambda s: s["serving"].update(precision="fp16"), PRECISION_FP_RULE),
    ("qat for ONNX Runtime", lambda s: s["serving"].update(device="cpu", cpuRuntime="onnxruntime"), ORT_QAT_RULE),
    ("two engine caches", lambda s: s["serving"].update(engineCache={"hostPath": "/a", "emptyDir": {}}), ENGINE_CACHE_RULE),
    ("no engine cache kind", lambda s: s["serving"].update(engineCache={}), ENGINE_CACHE_RULE),
    ("autoscaling max below min", lambda s: s["serving"].update(autoscaling={"minReplicas": 3, "maxReplicas": 2,
                                                                             "inFlightRequests": 4}), AUTOSCALING_BOUNDS_RULE),
    ("autoscaling without a metric", lambda s: s["serving"].update(autoscaling={"maxReplicas": 2}), AUTOSCALING_METRIC_RULE),
    ("s3 URI", lambda s: s["source"].update(inferenceModel="s3://bucket/model"), "spec.source.inferenceModel"),
    ("unknown arch", lambda s: s.update(arch="yolov8"), 'Unsupported value: "yolov8"'),
    ("batch too large", lambda s: s["serving"].update(maxBatchSize=128), "should be less than or equal to 64"),
    ("https artifacts", lambda s: s["storage"].update(artifacts="https://example.com/x"), "spec.storage.artifacts"),
]  # fmt: skip


@pytest.mark.parametrize("name", ["2024-r50.v2", "r50.v2"])
def test_names_that_cannot_name_a_service_are_rejected(cluster: Cluster, crd: str, name: str) -> None:
    """A valid name for the resource but not for its Service: refused at admission, not after
    hours of quantization."""
    document = load_sample("demo-shapes.yaml")
    document["metadata"]["name"] = name
    accepted, stderr, _ = dry_run(cluster, crd, document)
    assert not accepted and NAME_MESSAGE in stderr, stderr
    with pytest.raises(SpecError, match="it also names the model's Service"):
        parse_resource(document)


@pytest.mark.parametrize(("mutate", "message"), [(m, msg) for _, m, msg in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_resources_are_rejected_with_a_readable_message(
    cluster: Cluster, crd: str, mutate: Callable[[dict[str, Any]], Any], message: str
) -> None:
    document = load_sample("rtdetr-r50.yaml")
    mutate(document["spec"])
    accepted, stderr, _ = dry_run(cluster, crd, document)
    assert not accepted, "the API server accepted an invalid resource"
    assert 'The RTDETRModel "rtdetr-r50" is invalid' in stderr and message in stderr, stderr
    with pytest.raises(SpecError) as raised:  # `rtdetr-edge run` and the operator refuse it too
        parse_resource(document)
    if message in rule_messages(yaml.safe_load(CRD_FILE.read_text())):  # the same rule: the same words
        assert any(error.endswith(message) for error in raised.value.errors), raised.value.errors


def test_every_cel_rule_has_an_example_the_server_refuses() -> None:
    messages = rule_messages(yaml.safe_load(CRD_FILE.read_text()))
    assert set(messages) - {NAME_MESSAGE} == {message for _, _, message in INVALID} & set(messages)
