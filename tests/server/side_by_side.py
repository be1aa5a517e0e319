"""Side-by-side latency for the server benchmarks: sequential /v1/detect on servers running at
the same time, interleaved repetition by repetition so drift on the machine hits them alike."""

from __future__ import annotations

import statistics
import time

import requests

from ..conftest import ServerProcess


def p50_per_repetition(servers: dict[str, ServerProcess], image: bytes, repetitions: int = 3,
                       requests_each: int = 100, sessions: dict[str, requests.Session] | None = None,
                       urls: dict[str, str] | None = None) -> dict[str, list[float]]:  # fmt: skip
    """Each server's median latency (ms) per repetition, after waiting for every one to be ready
    (``sessions``/``urls``: a server's own client settings and base URL, e.g. TLS and a token)."""
    for server in servers.values():
        server.wait_ready()
    sessions = {name: (sessions or {}).get(name) or requests.Session() for name in servers}
    urls = {name: (urls or {}).get(name) or server.url for name, server in servers.items()}
    results: dict[str, list[float]] = {}
    for _ in range(repetitions):
        for name, server in servers.items():
            times = []
            for _ in range(requests_each):
                started = time.perf_counter()
                response = sessions[name].post(f"{urls[name]}/v1/detect", data=image, headers={"Content-Type": "image/jpeg"})
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            results.setdefault(name, []).append(statistics.median(times) * 1000)
    return results
