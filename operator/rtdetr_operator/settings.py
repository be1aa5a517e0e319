"""Operator settings: one dataclass, filled from flags and ``RTDETR_OPERATOR_*`` environment
variables in ``main()`` (never at import time)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

DEFAULT_IMAGE_REPOSITORY = "ghcr.io/rtdetr-edge/rtdetr-edge"
DEFAULT_TAG = "0.1.0"


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means cluster-wide."""
    runtime_image_gpu: str = f"{DEFAULT_IMAGE_REPOSITORY}:{DEFAULT_TAG}-runtime-gpu"
    """Serving pods with serving.device gpu (CUDA 11.8 + TensorRT 8.5 + paddlepaddle-gpu 2.6.2)."""
    runtime_image_cpu: str = f"{DEFAULT_IMAGE_REPOSITORY}:{DEFAULT_TAG}-runtime-cpu"
    """Serving pods with serving.device cpu."""
    quantize_image: str = f"{DEFAULT_IMAGE_REPOSITORY}:{DEFAULT_TAG}-runtime-gpu"
    """The quantize Job (PaddleSlim ACT runs on the GPU image; it evaluates through TensorRT)."""
    quantize_image_cpu: str = f"{DEFAULT_IMAGE_REPOSITORY}:{DEFAULT_TAG}-runtime-cpu"
    """The quantize Job for serving.device cpu (evaluates through oneDNN, as the pods will serve)."""
    exporter_image: str = f"{DEFAULT_IMAGE_REPOSITORY}:{DEFAULT_TAG}-exporter"
    """PaddleDetection at a pinned commit, for source.checkpoint exports."""
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    pvc_mount_root: str = "/mnt/pvc"
    """Each pvc:// claim is mounted at <root>/<claim> in Jobs and serving pods."""
    default_engine_cache: dict[str, Any] = field(default_factory=lambda: {"emptyDir": {}})
    """Used when a resource's serving.engineCache is absent. emptyDir runs anywhere (writable by
    the pod's user, allowed by Pod Security "restricted"); engines are rebuilt per pod."""
    host_path_prefixes: tuple[str, ...] = ()
    """Host directories a resource's serving.engineCache.hostPath may name (the directory or one
    below it). Empty: no hostPath at all. A cluster admin's choice: a hostPath is a node's disk."""
    serving_metrics_from: tuple[dict[str, Any], ...] = ()
    """NetworkPolicy peers admitted to serving pods that have spec.serving.allowFrom, to scrape
    /metrics (e.g. the monitoring namespace's Prometheus)."""
    resync_seconds: float = 10.0
    """Level-triggered reconcile interval: children are re-read and repaired this often."""
    job_backoff_limit: int = 0
    """Quantize Job retries; a failed ACT run rarely succeeds unchanged, so fail fast by default."""
    job_service_account: str = ""
    runtime_service_account: str = ""
    service_port: int = 8080
    cluster_domain: str = "svc"
    """Endpoints are reported as http://<name>.<namespace>.<cluster_domain>:<port>."""
    progress_log_lines: int = 40
    """Pod log lines read to surface quantization progress."""


def host_path_problem(engine_cache: dict[str, Any] | None, prefixes: tuple[str, ...]) -> str | None:
    """Why an engine cache's hostPath is not allowed (None when it is, or is not a hostPath)."""
    if not engine_cache or "hostPath" not in engine_cache:
        return None
    path = posixpath.normpath(str(engine_cache["hostPath"]))
    if not prefixes:
        return (f"hostPath {path} is not allowed: this operator allows no host directories; use emptyDir or "
                "pvcName, or ask your cluster admin to allow one (Helm value pipeline.hostPathPrefixes)")  # fmt: skip
    for prefix in prefixes:
        prefix = posixpath.normpath(prefix)
        if path == prefix or path.startswith(prefix + "/"):
            return None
    return (f"hostPath {path} is outside the host directories this operator allows ({', '.join(prefixes)}); "
            "use one of them, emptyDir or pvcName")  # fmt: skip
