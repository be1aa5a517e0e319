"""Load shedding on a real server process: a burst larger than the queue-time budget allows is
answered at once with 503 + Retry-After for the excess, every accepted request waited no longer
than the budget, readiness stays up, and the shed requests are counted."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from rtdetr_edge.api.spec import IN_FLIGHT_METRIC

from ..conftest import start_server

BUDGET_MILLIS = 100
BURST = 48


def metric_total(url: str, name: str) -> float:
    """The sum of a metric's samples (all label sets) as the server exports it now."""
    total = 0.0
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith((f"{name}{{", f"{name} ")):
            total += float(line.split()[-1])
    return total


def test_a_burst_is_shed_with_503_and_retry_after_and_accepted_requests_keep_the_queue_budget(
    tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]
) -> None:
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--max-queue-millis", str(BUDGET_MILLIS),
                          "--max-batch-size", "1", "--batch-window-micros", "0")  # fmt: skip
    try:
        server.wait_ready()
        image = fixture_images[0].read_bytes()
        session = requests.Session()
        readiness: list[int] = []
        in_flight: list[float] = []  # what an autoscaler's pods metric reads
        bursting = threading.Event()

        def probe() -> None:  # what the kubelet and Prometheus see while the burst runs
            while bursting.is_set():
                readiness.append(requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code)
                in_flight.append(metric_total(server.url, IN_FLIGHT_METRIC))

        def detect(_: int) -> requests.Response:
            return requests.post(f"{server.url}/v1/detect", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)

        first = session.post(f"{server.url}/v1/detect", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)
        print(f"one image: {first.json()['timing_ms']}")
        bursting.set()
        prober = threading.Thread(target=probe)
        prober.start()
        with ThreadPoolExecutor(BURST) as pool:
            responses = list(pool.map(detect, range(BURST)))
        bursting.clear()
        prober.join()

        accepted = [r for r in responses if r.status_code == 200]
        shed = [r for r in responses if r.status_code == 503]
        assert len(accepted) + len(shed) == BURST, sorted({r.status_code for r in responses})
        assert accepted and shed, f"{len(accepted)} accepted, {len(shed)} shed"
        for response in shed:
            assert response.json()["code"] == "overloaded" and "queue budget" in response.json()["error"], response.text
            assert int(response.headers["Retry-After"]) >= 1
        queued = [r.json()["timing_ms"]["queue"] for r in accepted]
        assert max(queued) <= BUDGET_MILLIS, f"an accepted request waited {max(queued)} ms (budget {BUDGET_MILLIS} ms)"
        assert readiness and set(readiness) == {200}, f"readiness flapped under overload: {sorted(set(readiness))}"
        assert metric_total(server.url, "rtdetr_shed_requests_total") == len(shed)
        # Requests count from admission until answered (a request shed at batch formation did wait);
        # those refused on arrival never do. All answered: none left.
        assert 1 <= max(in_flight) <= BURST, f"in-flight gauge peaked at {max(in_flight)}"
        assert metric_total(server.url, IN_FLIGHT_METRIC) == 0
        print(f"burst of {BURST}: {len(accepted)} accepted (queue p100 {max(queued):.1f} ms), {len(shed)} shed")
    finally:
        server.stop()
