"""A real Prometheus (and kube-state-metrics) for the monitoring tests, from the Go modules in
tests/cluster/go: started on loopback with a throwaway TSDB, stopped at the end."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

from rtdetr_edge.dev.ports import free_port
from tests.cluster.build import binary


def wait_http(url: str, log: Path, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} did not start: {log.read_text(errors='replace')[-3000:]}")


@contextmanager
def process(command: list[str], log: Path, ready_url: str, what: str) -> Iterator[None]:
    with log.open("w") as stream:
        running = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
        try:
            wait_http(ready_url, log, what)
            yield
        finally:
            running.terminate()
            try:
                running.wait(timeout=30)
            except subprocess.TimeoutExpired:
                running.kill()


@contextmanager
def prometheus(workdir: Path, targets: dict[str, tuple[str, dict[str, str]]], rules: list[dict[str, Any]] | None = None) -> Iterator[str]:
    """Prometheus scraping each ``job → (host:port, target labels)`` every second and evaluating
    ``rules`` (rule groups) every second; yields its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [address], "labels": labels}]}
                           for job, (address, labels) in targets.items()],
    }  # fmt: skip
    if rules:
        (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}, sort_keys=False))
        config["rule_files"] = [str(workdir / "rules.yaml")]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [str(binary("prometheus")), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with process(command, workdir / "prometheus.log", f"{url}/-/ready", "Prometheus"):
        yield url


@contextmanager
def kube_state_metrics(workdir: Path, kubeconfig: Path, config_file: Path) -> Iterator[str]:
    """kube-state-metrics exporting only the custom resources of ``config_file``; yields host:port."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, telemetry = free_port(), free_port()
    command = [str(binary("kube-state-metrics")), f"--kubeconfig={kubeconfig}", "--custom-resource-state-only",
               f"--custom-resource-state-config-file={config_file}", "--host=127.0.0.1", f"--port={port}",
               "--telemetry-host=127.0.0.1", f"--telemetry-port={telemetry}"]  # fmt: skip
    with process(command, workdir / "kube-state-metrics.log", f"http://127.0.0.1:{telemetry}/metrics", "kube-state-metrics"):
        yield f"127.0.0.1:{port}"


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result (an assertion names the query when Prometheus refuses it)."""
    response = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return list(body["data"]["result"])
