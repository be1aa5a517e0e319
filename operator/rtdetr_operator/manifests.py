"""Desired children as plain manifest dicts (pure ``build_*`` functions).

Every manifest passes ``kubernetes-validate --strict`` for Kubernetes 1.28 and 1.37
(tests/operator/test_manifests.py).
"""

from __future__ import annotations

import copy
import posixpath
from typing import Any

import yaml

from rtdetr_edge.api.job import PipelinePlan, PipelineRecord
from rtdetr_edge.api.served import SERVED_MODEL_KEY, ServedModel
from rtdetr_edge.api.spec import (
    IN_FLIGHT_METRIC,
    AutoscalingSpec,
    ModelRegistrySpec,
    PodPlacement,
    ServingSpec,
    TracingSpec,
)
from rtdetr_edge.cpu_isa import node_affinity_for
from rtdetr_edge.resource import RTDETRModel, serving_backend
from rtdetr_edge.storage import parse_uri
from rtdetr_operator import GROUP, VERSION
from rtdetr_operator.names import (
    COMPONENT_LABEL,
    common_labels,
    pipeline_configmap_name,
    pipeline_key,
    quantize_job_name,
    runtime_name,
    runtime_pod_labels,
    selector_labels,
    served_model_configmap_name,
)
from rtdetr_operator.settings import OperatorSettings

CONFIG_MOUNT = "/etc/rtdetr-edge"
RESOURCE_FILE = "resource.yaml"
PLAN_FILE = "plan.json"
ENGINE_CACHE_MOUNT = "/var/cache/rtdetr-edge"
RUNTIME_USER = 10001
ANNOTATION_PIPELINE = "rtdetr.io/pipeline-digest"
ANNOTATION_MODEL = "rtdetr.io/model-digest"
CONTAINER_PORT = 8080
GRPC_PORT = 8081
"""The Open Inference Protocol over gRPC (serving.grpc): the pods' and the Service's port (KServe's)."""
MANAGEMENT_PORT = 8082
"""With serving.tls: plain HTTP, health and /metrics only (probes, Prometheus); the port named "metrics"."""
SECRETS_MOUNT = "/etc/rtdetr-edge"
MODEL_FILE_MOUNT = "/etc/rtdetr-edge/model"
"""Where serving pods mount the served-model ConfigMap (serving.rollout InPlace), whole: the
kubelet updates a ConfigMap volume in running pods only without subPath."""
ROLLOUT_STRATEGIES = {
    # Never break what serves: a new pod must be Ready before an old one goes (a spare GPU).
    "Surge": {"maxUnavailable": 0, "maxSurge": 1},
    "InPlace": {"maxUnavailable": 0, "maxSurge": 1},  # models swap in the pods; only other edits replace pods
    # No spare GPU or memory: each pod stops before its replacement starts.
    "Replace": {"maxUnavailable": 1, "maxSurge": 0},
}
# A terminating serving pod keeps answering (not ready) while kube-proxies and load balancers
# drop it from their endpoints, then drains in-flight requests; the grace period covers both.
SHUTDOWN_DELAY_SECONDS = 10  # endpoint removal lags seconds on a busy control plane (5 s lost 2 requests here)
DRAIN_SECONDS = 30
TERMINATION_GRACE_SECONDS = SHUTDOWN_DELAY_SECONDS + DRAIN_SECONDS + 10


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RTDETRModel",
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pvc_path(uri: str, root: str) -> str:
    """Where ``pvc://claim/path`` appears inside our pods."""
    parsed = parse_uri(uri)
    return f"{root}/{parsed.claim}/{parsed.path}".rstrip("/")


def claims(model: RTDETRModel) -> dict[str, bool]:
    """PVC claims the pipeline touches → whether the Job must write to it (the artifacts claim)."""
    spec = model.spec
    uris = [spec.source.inference_model, spec.source.checkpoint, spec.dataset.uri]
    result = {parse_uri(u).claim: False for u in uris if u and u.startswith("pvc://")}
    result[parse_uri(spec.artifacts).claim] = True
    return result


def _quantities(resources: dict[str, Any]) -> dict[str, Any]:
    """Kubernetes quantities as strings (``{'nvidia.com/gpu': 1}`` → ``'1'``)."""
    return {
        section: {name: str(value) for name, value in (values or {}).items()}
        for section, values in resources.items()
        if section in ("limits", "requests") and values
    }


GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"  # the device plugin's "mixed" MIG strategy: nvidia.com/mig-<profile>
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def device_resources(resources: dict[str, Any], device: str) -> dict[str, Any]:
    """The container's resources: on ``gpu`` one GPU unless the spec names GPUs itself, a count of
    ``nvidia.com/gpu`` or a MIG slice (``nvidia.com/mig-1g.10gb``: adding a whole GPU beside it would
    ask the node for both). Without any the NVIDIA device plugin gives the pod no GPU and Paddle
    finds no CUDA device."""
    result = _quantities(resources)
    named = {name for section in ("limits", "requests") for name in result.get(section, {})}
    if device == "gpu" and not any(name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX) for name in named):
        result.setdefault("limits", {})[GPU_RESOURCE] = "1"
    return result


def device_env(device: str) -> list[dict[str, str]]:
    """On ``cpu`` the NVIDIA container runtime must not hand the pod every GPU of the node
    (it does when NVIDIA_VISIBLE_DEVICES is unset in a CUDA image)."""
    return [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}] if device == "cpu" else []


def tracing_env(tracing: TracingSpec | None, model: RTDETRModel) -> list[dict[str, Any]]:
    """OpenTelemetry's standard variables for ``serve --tracing``: where spans go, how many, and
    the resource (the model as the service, its namespace and pod) every backend groups them by."""
    if tracing is None:
        return []
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing.endpoint},
        {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": str(tracing.sample_ratio)},
        {"name": "OTEL_SERVICE_NAME", "value": model.name},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": f"k8s.namespace.name={model.namespace},k8s.pod.name=$(POD_NAME)"},
    ]


