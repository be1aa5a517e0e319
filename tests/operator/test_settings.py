"""Operator settings: the host-directory allow-list for engine caches, the CLI/environment
that fills settings, and the chart's defaults meaning the operator's defaults."""

from __future__ import annotations

import copy
from typing import Any

import click
import pytest

from rtdetr_edge.api.job import PipelineRecord
from rtdetr_edge.resource import parse_resource
from rtdetr_operator.main import parse, settings_from
from rtdetr_operator.manifests import build_runtime_deployment
from rtdetr_operator.reconcile import JobObservation, Observed, decide
from rtdetr_operator.settings import OperatorSettings, host_path_problem
from tests.chart.test_chart import env_of, render

from .test_manifests import body_of, summary

ALLOWED = ("/var/cache/rtdetr-edge",)
NOW = "2026-12-02T00:00:00Z"


@pytest.mark.parametrize(
    ("cache", "prefixes", "fragment"),
    [
        (None, (), None),
        ({"emptyDir": {}}, (), None),
        ({"pvcName": "engines"}, (), None),
        ({"hostPath": "/var/cache/rtdetr-edge"}, ALLOWED, None),
        ({"hostPath": "/var/cache/rtdetr-edge/r50/"}, ALLOWED, None),
        ({"hostPath": "/var/cache/rtdetr-edge"}, (), "allows no host directories"),
        ({"hostPath": "/"}, ALLOWED, "hostPath / is outside"),
        ({"hostPath": "/var/cache/rtdetr-edge-other"}, ALLOWED, "is outside"),  # a sibling, not below
        ({"hostPath": "/var/cache/rtdetr-edge/../../../etc"}, ALLOWED, "hostPath /etc is outside"),
    ],
)
def test_host_path_allow_list(cache: dict[str, Any] | None, prefixes: tuple[str, ...], fragment: str | None) -> None:
    problem = host_path_problem(cache, prefixes)
    assert problem is None if fragment is None else fragment in str(problem), problem


def with_cache(cache: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body_of("rtdetr-r50.yaml"))
    body["spec"]["serving"]["engineCache"] = cache
    return body


def test_a_host_path_outside_the_allow_list_is_invalid_spec_and_creates_nothing() -> None:
    decision = decide(with_cache({"hostPath": "/"}), OperatorSettings(host_path_prefixes=ALLOWED), Observed(), NOW)
    ready = next(c for c in decision.status["conditions"] if c["type"] == "Ready")
    assert decision.ensure == [] and ready["reason"] == "InvalidSpec"
    assert "spec.serving.engineCache: hostPath / is outside" in ready["message"] and "pipeline.hostPathPrefixes" not in ready["message"]
    default = decide(with_cache({"hostPath": "/var/cache/rtdetr-edge"}), OperatorSettings(), Observed(), NOW)
    assert "Helm value pipeline.hostPathPrefixes" in next(c for c in default.status["conditions"] if c["type"] == "Ready")["message"]


