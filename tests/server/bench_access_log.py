"""Access-log overhead, side by side in one run: two servers on the tiny model, one with
--access-log, 3 x 100 sequential /v1/detect each (p50 per repetition).

    .venv/bin/python tests/server/bench_access_log.py
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rtdetr_edge.dev.demo import ensure_tiny_model  # noqa: E402
from tests.conftest import FIXTURE_IMAGES, start_server  # noqa: E402
from tests.server.side_by_side import p50_per_repetition  # noqa: E402

work = Path(tempfile.mkdtemp())
model = ensure_tiny_model(work / "tiny", seed=0)
image = FIXTURE_IMAGES[0].read_bytes()
servers = {name: start_server(model, work / "cache", work, *flags) for name, flags in (("off", []), ("on ", ["--access-log"]))}
try:
    results = p50_per_repetition(servers, image)
finally:
    for s in servers.values(): s.stop()
for name, meds in results.items():
    print(f"access log {name}: p50 per repetition {', '.join(f'{m:.2f}' for m in meds)} ms")
