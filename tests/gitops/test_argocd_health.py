"""The shipped Argo CD health script on Argo CD's own Lua engine (gopher-lua, in the environment
Argo CD gives custom health scripts) and on lupa (C Lua 5.1), which must agree, over the status
shapes the operator writes. The real tier checks the same on statuses the operator wrote
(tests/operator/test_demo_rollout.py)."""

from __future__ import annotations

from typing import Any

import pytest

from .argocd import agrees_with_kstatus, verdicts


def model(generation: int = 2, observed: int | None = 2, **conditions: tuple[str, str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if observed is not None:
        status["observedGeneration"] = observed
    if conditions:
        status["conditions"] = [
            {"type": kind, "status": s, "reason": reason, "message": message}
            for kind, (s, reason, message) in conditions.items()
        ]
    return {"apiVersion": "rtdetr.io/v1alpha1", "kind": "RTDETRModel",
            "metadata": {"name": "m", "generation": generation}, "status": status or None}  # fmt: skip


CASES = [
    ("Progressing", model(observed=None), "Waiting for the rtdetr-edge operator"),
    ("Progressing", model(generation=3, observed=2, Ready=("True", "Serving", "old")), "generation 3"),
    ("Progressing", model(Quantized=("Unknown", "JobRunning", "quantize: 120/500, loss 0.0123"),
                          Ready=("False", "Quantizing", "the pipeline is running")), "Quantizing"),
    ("Progressing", model(Ready=("False", "RollingOut", "1/2 pods ready with this model"),
                          Available=("True", "MinimumReplicasAvailable", "1")), "RollingOut"),
    ("Healthy", model(Ready=("True", "Serving", "serving sha256:abc"),
                      Available=("True", "MinimumReplicasAvailable", "2")), "serving sha256:abc"),
    ("Degraded", model(Ready=("False", "AccuracyGateFailed",
                              "mAP 53.1 -> 51.0 (drop 2.1 > 0.5); the previous model keeps serving"),
                       Available=("True", "MinimumReplicasAvailable", "2"),
                       Stalled=("True", "AccuracyGateFailed", "mAP 53.1 -> 51.0")), "previous model keeps serving"),
    ("Degraded", model(Ready=("False", "InvalidSpec", "spec.arch must be one of …"),
                       Stalled=("True", "InvalidSpec", "spec.arch must be one of …")), "InvalidSpec"),
    ("Degraded", model(Ready=("False", "QuantizationFailed", "out of GPU memory"),
                       Stalled=("True", "QuantizationFailed", "out of GPU memory")), "out of GPU memory"),
    ("Degraded", model(Ready=("False", "ApplyFailed", "Job x: exceeded quota: gpu-team (403)"),
                       Stalled=("True", "ApplyFailed", "Job x: exceeded quota")), "exceeded quota"),
    ("Degraded", model(Ready=("False", "ProgressDeadlineExceeded", 'ReplicaSet "m-1" has timed out progressing.'),
                       Stalled=("True", "ProgressDeadlineExceeded", "")), "timed out progressing"),
    ("Progressing", model(Ready=("False", "Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
                          Stalled=("False", "Progressing", "")), "Insufficient nvidia.com/gpu"),
    ("Missing", model(Ready=("False", "RollingOut", "0/2"),
                      Available=("False", "ReplicasLost", "every serving pod is gone")), "every serving pod is gone"),
    ("Suspended", model(Ready=("True", "ScaledToZero", "serving.replicas is 0")), "replicas is 0"),
]  # fmt: skip


@pytest.mark.parametrize(("expected", "obj", "fragment"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_health(expected: str, obj: dict[str, Any], fragment: str) -> None:
    (result,) = verdicts([obj])
    assert result["status"] == expected, result
    assert fragment in result["message"]
    assert agrees_with_kstatus(obj, result)


def test_a_failure_reason_alone_is_not_degraded() -> None:
    """Degraded follows the operator's Stalled condition, not a list of reasons kept in Lua
    (which drifted: it named reasons the operator never stalls on, and missed others)."""
    (result,) = verdicts([model(Ready=("False", "Unschedulable", "0/3 nodes"), Stalled=("False", "Progressing", ""))])
    assert result["status"] == "Progressing"
