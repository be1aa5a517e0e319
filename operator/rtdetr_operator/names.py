"""Deterministic child names (pure): re-reconciling never creates a second Job."""

from __future__ import annotations

import hashlib

from rtdetr_edge.resource import artifact_key

MAX_NAME = 63  # DNS-1123 label: Job names become pod labels, Service names DNS labels
MANAGED_BY = "rtdetr-edge-operator"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}
"""The label every child carries: what the operator's watches select."""


def _fit(base: str, suffix: str) -> str:
    """``base-suffix`` within 63 characters; long bases are cut and keep a hash for uniqueness."""
    candidate = f"{base}-{suffix}"
    if len(candidate) <= MAX_NAME:
        return candidate
    tag = hashlib.sha256(base.encode()).hexdigest()[:6]
    room = MAX_NAME - len(suffix) - len(tag) - 2
    return f"{base[:room].rstrip('-')}-{tag}-{suffix}"


def pipeline_key(pipeline_digest: str) -> str:
    """The artifact directory name the quantize Job writes to."""
    return artifact_key(pipeline_digest)


def quantize_job_name(model_name: str, pipeline_digest: str) -> str:
    return _fit(model_name, f"quantize-{pipeline_key(pipeline_digest)[:10]}")


def pipeline_configmap_name(model_name: str, pipeline_digest: str) -> str:
    return _fit(model_name, f"pipeline-{pipeline_key(pipeline_digest)[:10]}")


def runtime_name(model_name: str) -> str:
    """Deployment and Service share the resource's name (stable across model versions)."""
    return model_name if len(model_name) <= MAX_NAME else _fit(model_name[:40], "rt")


def selector_labels(model_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "rtdetr-edge", INSTANCE_LABEL: model_name[:MAX_NAME]}


def runtime_pod_labels(model_name: str) -> dict[str, str]:
    """What selects a resource's serving pods: the Deployment's and Service's selector, and the
    scale subresource's (status.serving.selector)."""
    return {**selector_labels(model_name), COMPONENT_LABEL: "runtime"}


def label_selector(labels: dict[str, str]) -> str:
    """``labels`` as a label-selector string (``a=b,c=d``), as the scale subresource reports it."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def common_labels(model_name: str, component: str) -> dict[str, str]:
    return {**selector_labels(model_name), COMPONENT_LABEL: component, **MANAGED}


def served_model_configmap_name(model_name: str) -> str:
    """The ConfigMap naming the model a resource's pods serve (serving.rollout InPlace)."""
    return _fit(model_name, "model")