def device_tolerations(tolerations: tuple[dict[str, Any], ...], device: str) -> tuple[dict[str, Any], ...]:
    """GPU nodes are commonly tainted ``nvidia.com/gpu:NoSchedule`` (GKE, EKS, the GPU operator):
    a ``gpu`` pod tolerates it unless the spec already says something about that taint."""
    if device != "gpu" or any(t.get("key") == GPU_RESOURCE for t in tolerations):
        return tolerations
    return (*tolerations, dict(GPU_TOLERATION))


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_USER,
        "runAsGroup": RUNTIME_USER,
        "fsGroup": RUNTIME_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _claim_volumes(model: RTDETRModel, settings: OperatorSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Job's PVCs: read-only except the artifacts claim it writes results to."""
    volumes, mounts = [], []
    for index, (claim, needs_write) in enumerate(sorted(claims(model).items())):
        name = f"pvc-{index}"
        read_only = not needs_write
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mounts.append({"name": name, "mountPath": f"{settings.pvc_mount_root}/{claim}", "readOnly": read_only})
    return volumes, mounts


def _engine_cache_volume(model: RTDETRModel, settings: OperatorSettings) -> dict[str, Any]:
    chosen = model.spec.serving.engine_cache
    cache = chosen.as_dict() if chosen is not None else settings.default_engine_cache
    if "hostPath" in cache:
        path = posixpath.normpath(cache["hostPath"])  # the path the allow-list checked
        return {"name": "engine-cache", "hostPath": {"path": path, "type": "DirectoryOrCreate"}}
    if "pvcName" in cache:
        return {"name": "engine-cache", "persistentVolumeClaim": {"claimName": cache["pvcName"]}}
    return {"name": "engine-cache", "emptyDir": dict(cache.get("emptyDir") or {})}


def _engine_cache_owner(image: str, settings: OperatorSettings) -> dict[str, Any]:
    """For a hostPath cache: the kubelet creates the directory root-owned 0755 (fsGroup does not
    apply to hostPath), so serving pods could not write their engines. This init container
    hands it to the serving user, as root with CAP_CHOWN and nothing else."""
    script = f"import os; os.chown({ENGINE_CACHE_MOUNT!r}, {RUNTIME_USER}, {RUNTIME_USER})"
    return {
        "name": "engine-cache-owner",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-c", script],
        "volumeMounts": [{"name": "engine-cache", "mountPath": ENGINE_CACHE_MOUNT}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def require_nodes(affinity: dict[str, Any] | None, requirement: dict[str, Any] | None) -> dict[str, Any] | None:
    """``affinity`` (the spec's) with ``requirement``'s required node terms ANDed into it: the
    scheduler ORs nodeSelectorTerms and ANDs the expressions of one term, so each of the spec's
    terms gets each requirement term's expressions. The rest of the spec's affinity is kept."""
    if requirement is None or not affinity:
        return copy.deepcopy(affinity or requirement) or None
    required = requirement["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    result = copy.deepcopy(affinity)
    node = result.setdefault("nodeAffinity", {})
    own = (node.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [{}]
    terms = [{**term, "matchExpressions": [*(term.get("matchExpressions") or []), *extra.get("matchExpressions", [])]}
             for term in own for extra in required]  # fmt: skip
    node["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": copy.deepcopy(terms)}
    return result


def placement_fields(
    placement: PodPlacement, device: str, pods: dict[str, str], required: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The pod spec's scheduling fields from the spec's ``placement`` for pods labelled ``pods``
    (their selector: what a spread constraint without labelSelector counts), with the device's
    toleration and an operator-``required`` node affinity added."""
    fields: dict[str, Any] = {}
    if placement.node_selector:
        fields["nodeSelector"] = dict(placement.node_selector)
    tolerations = device_tolerations(tuple(placement.tolerations), device)
    if tolerations:
        fields["tolerations"] = [dict(t) for t in tolerations]
    affinity = require_nodes(placement.affinity, required)
    if affinity:
        fields["affinity"] = affinity
    if placement.topology_spread_constraints:
        fields["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": dict(pods)}, **constraint} for constraint in placement.topology_spread_constraints
        ]
    if placement.priority_class_name:
        fields["priorityClassName"] = placement.priority_class_name
    if placement.runtime_class_name:
        fields["runtimeClassName"] = placement.runtime_class_name
    return fields


def pod_spec(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    settings: OperatorSettings,
    service_account: str,
    placement: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """A pod spec for our children: hardened, no API token (none of them calls the API), placed
    as ``placement`` (:func:`placement_fields`) says."""
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": _pod_security_context(),
        "containers": containers,
        "volumes": volumes,
        **extra,
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in settings.image_pull_secrets]
    if service_account:
        spec["serviceAccountName"] = service_account
    spec.update(placement)
    return spec


def job_pod_selector(model_name: str, component: str) -> dict[str, str]:
    """Labels every pod of this resource's ``component`` Jobs carries (quantize or export)."""
    return {**selector_labels(model_name), COMPONENT_LABEL: component}


def build_job(
    body: dict[str, Any], model: RTDETRModel, name: str, digest: str, labels: dict[str, str],
    spec: dict[str, Any], settings: OperatorSettings,
) -> dict[str, Any]:  # fmt: skip
    """A run-once pipeline Job (quantize or export): no retries by default, the spec's deadline."""
    annotations = {ANNOTATION_PIPELINE: digest}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": model.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(body)],
        },
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            # A drained or preempted node (spot reclaim, eviction, node shutdown) is not the run's
            # fault: its pod is replaced without counting against backoffLimit. The replacement
            # starts the stage over (ACT keeps no checkpoint); the deadline still bounds it all.
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
            "activeDeadlineSeconds": model.spec.compression.active_deadline_seconds,
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
        },
    }


def build_pipeline_configmap(body: dict[str, Any], model: RTDETRModel, plan: PipelinePlan) -> dict[str, Any]:
    """The stage config: the resource and the operator's plan (what `rtdetr-edge pipeline` reads)."""
    digest = plan.pipeline_digest
    document = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RTDETRModel",
        "metadata": {"name": model.name, "namespace": model.namespace},
        "spec": body["spec"],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": pipeline_configmap_name(model.name, digest),
            "namespace": model.namespace,
            "labels": common_labels(model.name, "pipeline"),
            "annotations": {ANNOTATION_PIPELINE: digest},
            "ownerReferences": [owner_reference(body)],
        },
        "data": {
            RESOURCE_FILE: yaml.safe_dump(document, sort_keys=True),
            PLAN_FILE: plan.model_dump_json(by_alias=True, indent=2),
        },
    }


def build_quantize_job(body: dict[str, Any], model: RTDETRModel, digest: str, settings: OperatorSettings) -> dict[str, Any]:
    spec = model.spec
    compression = spec.compression
    volumes, mounts = _claim_volumes(model, settings)
    volumes += [
        {"name": "pipeline-config", "configMap": {"name": pipeline_configmap_name(model.name, digest)}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts += [
        {"name": "pipeline-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "scratch", "mountPath": "/tmp"},
    ]
    registry_args, registry_volumes, registry_mounts = registry_access(spec.storage.registry)
    volumes += registry_volumes
    mounts += registry_mounts
    labels = {**common_labels(model.name, "quantize"), "rtdetr.io/pipeline-key": pipeline_key(digest)}
    device = spec.serving.device
    container = {
        "name": "pipeline",
        "image": settings.quantize_image if device == "gpu" else settings.quantize_image_cpu,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["rtdetr-edge", "pipeline", f"{CONFIG_MOUNT}/{RESOURCE_FILE}"],
        "args": [
            "--pvc-root", settings.pvc_mount_root,
            "--device", device,
            "--cache-dir", "/tmp/engine-cache",
            "--download-dir", "/tmp/downloads",
            "--termination-log", "/dev/termination-log",
            "--plan", f"{CONFIG_MOUNT}/{PLAN_FILE}",  # the Job never recomputes it (its spec may name the export)
            *registry_args,
        ],  # fmt: skip
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}, *device_env(device)],
        "resources": device_resources(compression.resources, device),
        "volumeMounts": mounts,
        "securityContext": _security_context(),
        # A crash before the summary is written still leaves its last log lines here.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    placement = placement_fields(compression, device, job_pod_selector(model.name, "quantize"))
    spec = pod_spec([container], volumes, settings, settings.job_service_account, placement, restartPolicy="Never")
    return build_job(body, model, quantize_job_name(model.name, digest), digest, labels, spec, settings)


def isa_bound_level(served: PipelineRecord) -> str | None:
    """The ISA level a served model's numbers are bound to (its gate's), or None when the model is
    portable across levels or its Job recorded none."""
    level = served.measured_on.isa_level if served.measured_on is not None else None
    return level if level and served.model.isa_portable is False else None


def served_model(model: RTDETRModel, settings: OperatorSettings, served: PipelineRecord) -> ServedModel:
    """What the serving pods load for ``served``: where it is mounted, its digest, the shape ranges
    its Job collected (TensorRT, GPU) and, on CPU, the ISA level its gate ran on (a CPU pod refuses
    a model whose numbers differ on its own CPU)."""
    serving = model.spec.serving
    measured_on_isa = served.measured_on.isa_level if serving.device == "cpu" and served.measured_on is not None else None
    if served.model.uri.startswith("oci://"):  # pulled by the pod; its shape ranges travel in the artifact
        return ServedModel(oci=served.model.uri, digest=served.model.digest, pipeline_digest=served.pipeline_digest,
                           measured_on_isa=measured_on_isa)  # fmt: skip
    model_dir = pvc_path(served.model.uri, settings.pvc_mount_root)
    shape_ranges = f"{model_dir.rsplit('/', 1)[0]}/{served.shape_ranges.file}" if served.shape_ranges is not None else None
    return ServedModel(model_dir=model_dir, digest=served.model.digest, pipeline_digest=served.pipeline_digest,
                       shape_ranges=shape_ranges, measured_on_isa=measured_on_isa)  # fmt: skip


def build_served_model_configmap(body: dict[str, Any], model: RTDETRModel, settings: OperatorSettings,
                                 served: PipelineRecord) -> dict[str, Any]:  # fmt: skip
    """The ConfigMap the serving pods read their model from and watch (serving.rollout InPlace):
    a new model reaches running pods through it, not through a new pod template."""
    document = served_model(model, settings, served)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": served_model_configmap_name(model.name),
            "namespace": model.namespace,
            "labels": common_labels(model.name, "runtime"),
            "annotations": {ANNOTATION_MODEL: served.model.digest},
            "ownerReferences": [owner_reference(body)],
        },
        "data": {SERVED_MODEL_KEY: document.model_dump_json(by_alias=True, exclude_none=True, indent=2)},
    }


def model_args(document: ServedModel) -> list[str]:
    """The serve command's arguments naming the model in the pod template (Surge, Replace)."""
    return [
        "--model", document.oci or document.model_dir,
        *(["--shape-ranges", document.shape_ranges] if document.shape_ranges else []),
        *(["--measured-on-isa", document.measured_on_isa] if document.measured_on_isa else []),
    ]  # fmt: skip


def build_runtime_deployment(
    body: dict[str, Any], model: RTDETRModel, settings: OperatorSettings, served: PipelineRecord
) -> dict[str, Any]:
    """Serving pods for a passed pipeline result ``served`` (its termination summary). With
    serving.rollout InPlace the template names the served-model ConfigMap, not the model: a new
    model changes the ConfigMap and the pods swap to it; with Surge and Replace the template
    names the model, and a new one replaces the pods."""
    serving = model.spec.serving
    in_place = serving.rollout == "InPlace"
    # A model that is not portable across ISA levels only goes to nodes of its gate's INT8 arithmetic.
    bound_to = isa_bound_level(served) if serving.device == "cpu" else None
    required = node_affinity_for(bound_to) if bound_to else None
    volumes = [_engine_cache_volume(model, settings), {"name": "scratch", "emptyDir": {}}]
    mounts = [{"name": "engine-cache", "mountPath": ENGINE_CACHE_MOUNT}, {"name": "scratch", "mountPath": "/tmp"}]
    if not served.model.uri.startswith("oci://"):  # else pulled from storage.registry into the engine cache
        claim = parse_uri(served.model.uri).claim  # serving needs only the artifacts claim, read-only
        volumes.insert(0, {"name": "artifacts", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.insert(0, {"name": "artifacts", "mountPath": f"{settings.pvc_mount_root}/{claim}", "readOnly": True})
    registry_args, registry_volumes, registry_mounts = registry_access(model.spec.storage.registry)
    volumes += registry_volumes
    mounts += registry_mounts
    if in_place:
        volumes.append({"name": "model", "configMap": {"name": served_model_configmap_name(model.name)}})
        mounts.append({"name": "model", "mountPath": MODEL_FILE_MOUNT, "readOnly": True})
        model_source = ["--model-config", f"{MODEL_FILE_MOUNT}/{SERVED_MODEL_KEY}"]
    else:
        model_source = model_args(served_model(model, settings, served))
    security_args, security_volumes, security_mounts = serving_security(serving)
    volumes += security_volumes
    mounts += security_mounts
    main_port = serving_port_name(serving)
    health_port = "metrics" if serving.tls else main_port  # kubelet probes carry no client certificate or token
    probe = {"httpGet": {"path": "/v2/health/ready", "port": health_port}, "periodSeconds": 10, "timeoutSeconds": 5}
    annotations = {ANNOTATION_PIPELINE: served.pipeline_digest, ANNOTATION_MODEL: served.model.digest}
    # What the pods run: with InPlace the model is not part of it (a new one must not replace pods).
    template_annotations = {} if in_place else dict(annotations)
    labels = common_labels(model.name, "runtime")
    image = settings.runtime_image_gpu if serving.device == "gpu" else settings.runtime_image_cpu
    container = {
        "name": "runtime",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["rtdetr-edge", "serve"],
        "args": [
            *model_source,
            "--model-name", model.name,
            "--device", serving.device,
            "--backend", serving_backend(serving),
            "--precision", serving.precision,
            "--max-batch-size", str(serving.max_batch_size),
            "--batch-window-micros", str(serving.batch_window_micros),
            "--max-queue-millis", str(serving.max_queue_millis),
            *(["--access-log"] if serving.access_log else []),
            *(["--tracing"] if serving.tracing else []),
            "--score-threshold", str(serving.score_threshold),
            "--cache-dir", ENGINE_CACHE_MOUNT,
            "--host", "0.0.0.0",
            "--port", str(CONTAINER_PORT),
            *(["--grpc-port", str(GRPC_PORT)] if serving.grpc else []),
            *security_args,
            *registry_args,
            "--shutdown-delay-seconds", str(SHUTDOWN_DELAY_SECONDS),
            "--drain-seconds", str(DRAIN_SECONDS),
        ],  # fmt: skip
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}, *device_env(serving.device),
                *tracing_env(serving.tracing, model)],
        "ports": [{"name": main_port, "containerPort": CONTAINER_PORT, "protocol": "TCP"},
                  *([{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}] if serving.grpc else []),
                  *([{"name": "metrics", "containerPort": MANAGEMENT_PORT, "protocol": "TCP"}] if serving.tls else [])],
        # Warm-up (shape ranges + TensorRT engine build) can take minutes on a cold node.
        "startupProbe": {**probe, "failureThreshold": 180},
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": health_port},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": device_resources(serving.resources, serving.device),
        "volumeMounts": mounts,
        "securityContext": _security_context(),
        # A failed warm-up prints its cause last: it becomes the crash's termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pods = runtime_pod_labels(model.name)
    placement = placement_fields(serving, serving.device, pods, required)
    spec = pod_spec([container], volumes, settings, settings.runtime_service_account, placement,
                    terminationGracePeriodSeconds=TERMINATION_GRACE_SECONDS)  # fmt: skip
    if any("hostPath" in volume for volume in volumes if volume["name"] == "engine-cache"):
        spec["initContainers"] = [_engine_cache_owner(image, settings)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": runtime_name(model.name),
            "namespace": model.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(body)],
        },
        "spec": {
            # With autoscaling, the HPA owns the count after creation (reconcile.runtime_deployment).
            "replicas": serving.autoscaling.min_replicas if serving.autoscaling else serving.replicas,
            "selector": {"matchLabels": pods},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": dict(ROLLOUT_STRATEGIES[serving.rollout])},
            # The template's own annotations (not the Deployment's dict): what goes on the
            # Deployment only (the operator's result and spec hash) must not restart pods.
            "template": {"metadata": {"labels": dict(labels), **({"annotations": template_annotations} if template_annotations else {})},
                         "spec": spec},  # fmt: skip
        },
    }


