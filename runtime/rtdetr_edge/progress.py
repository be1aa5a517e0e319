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
from collections.abc import Callable
from pathlib import Path

from rtdetr_edge.files import write_text_atomic

log = logging.getLogger(__name__)
PROGRESS_PREFIX = "RTDETR_PROGRESS"


def eta_seconds(origin: tuple[float, int] | None, now: float, done: int, total: int) -> float | None:
    """Time left at the rate measured since ``origin`` (time, done) — the first finished step, so
    setup before it (ACT's graph passes: minutes) is not spread over the iterations. Pure."""
    if origin is None or done <= origin[1]:
        return None
    started, done_then = origin
    return (now - started) / (done - done_then) * max(0, total - done)


class ProgressReporter:
    def __init__(self, path: Path | None, stage: str, total: int, min_interval_seconds: float = 2.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        self.path = path
        self.stage = stage
        self.total = total
        self.min_interval = min_interval_seconds
        self.clock = clock
        self.started = clock()
        self._last_write = float("-inf")
        self._rate_origin: tuple[float, int] | None = None
        self.state: dict[str, object] = {}

    def update(self, done: int, **extra: object) -> dict[str, object]:
        now = self.clock()
        elapsed = now - self.started
        if done > 0 and self._rate_origin is None:
            self._rate_origin = (now, done)
        eta = eta_seconds(self._rate_origin, now, done, self.total)
        self.state = {
            "stage": self.stage,
            "done": done,
            "total": self.total,
            "elapsed_s": round(elapsed, 1),
            "eta_s": round(eta, 1) if eta is not None else None,
            **extra,
        }
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
