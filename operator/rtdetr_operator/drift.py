"""Drift (pure): does a live object still hold every field we apply?

The operator server-side applies its Deployment, Service and ConfigMaps only when this says no, so an idle
resource costs the API server nothing, while a `kubectl edit`/`scale` of a field we own is seen
(the object arrives through the watch) and reverted at the next reconcile. Fields the server or
other managers add (defaults, status, an HPA's or a mesh's annotations) are not drift.
"""

from __future__ import annotations

from typing import Any


def holds(desired: Any, live: Any) -> bool:
    """Every field of ``desired`` is in ``live`` with the same value (lists item by item)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(key in live and holds(value, live[key]) for key, value in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(holds, desired, live))
    return bool(desired == live)


def drifted(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """True when ``desired`` must be (re-)applied: the object is missing or lost a field of ours."""
    if live is None:
        return True
    content = [key for key in desired if key not in ("apiVersion", "kind")]  # metadata, spec, a ConfigMap's data
    return not all(holds(desired[key], live.get(key)) for key in content)


def releases_field(desired: dict[str, Any], live: dict[str, Any] | None, manager: str, path: tuple[str, ...]) -> bool:
    """``desired`` leaves out the field at ``path`` while ``manager`` alone holds it on ``live``:
    applying ``desired`` as ``manager`` would delete that field. False when ``desired`` sets it,
    when there is no live object yet, or when another manager holds it too."""
    if live is None:
        return False
    node: Any = desired
    for key in path:
        if not isinstance(node, dict) or key not in node:
            break
        node = node[key]
    else:
        return False  # desired sets it

    def holds_path(fields: dict[str, Any]) -> bool:
        for key in path:
            fields = fields.get(f"f:{key}")
            if not isinstance(fields, dict):
                return False
        return True

    entries = (live.get("metadata") or {}).get("managedFields") or []
    holders = {entry.get("manager") for entry in entries if holds_path(entry.get("fieldsV1") or {})}
    return holders == {manager}
