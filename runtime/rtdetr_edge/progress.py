"""Progress of long stages: written atomically to a small JSON file, and printed to
stdout as ``RTDETR_PROGRESS {json}`` lines.

In a cluster the operator reads the last such line from the quantize Job's pod log
and surfaces it in the resource's status. Writes are rate-limited so a fast loop
does not hammer the disk or the log.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from rtdetr_edge.files import write_text_atomic

log = logging.getLogger(__name__)
PROGRESS_PREFIX = "RTDETR_PROGRESS"


class ProgressReporter:
    def __init__(self, path: Path | None, stage: str, total: int, min_interval_seconds: float = 2.0) -> None:
        self.path = path
        self.stage = stage
        self.total = total
        self.min_interval = min_interval_seconds
        self.started = time.perf_counter()
        self._last_write = 0.0
        self.state: dict[str, object] = {}

    def update(self, done: int, **extra: object) -> dict[str, object]:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - done) if done else None
        self.state = {
            "stage": self.stage,
            "done": done,
            "total": self.total,
            "elapsed_s": round(elapsed, 1),
            "eta_s": round(eta, 1) if eta is not None else None,
            **extra,
        }
        now = time.perf_counter()
        if done >= self.total or now - self._last_write >= self.min_interval:
            self._last_write = now
            self._write()
        return self.state

    def _write(self) -> None:
        print(f"{PROGRESS_PREFIX} {json.dumps(self.state, separators=(',', ':'))}", flush=True)
        if self.path is None:
            return
        write_text_atomic(self.path, json.dumps({**self.state, "updated_unix": round(time.time(), 1)}))


def format_eta(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