def runtime_child_metadata(body: dict[str, Any], model: RTDETRModel) -> dict[str, Any]:
    """The metadata of what serves a resource beside its Deployment (Service, HPA, NetworkPolicy):
    the Deployment's name, the runtime labels the operator's watches select on, and the owner."""
    return {
        "name": runtime_name(model.name),
        "namespace": model.namespace,
        "labels": common_labels(model.name, "runtime"),
        "ownerReferences": [owner_reference(body)],
    }


def build_service(body: dict[str, Any], model: RTDETRModel, settings: OperatorSettings) -> dict[str, Any]:
    serving = model.spec.serving
    main = serving_port_name(serving)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": runtime_child_metadata(body, model),
        "spec": {
            "selector": runtime_pod_labels(model.name),
            "ports": [
                {"name": main, "port": settings.service_port, "targetPort": main, "protocol": "TCP"},
                # appProtocol: meshes and gateways (Istio, Linkerd, Envoy Gateway) then speak HTTP/2 to it.
                *([{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}]
                  if serving.grpc else []),
                # The chart's ServiceMonitor scrapes "http" or, with TLS, this plain port.
                *([{"name": "metrics", "port": MANAGEMENT_PORT, "targetPort": "metrics", "protocol": "TCP"}]
                  if serving.tls else []),
            ],
        },
    }


