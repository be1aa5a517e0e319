"""The accuracy gate: may a quantized model replace the FP32 baseline? A pure decision."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

WITHIN_BUDGET = "WithinBudget"
DROP_EXCEEDS_BUDGET = "DropExceedsBudget"


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str  # a condition reason: WithinBudget | DropExceedsBudget
    baseline_map: float
    candidate_map: float
    map_drop: float
    max_map_drop: float
    message: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def accuracy_gate(baseline_map: float, candidate_map: float, max_map_drop: float) -> GateVerdict:
    """Pass when ``baseline - candidate <= max_map_drop`` (all in mAP points, IoU .50:.95).

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
    passed = drop <= max_map_drop + 1e-9
    comparison = "<=" if passed else ">"
    message = (
        f"mAP {baseline_map:.1f} -> {candidate_map:.1f} "
        f"(drop {drop:.1f} {comparison} {max_map_drop:g})"
    )
    if not passed:
        message += "; the quantized model is not deployed"
    return GateVerdict(
        passed=passed,
        reason=WITHIN_BUDGET if passed else DROP_EXCEEDS_BUDGET,
        baseline_map=round(baseline_map, 3),
        candidate_map=round(candidate_map, 3),
        map_drop=round(drop, 3),
        max_map_drop=max_map_drop,
        message=message,
    )
