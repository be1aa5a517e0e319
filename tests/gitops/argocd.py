"""Argo CD's verdict on an RTDETRModel, from the health script we ship, computed two ways:

- ``gopher_lua``: Argo CD's own engine (gopher-lua, built from its Go module by
  ``tests.cluster.build``) in the environment Argo CD's controller gives a custom health script
  (package, base, table and a reduced os; a one-second deadline; the status code checked);
- ``lupa``: a C Lua 5.1 interpreter, the quick engine for the hand-written table.

``verdicts`` asserts both agree; the real tier calls it on the status objects the operator wrote.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51

SCRIPT_FILE = Path(__file__).resolve().parents[2] / "gitops" / "argocd" / "health.lua"
SCRIPT = SCRIPT_FILE.read_text()
APPLICATION_EXAMPLE = SCRIPT_FILE.with_name("application.yaml")
# Argo CD's Application CRD comes from this module (its code does not build with Go 1.26 here:
# only its manifests are used). v3.5.0: the newest whose go.mod accepts Go 1.26.
ARGO_CD_MODULE = ("github.com/argoproj/argo-cd/v3", "v3.5.0")


def application_crd() -> Path:
    from ..cluster.build import downloaded_module

    return downloaded_module(*ARGO_CD_MODULE) / "manifests" / "crds" / "application-crd.yaml"


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def lupa(obj: dict[str, Any]) -> dict[str, str]:
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    result = runtime.execute(SCRIPT)
    return {"status": result["status"], "message": result["message"] or ""}


def gopher_lua(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    from ..cluster.build import binary

    lines = "".join(json.dumps(obj) + "\n" for obj in objects)
    done = subprocess.run([str(binary("argocd-lua")), str(SCRIPT_FILE)], input=lines, capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    results = [json.loads(line) for line in done.stdout.splitlines()]
    for result in results:
        assert "error" not in result, f"Argo CD's engine refused the script: {result['error']}"
    return [{"status": r["status"], "message": r.get("message", "")} for r in results]


def verdicts(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Argo CD's verdicts (gopher-lua), after checking lupa gives the same for every object."""
    argo = gopher_lua(objects)
    for obj, verdict in zip(objects, argo):
        assert lupa(obj) == verdict, f"the engines disagree on {json.dumps(obj.get('status'))[:1500]}"
    return argo


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def agrees_with_kstatus(obj: dict[str, Any], verdict: dict[str, str]) -> bool:
    """Argo CD and Flux (kstatus) read the same status the same way: Degraded exactly when
    Stalled=True, Healthy/Suspended exactly when Ready=True at the observed generation."""
    status = obj.get("status") or {}
    current = status.get("observedGeneration") == obj["metadata"].get("generation")
    stalled, ready = condition(obj, "Stalled"), condition(obj, "Ready")
    if verdict["status"] == "Missing":
        return True  # Argo CD's own notion (every pod lost); kstatus has none
    degraded = current and ready is not None and stalled is not None and stalled["status"] == "True"
    healthy = current and ready is not None and ready["status"] == "True"
    expected = "Degraded" if degraded else ("Healthy", "Suspended") if healthy else ("Progressing",)
    return verdict["status"] in expected if isinstance(expected, tuple) else verdict["status"] == expected
