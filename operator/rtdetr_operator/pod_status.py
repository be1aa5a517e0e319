"""Why pods are not running, read from their status as `kubectl describe` shows it (pure)."""

from __future__ import annotations

from typing import Any

# Reasons that will not fix themselves quickly and that a user must hear about.
STUCK_CONTAINER_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
    "CrashLoopBackOff", "RunContainerError",
})  # fmt: skip
MESSAGE_TAIL = 400


def _last_exit(container: dict[str, Any]) -> str:
    terminated = (container.get("lastState") or {}).get("terminated") or {}
    if not terminated:
        return ""
    reason = terminated.get("reason") or "Error"
    text = f"last exit {terminated.get('exitCode')} ({reason})"
    if terminated.get("message"):
        lines = str(terminated["message"]).strip().splitlines()
        text += ": " + " | ".join(lines[-3:])[-MESSAGE_TAIL:]
    return text


def pod_problem(pod: dict[str, Any]) -> tuple[str, str]:
    """(reason, message) when ``pod`` cannot be scheduled, cannot start or keeps failing;
    ("", "") otherwise. A crash loop's message carries the last exit and its termination
    message (the cause our commands print last)."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("reason") or "Unschedulable"), str(condition.get("message") or "")
    containers = [(c, "init container ") for c in status.get("initContainerStatuses") or []]
    containers += [(c, "") for c in status.get("containerStatuses") or []]
    for container, kind in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_CONTAINER_REASONS:
            where = f"pod {pod.get('metadata', {}).get('name', '')}" + (f" {kind}{container.get('name')}" if kind else "")
            parts = [where, str(waiting.get("message") or ""), _last_exit(container)]
            return str(waiting["reason"]), "; ".join(p for p in parts if p)
    return "", ""


def replica_failure(deployment: dict[str, Any]) -> str:
    """Why the ReplicaSet cannot create pods (quota, Pod Security, a webhook), or ""."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return str(condition.get("message") or condition.get("reason") or "the ReplicaSet cannot create pods")
    return ""


def deployment_stalled(deployment: dict[str, Any]) -> str:
    """The Deployment controller's verdict after progressDeadlineSeconds, or ""."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return str(condition.get("message") or "the rollout exceeded its progress deadline")
    return ""