def build_network_policy(body: dict[str, Any], model: RTDETRModel, settings: OperatorSettings) -> dict[str, Any]:
    """The NetworkPolicy of ``serving.allowFrom``: only those peers reach the serving ports (HTTP
    or HTTPS, and gRPC with ``serving.grpc``), and the install's metrics scrapers the port /metrics
    is scraped on (the serving one, or with TLS the management one). An ingress rule with no
    ``from`` admits everyone, so an empty peer list gets no rule at all."""
    allow_from = model.spec.serving.allow_from
    assert allow_from is not None
    serving = model.spec.serving
    callers = [{"port": CONTAINER_PORT, "protocol": "TCP"}, *([{"port": GRPC_PORT, "protocol": "TCP"}] if serving.grpc else [])]
    scrapes = [{"port": plain_port(serving), "protocol": "TCP"}]
    ingress = [{"from": [dict(peer) for peer in peers], "ports": ports}
               for peers, ports in ((allow_from, callers), (settings.serving_metrics_from, scrapes)) if peers]  # fmt: skip
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": runtime_child_metadata(body, model),
        "spec": {"podSelector": {"matchLabels": runtime_pod_labels(model.name)}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def autoscaler_metrics(autoscaling: AutoscalingSpec) -> list[dict[str, Any]]:
    """The HPA's metrics: CPU from the resource metrics API (metrics-server), requests in flight per
    pod from the custom metrics API (an adapter serving the pods' gauge under its own name)."""
    metrics: list[dict[str, Any]] = []
    if autoscaling.cpu_utilization is not None:
        target = {"type": "Utilization", "averageUtilization": autoscaling.cpu_utilization}
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": target}})
    if autoscaling.in_flight_requests is not None:
        target = {"type": "AverageValue", "averageValue": str(autoscaling.in_flight_requests)}
        metrics.append({"type": "Pods", "pods": {"metric": {"name": IN_FLIGHT_METRIC}, "target": target}})
    return metrics


def build_autoscaler(body: dict[str, Any], model: RTDETRModel) -> dict[str, Any]:
    """The HorizontalPodAutoscaler of ``serving.autoscaling``, scaling the serving Deployment."""
    autoscaling = model.spec.serving.autoscaling
    assert autoscaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": runtime_child_metadata(body, model),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": runtime_name(model.name)},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": autoscaler_metrics(autoscaling),
        },
    }


