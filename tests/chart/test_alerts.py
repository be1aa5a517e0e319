"""The chart's alerts and dashboard, proven by Prometheus' own tools: the PrometheusRule as
rendered by the real helm CLI passes `promtool check rules`, and `promtool test rules` fires every
alert on synthetic series (tests/chart/alerts/alerts_test.yaml) and keeps it silent when healthy.
The dashboard's queries run on a real Prometheus in test_dashboard.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from rtdetr_edge.api.status import PHASES

from .test_chart import CHART, by_kind, render

ALERT_TESTS = Path(__file__).resolve().parent / "alerts" / "alerts_test.yaml"
KSM_CONFIG = CHART / "files" / "kube-state-metrics.yaml"


def promtool() -> str:
    from tests.cluster.build import binary

    return str(binary("promtool"))


def rule_groups(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    documents = render({"metrics": {"prometheusRule": {"enabled": True, **(values or {})}}})
    return list(by_kind(documents, "PrometheusRule")[0]["spec"]["groups"])


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_rules_pass_promtool_check_and_every_alert_fires_in_its_unit_test(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    check = subprocess.run([promtool(), "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run([promtool(), "test", "rules", ALERT_TESTS.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    # Every alert has a case where it fires (and so its annotations are checked word for word).
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert fired == set(alerts(rule_groups())), f"alerts without a firing test: {set(alerts(rule_groups())) - fired}"


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    """The check above can fail: promtool refuses a rule whose expression does not parse."""
    groups = rule_groups()
    groups[0]["rules"][0]["expr"] = "max by (namespace (rtdetr_model_ready) == 0"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    check = subprocess.run([promtool(), "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert check.returncode != 0 and "parse error" in check.stdout + check.stderr, check.stdout + check.stderr


def test_thresholds_and_labels_come_from_values() -> None:
    groups = rule_groups({"p99LatencySeconds": 0.25, "errorRatio": 0.02, "shedRatio": 0.1, "notReadyFor": "30m",
                          "alertLabels": {"team": "vision"}})  # fmt: skip
    rules = alerts(groups)
    assert rules["RTDETRServingLatencyHigh"]["expr"].rstrip().endswith("> 0.25")
    assert rules["RTDETRServingErrors"]["expr"].rstrip().endswith("> 0.02")
    assert rules["RTDETRRequestsShed"]["expr"].rstrip().endswith("> 0.1")
    assert rules["RTDETRServingPodNotReady"]["for"] == "30m"
    assert all(rule["labels"]["team"] == "vision" and rule["labels"]["severity"] for rule in rules.values())


def test_the_kube_state_metrics_config_exports_what_the_model_alerts_read() -> None:
    """files/kube-state-metrics.yaml names rtdetr_model_condition (the model alerts' input) and
    lists every phase the API defines."""
    config = yaml.safe_load(KSM_CONFIG.read_text())
    resource = config["spec"]["resources"][0]
    assert resource["groupVersionKind"] == {"group": "rtdetr.io", "version": "v1alpha1", "kind": "RTDETRModel"}
    metrics = {f"{resource['metricNamePrefix']}_{m['name']}": m for m in resource["metrics"]}
    condition = metrics["rtdetr_model_condition"]["each"]["gauge"]
    assert set(condition["labelsFromPath"]) == {"type", "reason"} and resource["labelsFromPath"].keys() == {"namespace", "name"}
    assert tuple(metrics["rtdetr_model_phase"]["each"]["stateSet"]["list"]) == PHASES
    model_alerts = [r for r in alerts(rule_groups()).values() if "rtdetr_model_condition" in r["expr"]]
    assert len(model_alerts) == 3, json.dumps(model_alerts)[:500]
