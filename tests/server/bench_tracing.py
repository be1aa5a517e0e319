"""Tracing overhead, side by side in one run: three servers on the tiny model — tracing off,
on with nothing sampled (OTEL_TRACES_SAMPLER_ARG=0), on with every request traced and exported
by OTLP/HTTP to a local collector — 3 x 100 sequential /v1/detect each (p50 per repetition).

    .venv/bin/python tests/server/bench_tracing.py
"""

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rtdetr_edge.dev.demo import ensure_tiny_model  # noqa: E402
from tests.conftest import FIXTURE_IMAGES, start_server  # noqa: E402
from tests.server.side_by_side import p50_per_repetition  # noqa: E402
from tests.server.test_tracing import Collector  # noqa: E402

flags = next((line.split(":", 1)[1].split() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
              if line.startswith("Flags:")), [])  # fmt: skip
print("lscpu flags (ISA):", " ".join(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4"))))
work = Path(tempfile.mkdtemp())
model = ensure_tiny_model(work / "tiny", seed=0)
image = FIXTURE_IMAGES[0].read_bytes()
collector = Collector()
threading.Thread(target=collector.serve_forever, daemon=True).start()
os.environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}", OTEL_TRACES_SAMPLER="traceidratio")
setups = {"off": ([], "1"), "on, none sampled": (["--tracing"], "0"), "on, all sampled + exported": (["--tracing"], "1")}
servers = {}
for name, (args, ratio) in setups.items():
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = ratio
    servers[name] = start_server(model, work / "cache", work, *args)
try:
    results = p50_per_repetition(servers, image)
finally:
    for s in servers.values():
        s.stop()
    collector.shutdown()
for name, meds in results.items():
    print(f"tracing {name}: p50 per repetition {', '.join(f'{m:.2f}' for m in meds)} ms")
print(f"spans received by the collector: {len(collector.spans)} (300 traced requests x 6 spans expected)")