def endpoint(model: RTDETRModel, settings: OperatorSettings) -> str:
    scheme = "https" if model.spec.serving.tls else "http"
    return f"{scheme}://{_service_host(model, settings)}:{settings.service_port}"


def plain_port(serving: ServingSpec) -> int:
    """Where a pod answers health, /metrics and its repository index without credentials: the
    serving port, or with TLS the management port (probes, scrapes and the operator use it)."""
    return MANAGEMENT_PORT if serving.tls else CONTAINER_PORT


def serving_port_name(serving: ServingSpec) -> str:
    """The serving port's name on the pods and the Service: ``https`` with TLS, else ``http``."""
    return "https" if serving.tls else "http"


def serving_security(serving: ServingSpec) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """``serve`` arguments, volumes and mounts of ``serving.tls`` and ``serving.auth``: whole Secret
    volumes (never subPath: the kubelet updates only whole volumes, and the server reloads what
    changes), readable by the runtime's group (the pod's fsGroup)."""
    args: list[str] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []

    def secret(volume: str, name: str) -> str:
        volumes.append({"name": volume, "secret": {"secretName": name, "defaultMode": 0o440}})
        mounts.append({"name": volume, "mountPath": f"{SECRETS_MOUNT}/{volume}", "readOnly": True})
        return f"{SECRETS_MOUNT}/{volume}"

    if serving.tls is not None:
        tls = secret("serving-tls", serving.tls.secret_name)
        args += ["--tls-cert-file", f"{tls}/tls.crt", "--tls-key-file", f"{tls}/tls.key", "--management-port", str(MANAGEMENT_PORT)]
        if serving.tls.client_ca_secret_name is not None:
            args += ["--tls-client-ca-file", f"{secret('client-ca', serving.tls.client_ca_secret_name)}/ca.crt"]
    if serving.auth is not None:
        args += ["--auth-token-file", f"{secret('auth-tokens', serving.auth.token_secret_name)}/tokens"]
    return args, volumes, mounts


