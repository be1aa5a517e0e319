"""Server process lifecycle: not ready until warm-up, restart reuses the cache,
SIGTERM drains in-flight requests, a failed warm-up exits with its cause."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from filelock import FileLock

from rtdetr_edge.engine_cache import EngineCache
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.warmup import warm_up

from ..conftest import start_server


def metric(url: str, name: str) -> float:
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def wait_live(url: str, process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            requests.get(f"{url}/v2/health/live", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("server never became live")


def test_not_ready_until_warm_up_then_ready(tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]) -> None:
    # Hold the engine entry's lock, as another pod on the node building it would: warm-up
    # must wait, and the server must say "live but not ready" meanwhile.
    cache = EngineCache(tmp_path / "cache")
    key = warm_up(tiny_model_dir, PredictorSettings(max_batch_size=4), cache.root)  # the server's settings
    key.predictor.close()
    with FileLock(str(cache.locks_dir / f"{key.report.engine_key}.lock")):
        server = start_server(tiny_model_dir, cache.root, tmp_path)
        try:
            wait_live(server.url, server.process)
            ready = requests.get(f"{server.url}/v2/health/ready", timeout=5)
            assert ready.status_code == 503 and ready.json()["ready"] is False
            assert requests.get(f"{server.url}/v2/models/rtdetr/ready", timeout=5).status_code == 503
            early = requests.post(
                f"{server.url}/v1/detect",
                data=fixture_images[0].read_bytes(),
                headers={"Content-Type": "image/jpeg"},
                timeout=5,
            )
            assert early.status_code == 503 and early.json()["code"] == "not_ready"
            assert metric(server.url, "rtdetr_model_ready") == 0.0
            assert metric(server.url, 'rtdetr_rejected_requests_total{code="not_ready"}') == 1.0
            assert " ERROR " not in server.log(), "a request during warm-up is expected, not an error"
        except BaseException:
            server.stop()
            raise
    try:
        server.wait_ready()
        assert metric(server.url, "rtdetr_model_ready") == 1.0
    finally:
        assert server.stop() == 0


def test_restart_with_the_same_cache_reuses_the_engine(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = start_server(tiny_model_dir, tmp_path / "cache", tmp_path)
    try:
        first.wait_ready()
        assert metric(first.url, 'rtdetr_shape_collection_total{result="not-needed"}') == 1.0
        assert metric(first.url, 'rtdetr_engine_cache_total{result="built"}') == 1.0
    finally:
        assert first.stop() == 0
    second = start_server(tiny_model_dir, tmp_path / "cache", tmp_path)
    try:
        second.wait_ready()
        assert metric(second.url, 'rtdetr_engine_cache_total{result="hit"}') == 1.0
        assert metric(second.url, 'rtdetr_engine_cache_total{result="built"}') == 0.0
    finally:
        assert second.stop() == 0
    assert "shapes not-needed, engine cache hit" in second.log()


def test_sigterm_drains_in_flight_requests(tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]) -> None:
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path)
    server.wait_ready()
    data = fixture_images[0].read_bytes()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/v1/detect")
    connection.putheader("Content-Type", "image/jpeg")
    connection.putheader("Content-Length", str(len(data)))
    connection.endheaders()
    connection.send(data[:1000])  # the request is in flight: headers and part of the body sent
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.process.poll() is None, "the server must wait for the in-flight request"
    connection.send(data[1000:])
    response = connection.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("content-type") == "application/json"
    server.process.wait(30)
    assert server.process.returncode == 0, server.log()


def test_sigterm_during_warm_up_exits_0(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A pod deleted while it warms up (a rollout superseded, a node drained): a clean exit 0,
    not SIGABRT (134) from the interpreter finalizing under Paddle's warm-up thread."""
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--max-batch-size", "16")
    try:
        wait_live(server.url, server.process)
        assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503, "still warming up"
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0, server.log()
    finally:
        server.stop()
    assert "stopped on SIGTERM during warm-up" in server.log(), "the signal must have come during warm-up"


def test_failed_warm_up_exits_with_the_cause(tiny_model_dir: Path, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "rtdetr_edge.cli", "serve", "--model", str(tiny_model_dir),
        "--cache-dir", str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--precision", "int8",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: precision int8 needs a quantized model"), result.stderr


def test_sigterm_with_a_shutdown_delay_keeps_serving_while_not_ready(
    tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]
) -> None:
    """What pods get: new connections are still answered for the delay (endpoints are being
    updated everywhere), readiness already says no, then a clean exit."""
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--shutdown-delay-seconds", "3")
    server.wait_ready()
    data = fixture_images[0].read_bytes()
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.3)
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503
    assert requests.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200
    answered = 0
    while time.monotonic() - signalled < 2.5:
        response = requests.post(f"{server.url}/v1/detect", data=data, headers={"Content-Type": "image/jpeg"}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["connection"] == "close", "keep-alive clients must reconnect (to another pod)"
        answered += 1
    assert answered >= 3
    server.process.wait(30)
    assert server.process.returncode == 0, server.log()
    assert 2.9 < time.monotonic() - signalled, "the listener stayed open for the whole delay"
