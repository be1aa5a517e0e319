"""The optional export Job for ``source.checkpoint`` (pure builders).

Runs PaddleDetection's ``tools/export_model.py ... trt=True`` in the ``exporter``
image and writes the inference model next to the pipeline's artifacts, under a
temporary name renamed when complete.
"""

from __future__ import annotations

from typing import Any

from rtdetr_edge.resource import RTDETRModel
from rtdetr_operator.manifests import (
    _claim_volumes,
    _security_context,
    build_job,
    device_env,
    device_resources,
    job_pod_selector,
    placement_fields,
    pod_spec,
    pvc_path,
)
from rtdetr_operator.names import _fit, common_labels, pipeline_key
from rtdetr_operator.settings import OperatorSettings

EXPORT_ANNOTATION = "rtdetr.io/exported-model"
PADDLEDETECTION_HOME = "/opt/PaddleDetection"
# PaddleDetection's RT-DETR configs, by the resource's arch.
ARCH_CONFIGS = {
    "r18vd": "rtdetr_r18vd_6x_coco.yml",
    "r34vd": "rtdetr_r34vd_6x_coco.yml",
    "r50vd": "rtdetr_r50vd_6x_coco.yml",
    "r50vd_m": "rtdetr_r50vd_m_6x_coco.yml",
    "r101vd": "rtdetr_r101vd_6x_coco.yml",
    "hgnetv2_l": "rtdetr_hgnetv2_l_6x_coco.yml",
    "hgnetv2_x": "rtdetr_hgnetv2_x_6x_coco.yml",
    "hgnetv2_h": "rtdetr_hgnetv2_h_6x_coco.yml",
}


def export_job_name(model_name: str, digest: str) -> str:
    return _fit(model_name, f"export-{pipeline_key(digest)[:10]}")


def exported_model_uri(model: RTDETRModel, digest: str) -> str:
    """Where the export lands: beside the pipeline's artifact directory."""
    base = model.spec.artifacts.rstrip("/")
    config = ARCH_CONFIGS[model.spec.arch].removesuffix(".yml")
    return f"{base}/{model.namespace}/{model.name}/export-{pipeline_key(digest)}/{config}"


def build_export_job(body: dict[str, Any], model: RTDETRModel, digest: str, settings: OperatorSettings) -> dict[str, Any]:
    spec = model.spec
    assert spec.source.checkpoint is not None
    config = ARCH_CONFIGS[spec.arch]
    out_dir = pvc_path(exported_model_uri(model, digest), settings.pvc_mount_root).rsplit("/", 1)[0]
    weights = pvc_path(spec.source.checkpoint, settings.pvc_mount_root)
    use_gpu = "true" if spec.serving.device == "gpu" else "false"
    script = (
        'set -eu; out="$1"; rm -rf "$out.partial"; '
        f'python {PADDLEDETECTION_HOME}/tools/export_model.py -c {PADDLEDETECTION_HOME}/configs/rtdetr/{config} '
        f'-o weights="$2" trt=True use_gpu={use_gpu} --output_dir "$out.partial"; '
        'rm -rf "$out"; mv "$out.partial" "$out"'
    )
    volumes, mounts = _claim_volumes(model, settings)
    volumes.append({"name": "scratch", "emptyDir": {}})
    mounts.append({"name": "scratch", "mountPath": "/tmp"})
    labels = {**common_labels(model.name, "export"), "rtdetr.io/pipeline-key": pipeline_key(digest)}
    container = {
        "name": "export",
        "image": settings.exporter_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["sh", "-c", script, "export"],
        "args": [out_dir, weights],
        "env": [{"name": "HOME", "value": "/tmp"}, *device_env(spec.serving.device)],
        "resources": device_resources(spec.compression.resources, spec.serving.device),
        "volumeMounts": mounts,
        "securityContext": _security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    placement = placement_fields(spec.compression, spec.serving.device, job_pod_selector(model.name, "export"))
    pod = pod_spec([container], volumes, settings, settings.job_service_account, placement, restartPolicy="Never")
    return build_job(body, model, export_job_name(model.name, digest), digest, labels, pod, settings)
