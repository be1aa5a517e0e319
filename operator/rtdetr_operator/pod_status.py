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
        where = f"pod {pod.get('metadata', {}).get('name', '')}" + (f" {kind}{container.get('name')}" if kind else "")
        if out_of_memory(container):
            limit = memory_limit(pod, str(container.get("name")))
            restarts = int(container.get("restartCount") or 0)
            return "OOMKilled", (f"{where}: container {container.get('name')} was killed for using more memory than "
                                 + (f"its limit ({limit})" if limit else "the node had (no limit set)")
                                 + (f", {restarts} restarts" if restarts else ""))  # fmt: skip
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_CONTAINER_REASONS:
            parts = [where, str(waiting.get("message") or ""), _last_exit(container)]
            return str(waiting["reason"]), "; ".join(p for p in parts if p)
    return "", ""


def out_of_memory(container: dict[str, Any]) -> bool:
    """The kernel killed the container's last run for its memory and it is not ready again (it
    waits to restart, or starts again with the same limit: it will be killed again)."""
    terminated = (container.get("state") or {}).get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    return terminated.get("reason") == "OOMKilled" and not container.get("ready")


def memory_limit(pod: dict[str, Any], container: str) -> str:
    spec = pod.get("spec") or {}
    for declared in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if declared.get("name") == container:
            return str(((declared.get("resources") or {}).get("limits") or {}).get("memory") or "")
    return ""


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
