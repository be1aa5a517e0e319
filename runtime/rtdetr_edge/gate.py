"""The accuracy gate: may a quantized model replace the FP32 baseline? A pure decision."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

WITHIN_BUDGET = "WithinBudget"
DROP_EXCEEDS_BUDGET = "DropExceedsBudget"
BASELINE_TOO_LOW = "BaselineTooLow"
DEFAULT_MIN_BASELINE_MAP = 1.0
"""Below this the FP32 model detects next to nothing on the dataset (wrong categoryIds, labels
or images), and any candidate would "pass" a drop budget measured against it."""


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str  # a condition reason: WithinBudget | DropExceedsBudget | BaselineTooLow
    baseline_map: float
    candidate_map: float
    map_drop: float
    max_map_drop: float
    message: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def accuracy_gate(
    baseline_map: float, candidate_map: float, max_map_drop: float, min_baseline_map: float = DEFAULT_MIN_BASELINE_MAP
) -> GateVerdict:
    """Pass when ``baseline - candidate <= max_map_drop`` (all in mAP points, IoU .50:.95) and
    the baseline itself scores at least ``min_baseline_map`` (0 turns that check off).

    A candidate better than the baseline has a negative drop and passes. The
    message is the sentence shown in the resource's condition, e.g.
    ``mAP 53.1 -> 53.0 (drop 0.1 <= 0.5)``.
    """
    for name, value in (("baseline_map", baseline_map), ("candidate_map", candidate_map), ("max_map_drop", max_map_drop)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if max_map_drop < 0:
        raise ValueError(f"max_map_drop must be >= 0, got {max_map_drop}")
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
        message += "; the quantized model is not deployed"
    return GateVerdict(
        passed=passed,
        reason=reason,
        baseline_map=round(baseline_map, 3),
        candidate_map=round(candidate_map, 3),
        map_drop=round(drop, 3),
        max_map_drop=max_map_drop,
        message=message,
    )
