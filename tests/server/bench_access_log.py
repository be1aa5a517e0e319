"""Access-log overhead, side by side in one run: two servers on the tiny model, one with
--access-log, 3 x 100 sequential /v1/detect each (p50 per repetition).

    .venv/bin/python tests/server/bench_access_log.py
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rtdetr_edge.dev.demo import ensure_tiny_model  # noqa: E402
from tests.conftest import FIXTURE_IMAGES, start_server  # noqa: E402

work = Path(tempfile.mkdtemp())
model = ensure_tiny_model(work / "tiny", seed=0)
image = FIXTURE_IMAGES[0].read_bytes()
results = {}
servers = {flag: start_server(model, work / "cache", work, *(["--access-log"] if flag else [])) for flag in (False, True)}
try:
    for s in servers.values(): s.wait_ready()
    sessions = {flag: requests.Session() for flag in servers}
    for rep in range(3):
        for flag, s in servers.items():
            times = []
            for _ in range(100):
                t = time.perf_counter()
                r = sessions[flag].post(f"{s.url}/v1/detect", data=image, headers={"Content-Type": "image/jpeg"})
                times.append(time.perf_counter() - t)
                assert r.status_code == 200
            results.setdefault(flag, []).append(statistics.median(times) * 1000)
finally:
    for s in servers.values(): s.stop()
for flag, meds in results.items():
    print(f"access log {'on ' if flag else 'off'}: p50 per repetition {', '.join(f'{m:.2f}' for m in meds)} ms")
