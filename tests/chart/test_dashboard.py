"""The Grafana dashboard's queries against a real Prometheus scraping a real server: every panel
query (with the dashboard's variables filled in as Grafana would) returns series, so no panel
names a metric, label or route the server does not export. The alert rules' serving metrics are
checked against the same scrape, and `promtool check metrics` lints what the server exports."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.cluster.prometheus import prometheus as run_prometheus
from tests.cluster.prometheus import query

from ..conftest import ServerProcess, start_server
from .test_alerts import alerts, promtool, rule_groups
from .test_chart import CHART

DASHBOARD = CHART / "files" / "dashboard.json"
TARGET_LABELS = {"namespace": "vision", "service": "demo", "pod": "demo-0"}  # what a ServiceMonitor's target carries
VARIABLES = {"$namespace": "vision", "$model": "demo", "$__rate_interval": "1m"}
KUBE_STATE_METRICS = {"rtdetr_model_condition"}  # the model alerts' input, from kube-state-metrics


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def filled(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a dashboard variable this test does not know: {expr}"
    return expr


@pytest.fixture(scope="module")
def busy_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, fixture_images: list[Path]) -> Iterator[ServerProcess]:
    """A real server that answered detections, refused a bad request and shed part of a burst:
    every labelled counter the dashboard reads has a series."""
    work = tmp_path_factory.mktemp("dashboard-server")
    server = start_server(tiny_model_dir, work / "cache", work, "--max-queue-millis", "50", "--max-batch-size", "1",
                          "--batch-window-micros", "0")  # fmt: skip
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def load(server: ServerProcess, image: bytes, stop: threading.Event) -> None:
    """Traffic while Prometheus scrapes: detections, a burst that sheds, a bad request."""
    def detect(_: int) -> int:
        return requests.post(f"{server.url}/v1/detect", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60).status_code

    with ThreadPoolExecutor(16) as pool:
        while not stop.is_set():
            codes = list(pool.map(detect, range(32)))
            assert 200 in codes, codes
            requests.post(f"{server.url}/v1/detect", data=b"not an image", timeout=10)
            time.sleep(0.5)


@pytest.fixture(scope="module")
def prometheus(busy_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    target = busy_server.url.removeprefix("http://")
    with run_prometheus(tmp_path_factory.mktemp("prometheus"), {"demo": (target, TARGET_LABELS)}) as url:
        yield url


def test_every_dashboard_query_returns_series_from_a_real_scrape(
    prometheus: str, busy_server: ServerProcess, fixture_images: list[Path]
) -> None:
    stop = threading.Event()
    traffic = threading.Thread(target=load, args=(busy_server, fixture_images[0].read_bytes(), stop), daemon=True)
    traffic.start()
    try:
        pending = dict((filled(expr), title) for title, expr in dashboard_queries())
        deadline = time.monotonic() + 60  # rates need two scrapes of a changed counter
        while pending and time.monotonic() < deadline:
            pending = {expr: title for expr, title in pending.items() if not query(prometheus, expr)}
            time.sleep(1)
    finally:
        stop.set()
        traffic.join(timeout=120)
    assert not pending, f"panels whose query found nothing in a real scrape: {json.dumps(pending, indent=1)}"
    assert query(prometheus, 'up{job="demo"}')[0]["value"][1] == "1"


def test_a_misspelt_query_finds_nothing(prometheus: str) -> None:
    """The check above can fail: a metric the server does not export gives no series."""
    assert not query(prometheus, filled('sum by (service) (rtdetr_queue_lenght{namespace=~"$namespace"})'))


def test_alert_rules_read_metrics_the_server_exports(busy_server: ServerProcess) -> None:
    text = requests.get(f"{busy_server.url}/metrics", timeout=10).text
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    suffixes = ("_bucket", "_count", "_sum", "_total")
    for name, rule in alerts(rule_groups()).items():
        for metric in set(re.findall(r"\b(rtdetr_[a-z_]+)\b", rule["expr"])) - KUBE_STATE_METRICS:
            family = next((metric.removesuffix(s) for s in suffixes if metric.endswith(s) and metric.removesuffix(s) in exported), metric)
            assert family in exported, f"{name} reads {metric}, which the server does not export"
    dashboard = {m for _, expr in dashboard_queries() for m in re.findall(r"\b(rtdetr_[a-z_]+)\b", expr)}
    lint = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, f"promtool check metrics: {lint.stdout}{lint.stderr}"
    assert dashboard, "the dashboard reads no rtdetr_ metric"
