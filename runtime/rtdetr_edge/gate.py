"""The accuracy gate: may a quantized model replace the FP32 baseline? A pure decision."""

from __future__ import annotations

import math
from typing import Protocol

from rtdetr_edge.api.job import Accuracy, GateVerdict

WITHIN_BUDGET = "WithinBudget"
DROP_EXCEEDS_BUDGET = "DropExceedsBudget"
BASELINE_TOO_LOW = "BaselineTooLow"
MAP_DECIMALS = 2
"""The mAPs are judged as reported (status.accuracy): the Job and the operator, which re-judges
them when the budget changes, must reach the same verdict from the same numbers."""
DEFAULT_MIN_BASELINE_MAP = 1.0
"""Below this the FP32 model detects next to nothing on the dataset (wrong categoryIds, labels
or images), and any candidate would "pass" a drop budget measured against it."""


NOT_DEPLOYED = "; the quantized model is not deployed"


def reported_map(value: float) -> float:
    """An mAP as the pipeline reports it and the gate judges it."""
    return round(value, MAP_DECIMALS)


def accuracy_gate(
    baseline_map: float, candidate_map: float, max_map_drop: float, min_baseline_map: float = DEFAULT_MIN_BASELINE_MAP
) -> GateVerdict:
    """Pass when ``baseline - candidate <= max_map_drop`` (all in mAP points, IoU .50:.95, rounded
    to ``MAP_DECIMALS``) and the baseline itself scores at least ``min_baseline_map`` (0 turns that
    check off).

    A candidate better than the baseline has a negative drop and passes. The
    message is the sentence shown in the resource's condition, e.g.
    ``mAP 53.1 -> 53.0 (drop 0.1 <= 0.5)``.
    """
    for name, value in (("baseline_map", baseline_map), ("candidate_map", candidate_map), ("max_map_drop", max_map_drop)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if max_map_drop < 0:
        raise ValueError(f"max_map_drop must be >= 0, got {max_map_drop}")
    baseline_map, candidate_map = reported_map(baseline_map), reported_map(candidate_map)
    drop = baseline_map - candidate_map
    within = drop <= max_map_drop + 1e-9
    comparison = "<=" if within else ">"
    message = (
        f"mAP {baseline_map:.1f} -> {candidate_map:.1f} "
        f"(drop {drop:.1f} {comparison} {max_map_drop:g})"
    )
    reason = WITHIN_BUDGET if within else DROP_EXCEEDS_BUDGET
    if baseline_map < min_baseline_map:
        reason = BASELINE_TOO_LOW
        message = (
            f"the FP32 baseline scores mAP {baseline_map:.1f} on this dataset (< quantization.minBaselineMap "
            f"{min_baseline_map:g}): the gate cannot judge the quantized model. Check spec.dataset (categoryIds, "
            f"annotations, images); set minBaselineMap: 0 to accept such a baseline ({message})"
        )
    passed = reason == WITHIN_BUDGET
    if not passed:
        message += NOT_DEPLOYED
    return GateVerdict(passed=passed, reason=reason, message=message, max_map_drop=max_map_drop)


class GateBudget(Protocol):
    """What the gate judges with: the resource's quantization spec, or the plan's settings."""

    @property
    def max_map_drop(self) -> float: ...

    @property
    def min_baseline_map(self) -> float: ...


def judge(accuracy: Accuracy, budget: GateBudget) -> GateVerdict:
    """The gate over mAPs as a finished run reported them (its result, status.accuracy), with a
    budget that may differ from the run's: the budget is not part of the pipeline digest, so the
    same model is judged again, by the Job reusing a run and by the operator, in seconds."""
    return accuracy_gate(accuracy.baseline_map, accuracy.quantized_map, budget.max_map_drop, budget.min_baseline_map)