def test_serving_pods_on_a_host_path_get_the_owner_init_container_only_then() -> None:
    settings = OperatorSettings(host_path_prefixes=ALLOWED)
    digest_body = with_cache({"hostPath": "/var/cache/rtdetr-edge/./r50"})
    first = decide(digest_body, settings, Observed(), NOW)
    job = next(m for m in first.ensure if m["kind"] == "Job")
    served = decide(digest_body, settings, Observed(quantize_job=JobObservation(succeeded=True,
                    termination_message=summary(job["metadata"]["annotations"]["rtdetr.io/pipeline-digest"]))), NOW)  # fmt: skip
    pod = next(m for m in served.ensure if m["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert [v["hostPath"] for v in pod["volumes"] if "hostPath" in v] == [{"path": "/var/cache/rtdetr-edge/r50", "type": "DirectoryOrCreate"}]
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["securityContext"]["runAsUser"] == 0 and not init["securityContext"]["allowPrivilegeEscalation"]
    assert init["image"] == pod["containers"][0]["image"]
    assert "10001" in init["command"][-1] and pod["securityContext"]["runAsUser"] == 10001

    plain = build_runtime_deployment(body_of("rtdetr-r50.yaml"), parse_resource(body_of("rtdetr-r50.yaml")), settings,
                                     PipelineRecord.model_validate({"pipelineDigest": "d", "model": {"uri": "pvc://a/m", "digest": "x"},
                                                                    "shapeRanges": {"file": "s"}}))  # fmt: skip
    assert "initContainers" not in plain["spec"]["template"]["spec"]
    assert {"name": "engine-cache", "emptyDir": {}} in plain["spec"]["template"]["spec"]["volumes"], "the shipped default"


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTDETR_OPERATOR_HOST_PATH_PREFIXES", "/var/cache/rtdetr-edge,/data/engines")
    assert settings_from(parse([])).host_path_prefixes == ("/var/cache/rtdetr-edge", "/data/engines")
    monkeypatch.setenv("RTDETR_OPERATOR_DEFAULT_ENGINE_CACHE", '{"hostPath": "/srv/engines"}')
    with pytest.raises(click.BadParameter, match="hostPath /srv/engines is outside") as raised:
        settings_from(parse([]))
    assert raised.value.param_hint == "--default-engine-cache"
    with pytest.raises(click.BadParameter, match="must be an absolute directory other than /"):
        settings_from(parse(["--host-path-prefix", "/"]))
    monkeypatch.setenv("RTDETR_OPERATOR_DEFAULT_ENGINE_CACHE", '{"emptyDir": {}}')
    monkeypatch.setenv("RTDETR_OPERATOR_NAMESPACES", "vision, edge")
    monkeypatch.setenv("RTDETR_OPERATOR_RESYNC_SECONDS", "15")
    flags = settings_from(parse(["--namespace", "other", "--image-pull-secret", "regcred"]))
    assert flags.namespaces == ("other",), "a flag wins over the environment"
    assert flags.resync_seconds == 15.0 and flags.image_pull_secrets == ("regcred",)
    assert settings_from(parse([])).namespaces == ("vision", "edge")
    monkeypatch.setenv("RTDETR_OPERATOR_SERVING_METRICS_FROM", '[{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]')
    assert settings_from(parse([])).serving_metrics_from == ({"namespaceSelector": {"matchLabels": {"team": "obs"}}},)
    monkeypatch.setenv("RTDETR_OPERATOR_SERVING_METRICS_FROM", '{"namespaceSelector": {}}')
    with pytest.raises(click.BadParameter, match="not a JSON list of NetworkPolicy peers"):
        settings_from(parse([]))
    monkeypatch.delenv("RTDETR_OPERATOR_SERVING_METRICS_FROM")
    monkeypatch.setenv("RTDETR_OPERATOR_RESYNC_SECONDS", "often")
    with pytest.raises(click.BadParameter) as refused:
        parse([])
    assert "Invalid value for '--resync-seconds': 'often' is not a valid float range" in refused.value.format_message()


def test_the_chart_defaults_are_the_operator_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """One default, two places to configure it: the chart's rendered environment must mean
    exactly the operator's built-in defaults (engine cache, host paths, pull policy, ...)."""
    (deployment,) = [d for d in render({}) if d["kind"] == "Deployment"]
    for name, value in env_of(deployment).items():
        if name.startswith("RTDETR_OPERATOR_"):
            monkeypatch.setenv(name, value)
    from_chart = settings_from(parse([]))
    defaults = OperatorSettings()
    for field in ("default_engine_cache", "host_path_prefixes", "image_pull_policy", "pvc_mount_root", "job_backoff_limit",
                  "cluster_domain", "namespaces", "image_pull_secrets"):  # fmt: skip
        assert getattr(from_chart, field) == getattr(defaults, field), field
    # Beyond the scrapers (none by default) the chart admits its own operator pod, which follows
    # in-place model swaps on the serving pods' plain port: the peer must select that pod.
    (peer,) = from_chart.serving_metrics_from
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": deployment["metadata"]["namespace"]}}
    assert defaults.serving_metrics_from == ()
