"""Progress lines: the ETA comes from the iteration rate, not from setup time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtdetr_edge.progress import PROGRESS_PREFIX, ProgressReporter, eta_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_graph_preparation_is_not_spread_over_the_iterations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ACT spends minutes on graph passes before iteration 1, then ~1 s per iteration: with 10
    of 20 done, 10 s are left (the old estimate said 110 s: "eta 104m" with 2 min left, at scale)."""
    clock = Clock()
    reporter = ProgressReporter(tmp_path / "progress.json", "quantize", 20, min_interval_seconds=0, clock=clock)
    clock.now = 100.0  # graph passes
    assert reporter.update(1)["eta_s"] is None, "one point is no rate"
    for done in range(2, 11):
        clock.now += 1.0
        state = reporter.update(done, loss=0.5)
    assert state["eta_s"] == 10.0 and state["elapsed_s"] == 109.0
    written = json.loads((tmp_path / "progress.json").read_text())
    assert written["eta_s"] == 10.0 and written["loss"] == 0.5
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(PROGRESS_PREFIX + " {")


@pytest.mark.parametrize(
    ("origin", "now", "done", "total", "eta"),
    [(None, 5.0, 3, 10, None), ((2.0, 1), 2.0, 1, 10, None), ((2.0, 1), 6.0, 5, 10, 5.0), ((0.0, 1), 9.0, 10, 10, 0.0)],
)
def test_eta_seconds(origin: tuple[float, int] | None, now: float, done: int, total: int, eta: float | None) -> None:
    assert eta_seconds(origin, now, done, total) == eta