def registry_access(registry: ModelRegistrySpec | None) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Arguments, volumes and mounts that let a pod reach ``storage.registry``: the pull Secret's
    Docker config and the CA bundle as files (the Job pushes, serving pods pull)."""
    if registry is None:
        return [], [], []
    args = ["--registry-plain-http"] if registry.plain_http else []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if registry.pull_secret_name is not None:
        items = [{"key": ".dockerconfigjson", "path": "config.json"}]
        volumes.append({"name": "registry-credentials", "secret": {"secretName": registry.pull_secret_name, "items": items,
                                                                    "defaultMode": 0o440}})  # fmt: skip
        mounts.append({"name": "registry-credentials", "mountPath": f"{SECRETS_MOUNT}/registry", "readOnly": True})
        args += ["--registry-config", f"{SECRETS_MOUNT}/registry/config.json"]
    if registry.ca_config_map_name is not None:
        items = [{"key": "ca.crt", "path": "ca.crt"}]
        volumes.append({"name": "registry-ca", "configMap": {"name": registry.ca_config_map_name, "items": items}})
        mounts.append({"name": "registry-ca", "mountPath": f"{SECRETS_MOUNT}/registry-ca", "readOnly": True})
        args += ["--registry-ca-file", f"{SECRETS_MOUNT}/registry-ca/ca.crt"]
    return args, volumes, mounts


def grpc_endpoint(model: RTDETRModel, settings: OperatorSettings) -> str | None:
    """``host:port`` of the gRPC API (what gRPC clients take), when ``serving.grpc`` is on."""
    return f"{_service_host(model, settings)}:{GRPC_PORT}" if model.spec.serving.grpc else None


def _service_host(model: RTDETRModel, settings: OperatorSettings) -> str:
    return f"{runtime_name(model.name)}.{model.namespace}.{settings.cluster_domain}"
