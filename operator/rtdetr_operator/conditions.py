"""cert-manager-style conditions (pure): keyed by type; lastTransitionTime moves only when
``status`` flips; observedGeneration always set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rtdetr_edge.api.status import CONDITION_TYPES


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def set_conditions(
    current: list[dict[str, Any]], updates: list[Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    """Apply ``updates`` to ``current``; unrelated condition types are kept as they are. A later
    update of a type replaces an earlier one; either way its lastTransitionTime is judged against
    ``current`` (a status that ends as it began keeps its time, whatever was decided between)."""
    by_type = {c.get("type"): dict(c) for c in current if isinstance(c, dict)}
    original = dict(by_type)
    for update in updates:
        previous = original.get(update.type)
        transition = now
        if previous is not None and previous.get("status") == update.status and previous.get("lastTransitionTime"):
            transition = previous["lastTransitionTime"]
        by_type[update.type] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
    ordered = [by_type[t] for t in CONDITION_TYPES if t in by_type]
    ordered += [c for t, c in by_type.items() if t not in CONDITION_TYPES]
    return ordered


def find(conditions: list[dict[str, Any]], condition_type: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == condition_type), None)


def changed(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions whose status or reason differ (what deserves a Kubernetes Event)."""
    result = []
    for condition in after:
        old = find(before, condition["type"])
        if old is None or (old.get("status"), old.get("reason")) != (condition["status"], condition["reason"]):
            result.append(condition)
    return result
