"""The reconcile decision (pure): what the children should be and what the status says.

Inputs are what the adapter observed (the resource, its quantize Job and that Job's
pod summary, the runtime Deployment); outputs are manifests to ensure, the full
status, and the Events worth emitting. Rules (DESIGN.md):

- child names derive from the pipeline digest, so re-running never duplicates a Job;
- a ``serving``-only change never re-quantizes (the digest ignores it);
- a new digest rolls out only after its gate passes: with serving.rollout InPlace the running
  pods swap to it (their ConfigMap names it; Ready once every pod answers with it), with Surge
  the Deployment's rolling update (``maxUnavailable: 0``) keeps old pods serving until new ones
  are Ready, with Replace pods are replaced in turn;
- a failed gate leaves the old model serving: ``Ready=False AccuracyGateFailed``,
  ``Available=True``;
- an invalid spec gives ``Ready=False InvalidSpec`` and touches nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from rtdetr_edge.api.job import JobSummary, PipelinePlan, PipelineRecord
from rtdetr_edge.api.spec import IN_FLIGHT_METRIC, AutoscalingSpec, QuantizationSpec, Rollout
from rtdetr_edge.api.status import IN_FLIGHT_PHASES
from rtdetr_edge.cpu_isa import NFD_PREFIX
from rtdetr_edge.gate import DROP_EXCEEDS_BUDGET, NOT_DEPLOYED, judge
from rtdetr_edge.resource import RTDETRModel, SpecError, earlier_pipeline_digest, parse_resource, pipeline_plan
from rtdetr_operator.conditions import Condition, changed, find, set_conditions
from rtdetr_operator.exporter import EXPORT_ANNOTATION, build_export_job, exported_model_uri
from rtdetr_operator.manifests import (
    ANNOTATION_PIPELINE,
    build_autoscaler,
    build_network_policy,
    build_pipeline_configmap,
    build_quantize_job,
    build_runtime_deployment,
    build_served_model_configmap,
    build_service,
    endpoint,
    grpc_endpoint,
    isa_bound_level,
)
from rtdetr_operator.names import label_selector, pipeline_configmap_name, runtime_name, runtime_pod_labels
from rtdetr_operator.reasons import Reason
from rtdetr_operator.settings import OperatorSettings, host_path_problem

ANNOTATION_RESULT = "rtdetr.io/pipeline-result"
ANNOTATION_TEMPLATE_HASH = "rtdetr.io/runtime-template-hash"
ANNOTATION_SPEC_HASH = "rtdetr.io/runtime-spec-hash"  # 0.1.0's (see LEGACY_TEMPLATE_ANNOTATIONS)
CAUSE_LINES = 5


@dataclass(frozen=True)
class JobObservation:
    active: bool = False
    succeeded: bool = False
    failed: bool = False
    failure_reason: str = ""  # the Job's Failed condition reason (DeadlineExceeded, BackoffLimitExceeded)
    failure_message: str = ""
    termination_message: str | None = None  # the pod's: our JSON summary, or the log tail of a crash
    progress: dict[str, Any] | None = None  # last RTDETR_PROGRESS line of the pod log
    waiting_reason: str = ""  # why its pod cannot run: Unschedulable, ImagePullBackOff, CrashLoopBackOff, ...
    waiting_message: str = ""  # the scheduler's or kubelet's own words

    @property
    def summary(self) -> JobSummary | None:
        return JobSummary.from_termination_message(self.termination_message)

    @property
    def verdict(self) -> PipelineRecord | None:
        """What a passed or refused pipeline hands on (``JobSummary.record``), or None."""
        summary = self.summary
        if not (self.succeeded and summary is not None and summary.ok):
            return None
        try:
            return summary.record()
        except ValueError:
            return None


@dataclass(frozen=True)
class DeploymentObservation:
    annotations: dict[str, str] = field(default_factory=dict)
    template_annotations: dict[str, str] = field(default_factory=dict)  # its pod template's
    replicas: int = 0  # spec.replicas
    current_replicas: int = 0  # status.replicas: pods of every ReplicaSet, old ones included
    generation: int = 0
    observed_generation: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    pod_problem_reason: str = ""  # why a serving pod cannot run: CrashLoopBackOff, ImagePullBackOff, Unschedulable, ...
    pod_problem_message: str = ""
    stalled_message: str = ""  # the Deployment's ProgressDeadlineExceeded message, if any

    @property
    def pod_problem(self) -> str:
        """``reason: message`` of a serving pod that cannot run, or ""."""
        return f"{self.pod_problem_reason}: {self.pod_problem_message}" if self.pod_problem_reason else ""


@dataclass(frozen=True)
class HpaCondition:
    type: str  # AbleToScale | ScalingActive | ScalingLimited
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class AutoscalerObservation:
    """The operator's HorizontalPodAutoscaler, as its controller last reported it."""

    current_replicas: int = 0
    desired_replicas: int = 0
    conditions: tuple[HpaCondition, ...] = ()

    def condition(self, condition_type: str) -> HpaCondition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)


@dataclass(frozen=True)
class PodModel:
    """What one Ready serving pod says it serves (Triton's repository index), or why it did not say."""

    pod: str
    serving: str = ""  # the digest of the model answering
    loading: str = ""  # a digest loading beside it
    refused: str = ""  # a digest it could not load ...
    reason: str = ""  # ... and why
    error: str = ""  # the index could not be read


@dataclass(frozen=True)
class PipelineJob:
    """A quantize or export Job of this resource, whatever its pipeline digest."""

    name: str
    component: str  # quantize | export
    pipeline_digest: str
    active: bool


@dataclass(frozen=True)
class Observed:
    quantize_job: JobObservation | None = None
    export_job: JobObservation | None = None
    deployment: DeploymentObservation | None = None
    pipeline_jobs: tuple[PipelineJob, ...] = ()
    autoscaler: AutoscalerObservation | None = None
    network_policy: bool = False  # the serving pods' NetworkPolicy exists
    pod_models: tuple[PodModel, ...] | None = None
    """What the Ready serving pods serve; None: not asked (:attr:`Decision.needs_pod_models`)."""


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Decision:
    ensure: list[dict[str, Any]]
    status: dict[str, Any]
    events: list[Event]
    pipeline_digest: str | None
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) of superseded children
    updates: list[Condition] = field(default_factory=list)
    """The condition updates that made ``status``: applying a child may still fail
    (:func:`with_apply_failures` then re-decides the conditions from the status as it was)."""
    needs_pod_models: bool = False
    """An in-place swap is confirmed by the pods themselves: decide again with
    :attr:`Observed.pod_models` (the adapter asks the pods only then)."""


@dataclass(frozen=True)
class ApplyFailure:
    """The API server refused a child: its kind and the sentence status shows."""

    kind: str
    text: str


def superseded(model_name: str, jobs: tuple[PipelineJob, ...], keep: set[str]) -> list[tuple[str, str]]:
    """Children of pipelines the spec moved on from (neither this spec's nor the served one's):
    their Jobs go, running or not (a spec edit must not keep a GPU busy for hours on a model
    nobody will serve), with their stage ConfigMaps. Results stay on the artifacts volume."""
    doomed: list[tuple[str, str]] = []
    for job in sorted(jobs, key=lambda j: j.name):
        if job.pipeline_digest and job.pipeline_digest not in keep:
            doomed.append(("Job", job.name))
            if job.component == "quantize":
                doomed.append(("ConfigMap", pipeline_configmap_name(model_name, job.pipeline_digest)))
    return doomed


def _cause(job: JobObservation) -> str:
    summary = job.summary
    if summary is not None and summary.message:
        return summary.message
    if job.termination_message:
        return " | ".join(job.termination_message.strip().splitlines()[-CAUSE_LINES:])
    return job.failure_message or "the Job failed without a message; see its pod's logs"


def _cpu_request(resources: dict[str, Any]) -> bool:
    """The pods get a CPU request: set, or defaulted by Kubernetes from a CPU limit."""
    return any("cpu" in (resources.get(section) or {}) for section in ("requests", "limits"))


def cluster_problems(model: RTDETRModel, settings: OperatorSettings) -> list[str]:
    """Rules that only apply in a cluster (``rtdetr-edge run`` accepts more) or that the cluster
    admin set in the operator's settings."""
    problems = []
    spec = model.spec
    for where, uri in (("source.inferenceModel", spec.source.inference_model), ("source.checkpoint", spec.source.checkpoint),
                       ("dataset.uri", spec.dataset.uri), ("storage.artifacts", spec.artifacts)):  # fmt: skip
        if uri and uri.startswith("file://"):
            problems.append(f"spec.{where}: file:// URIs work only with `rtdetr-edge run`; use pvc:// or https://")
    if spec.source.checkpoint and spec.arch == "tiny":
        problems.append("spec.source.checkpoint: the tiny arch has no PaddleDetection config to export with")
    if spec.source.checkpoint and not spec.source.checkpoint.startswith("pvc://"):
        problems.append("spec.source.checkpoint must be a pvc:// path (the exporter reads it from a mounted claim)")
    autoscaling = spec.serving.autoscaling
    if autoscaling is not None and autoscaling.cpu_utilization is not None and not _cpu_request(spec.serving.resources):
        problems.append("spec.serving.autoscaling.cpuUtilization is a percentage of the pods' CPU request: set "
                        "spec.serving.resources.requests.cpu (e.g. \"2\"), or scale on inFlightRequests")  # fmt: skip
    cache = spec.serving.engine_cache
    host_path = host_path_problem(cache.as_dict() if cache is not None else None, settings.host_path_prefixes)
    if host_path:
        problems.append(f"spec.serving.engineCache: {host_path}")
    return problems


def template_hash(deployment: dict[str, Any]) -> str:
    """What the Deployment's pods run: a change of it is a rollout, a replicas change is not."""
    return hashlib.sha256(json.dumps(deployment["spec"]["template"], sort_keys=True).encode()).hexdigest()[:16]


# Release 0.1.0 hashed the whole spec (replicas included) and wrote the hash and the result on the
# pod template too (it shared the Deployment's annotations dict): `serving.replicas` replaced pods.
LEGACY_TEMPLATE_ANNOTATIONS = (ANNOTATION_RESULT, ANNOTATION_SPEC_HASH)


def keep_legacy_template_annotations(desired: dict[str, Any], live: DeploymentObservation | None) -> None:
    """A Deployment made by 0.1.0 keeps those template annotations while it serves the same
    pipeline's model: dropping them is a template change, which would restart every serving pod
    once on upgrade (and never finish on a node with one GPU). A new model drops them."""
    kept = live.template_annotations if live is not None else {}
    if kept.get(ANNOTATION_PIPELINE) != desired["metadata"]["annotations"][ANNOTATION_PIPELINE]:
        return
    legacy = {key: kept[key] for key in LEGACY_TEMPLATE_ANNOTATIONS if key in kept}
    if legacy:
        desired["spec"]["template"]["metadata"].setdefault("annotations", {}).update(legacy)


def _legacy_spec_hash(desired: dict[str, Any]) -> str | None:
    """0.1.0's hash of ``desired`` (taken before its template held the hash), for a Deployment it
    made that kept its template annotations (see above); None for any other."""
    metadata = desired["spec"]["template"]["metadata"]
    if ANNOTATION_SPEC_HASH not in metadata.get("annotations", {}):
        return None
    annotations = {k: v for k, v in metadata["annotations"].items() if k != ANNOTATION_SPEC_HASH}
    template = {**desired["spec"]["template"], "metadata": {**metadata, "annotations": annotations}}
    spec = {**desired["spec"], "template": template}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def runs_template(live: DeploymentObservation, desired: dict[str, Any]) -> bool:
    """The live Deployment's pod template is the desired one (its replicas may still differ)."""
    if live.annotations.get(ANNOTATION_TEMPLATE_HASH) == desired["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]:
        return True
    legacy = _legacy_spec_hash(desired)
    return legacy is not None and live.annotations.get(ANNOTATION_SPEC_HASH) == legacy


def isa_placement_hint(served: PipelineRecord) -> str:
    """Why an unschedulable serving pod may be waiting for a CPU kind (manifests place a model that
    is not ISA-portable by Node Feature Discovery's labels), or ""."""
    level = isa_bound_level(served)
    if level is None:
        return ""
    return (
        f"this model's INT8 numbers hold only on {level}-class CPUs, found by Node Feature Discovery's "
        f"{NFD_PREFIX}* node labels: install NFD (or label such nodes), or re-quantize it with this release "
        "(7-bit weights serve on every CPU)"
    )


def judged(record: PipelineRecord, quantization: QuantizationSpec) -> PipelineRecord:
    """A pipeline's record (a candidate, or the served model) judged with the resource's current
    gate budget: the Job measured both mAPs, and the budget may have changed since. A record
    without them (none is made so) keeps the verdict its Job gave."""
    if record.accuracy is None:
        return record
    return record.model_copy(update={"gate": judge(record.accuracy, quantization)})


def kept_record(document: Any) -> PipelineRecord | None:
    """A record as status or an annotation keeps it (JSON text or its dict), or None when there is
    none or it cannot be read."""
    if not document:
        return None
    try:
        if isinstance(document, str):
            return PipelineRecord.model_validate_json(document)
        return PipelineRecord.model_validate(document) if isinstance(document, dict) else None
    except ValueError:
        return None


@dataclass
class Step:
    """What one part of the decision concludes: condition updates, children to ensure, the phase
    (kstatus' view follows from it), and what the pipeline found."""

    updates: list[Condition] = field(default_factory=list)
    ensure: list[dict[str, Any]] = field(default_factory=list)
    phase: str = "Pending"
    progress: dict[str, Any] | None = None
    served: PipelineRecord | None = None  # this spec's model, within the gate's budget
    candidate: PipelineRecord | None = None  # this spec's verdict, for status.candidate
    needs_pod_models: bool = False


def availability(deployment: DeploymentObservation | None, before: list[dict[str, Any]]) -> Condition:
    """Whether any pod serves; a model that served and no longer does is ``ReplicasLost``."""
    if deployment is None:
        return Condition("Available", "False", Reason.NOT_DEPLOYED, "no serving pods yet")
    if deployment.available_replicas > 0:
        pods = f"{deployment.available_replicas} serving pod(s) available"
        return Condition("Available", "True", Reason.MINIMUM_REPLICAS_AVAILABLE, pods)
    was = find(before, "Available")
    if was is not None and (was.get("status") == "True" or was.get("reason") == Reason.REPLICAS_LOST):
        # It served before and now nothing does: pods lost (node down, evicted, crashing).
        return Condition("Available", "False", Reason.REPLICAS_LOST, "every serving pod is gone; no model is being served")
    return Condition("Available", "False", Reason.NO_REPLICAS_AVAILABLE, "no serving pod is available yet")


def invalid_spec(error: SpecError, available: Condition, before: dict[str, Any], generation: int, now: str) -> Decision:
    """A spec that cannot run: ``Ready=False InvalidSpec`` with every problem, and nothing touched."""
    message = "; ".join(error.errors[:5]) + (f" (+{len(error.errors) - 5} more)" if len(error.errors) > 5 else "")
    updates = [Condition("Ready", "False", Reason.INVALID_SPEC, message), available]
    updates += kstatus_conditions("Failed", updates)
    conditions_before = list(before.get("conditions") or [])
    conditions = set_conditions(conditions_before, updates, generation, now)
    status = {**before, "observedGeneration": generation, "phase": "Failed", "conditions": conditions, "progress": None}
    return Decision([], status, _events(conditions_before, conditions), None, updates=updates)


def deployed_model(deployment: DeploymentObservation | None, before: dict[str, Any]) -> PipelineRecord | None:
    """What the serving pods run (the Deployment's annotation), or, with the Deployment gone
    (deleted by hand, lost with a namespace restore), what status remembers they served: it comes
    back even if a newer candidate failed."""
    if deployment is not None:
        return kept_record(deployment.annotations.get(ANNOTATION_RESULT))
    return kept_record(before.get("served"))


def judgement(record: PipelineRecord, available: Condition, serving: bool) -> Step:
    """A finished pipeline's record, judged with the current budget: served, or refused. A refused
    candidate leaves whatever serves serving; a ``serving`` record (this spec's model already
    serves: only serving settings or the budget changed) refused by a tightened budget says so
    and keeps serving, there being nothing better to serve."""
    message, reason = (record.gate.message, record.gate.reason) if record.gate else ("", DROP_EXCEEDS_BUDGET)
    quantized = "the quantized model for this spec is ready" if serving else "quantization finished"
    step = Step([Condition("Quantized", "True", Reason.JOB_SUCCEEDED, quantized)], candidate=None if serving else record)
    if record.passed:
        step.served = record
        step.updates.append(Condition("AccuracyGatePassed", "True", Reason.WITHIN_BUDGET, message))
        return step
    if serving:
        refused = (f"the serving model is outside the gate's budget: {message.removesuffix(NOT_DEPLOYED)}; it keeps serving "
                   "until a model within the budget replaces it (change quantization settings), or raise the budget")  # fmt: skip
    else:
        refused = f"{message}; the previous model keeps serving" if available.status == "True" else message
    step.phase, step.candidate = "Failed", record
    step.updates += [
        Condition("AccuracyGatePassed", "False", reason, message),
        Condition("Ready", "False", Reason.ACCURACY_GATE_FAILED, refused),
    ]
    return step


def export_step(body: dict[str, Any], model: RTDETRModel, digest: str, export: JobObservation | None,
                settings: OperatorSettings) -> Step:  # fmt: skip
    """A checkpoint source is exported (PaddleDetection) before the pipeline quantizes it."""
    exporting = Condition("Quantized", "Unknown", Reason.EXPORTING, "exporting the checkpoint with PaddleDetection")
    if export is None:
        return Step([exporting], [build_export_job(body, model, digest, settings)], phase="Exporting")
    if export.failed:
        cause = _cause(export)
        return Step([Condition("Quantized", "False", Reason.EXPORT_FAILED, cause), Condition("Ready", "False", Reason.EXPORT_FAILED, cause)],
                    phase="Failed")  # fmt: skip
    return Step([exporting], phase="Exporting")


def quantize_step(body: dict[str, Any], model: RTDETRModel, plan: PipelinePlan, job: JobObservation | None,
                  settings: OperatorSettings) -> Step:  # fmt: skip
    """The quantize Job with no verdict (yet): create it, or say how it runs or why it failed."""
    digest = plan.pipeline_digest
    if job is None:
        spec = body["spec"]
        if model.spec.source.checkpoint is not None:  # the pipeline quantizes what the export Job wrote
            spec = {**spec, "source": {"inferenceModel": exported_model_uri(model, digest)}}
        configmap = build_pipeline_configmap({**body, "spec": spec}, model, plan)
        if model.spec.source.checkpoint is not None:
            configmap["metadata"]["annotations"][EXPORT_ANNOTATION] = exported_model_uri(model, digest)
        created = Condition("Quantized", "Unknown", Reason.JOB_CREATED, "quantize Job created")
        return Step([created], [configmap, build_quantize_job(body, model, digest, settings)])
    if job.succeeded:  # and no readable verdict, now or remembered
        unreadable = f"the quantize Job succeeded but its result is unreadable: {_cause(job)}"
        return Step([Condition("Quantized", "False", Reason.RESULT_UNREADABLE, unreadable),
                     Condition("Ready", "False", Reason.QUANTIZATION_FAILED, "no usable result")], phase="Failed")  # fmt: skip
    if job.failed:
        reason = Reason.DEADLINE_EXCEEDED if job.failure_reason == "DeadlineExceeded" else Reason.JOB_FAILED
        cause = _cause(job)
        if reason == Reason.DEADLINE_EXCEEDED:
            cause = f"the quantize Job exceeded compression.activeDeadlineSeconds; last output: {cause}"
        return Step([Condition("Quantized", "False", reason, cause), Condition("Ready", "False", Reason.QUANTIZATION_FAILED, cause)],
                    phase="Failed")  # fmt: skip
    if job.waiting_reason:
        message = f"the quantize Job's pod cannot run: {job.waiting_reason}: {job.waiting_message}".rstrip(": ")
        return Step([Condition("Quantized", "Unknown", job.waiting_reason, message),
                     Condition("Ready", "False", job.waiting_reason, message)])  # fmt: skip
    progress = job.progress
    stage, step = str((progress or {}).get("stage", "")), str((progress or {}).get("phase", ""))
    evaluating = stage == "pipeline" and any(word in step for word in ("evaluate", "gate", "shape"))
    running = Condition("Quantized", "Unknown", Reason.JOB_RUNNING, _progress_message(progress))
    return Step([running], phase="Evaluating" if evaluating else "Quantizing", progress=progress)


def pipeline_step(body: dict[str, Any], model: RTDETRModel, plan: PipelinePlan, ours: set[str], observed: Observed,
                  before: dict[str, Any], available: Condition, settings: OperatorSettings) -> Step:  # fmt: skip
    """This spec's model is not serving: its verdict if there is one, else the export and
    quantize Jobs that make it."""
    job = observed.quantize_job
    # The verdict, once read, is kept in status.candidate: the finished Job's pod or the Job
    # itself may be deleted (TTL, a cleanup, a human) without re-running hours of QAT.
    remembered = kept_record(before.get("candidate"))
    verdict = job.verdict if job is not None else None  # parses the termination message once
    if verdict is None and remembered is not None and remembered.pipeline_digest in ours and (
        job is None or job.succeeded
    ):
        verdict = remembered
    if verdict is not None:
        return judgement(judged(verdict, model.spec.quantization), available, serving=False)  # with the budget as it is now
    export = observed.export_job
    if model.spec.source.checkpoint is not None and (export is None or not export.succeeded):
        return export_step(body, model, plan.pipeline_digest, export, settings)
    return quantize_step(body, model, plan, job, settings)


def runtime_deployment(body: dict[str, Any], model: RTDETRModel, settings: OperatorSettings, serve: PipelineRecord,
                       live: DeploymentObservation | None) -> dict[str, Any]:  # fmt: skip
    """The serving Deployment for ``serve``, with what only the Deployment carries (not its pods):
    the served record and the hash of the template it was given."""
    desired = build_runtime_deployment(body, model, settings, serve)
    if model.spec.serving.autoscaling is not None and live is not None:
        # The HPA owns the count of a Deployment that exists (kube.py hands the field over).
        del desired["spec"]["replicas"]
    keep_legacy_template_annotations(desired, live)
    desired["metadata"]["annotations"][ANNOTATION_RESULT] = json.dumps(serve.wire(), sort_keys=True, separators=(",", ":"))
    desired["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] = template_hash(desired)
    return desired


def swapping(served: PipelineRecord, before: dict[str, Any]) -> bool:
    """Whether the pods are asked which model they serve before Ready says Serving (serving.rollout
    InPlace): unless Serving was already confirmed for ``served``. The ConfigMap may name a newer
    model than a running pod loaded: a swap in place, and also a pod that started just before the
    ConfigMap changed (a Deployment re-created, a rollout still warming up when a new model was
    gated), which the kubelet hands the new file only later."""
    previous = (before.get("serving") or {}).get("servingDigest")
    reason = (find(list(before.get("conditions") or []), "Ready") or {}).get("reason")
    return not (previous == served.model.digest and reason == Reason.SERVING)


def swap_step(digest: str, replicas: int, pod_models: tuple[PodModel, ...] | None) -> Step:
    """Ready for a model the pods swap to in place (serving.rollout InPlace), from what the pods
    say they serve: Serving once as many as wanted answer with it and none with another."""
    if pod_models is None:
        return Step([Condition("Ready", "False", Reason.MODEL_SWAPPING, "asking the serving pods which model they serve")],
                    phase="Deploying", needs_pod_models=True)  # fmt: skip
    short = digest[:19]
    refused = [m for m in pod_models if m.refused == digest]
    if refused:
        first = refused[0]
        serves = f"serves {first.serving[:19]}" if first.serving else "serves nothing"
        message = (f"pod {first.pod} could not load {short} beside the model it serves and still {serves}: "
                   f"{first.reason}. If the model does not fit in memory twice, set serving.rollout: Replace; "
                   f"a pod started afresh loads only the new model (kubectl delete pod {first.pod})")  # fmt: skip
        return Step([Condition("Ready", "False", Reason.MODEL_SWAP_FAILED, message)], phase="Failed", needs_pod_models=True)
    answering = [m for m in pod_models if m.serving == digest]
    behind = [m for m in pod_models if m.serving != digest]
    if len(answering) >= replicas and not behind:
        return Step([Condition("Ready", "True", Reason.SERVING, f"serving {short}")], phase="Ready", needs_pod_models=True)
    notes = [f"{m.pod}: {m.error}" for m in behind if m.error][:2]
    loading = sum(1 for m in behind if m.loading == digest)
    message = f"{len(answering)}/{replicas} pods serve {short}" + (f"; {loading} loading it beside the previous model" if loading else "")
    return Step([Condition("Ready", "False", Reason.MODEL_SWAPPING, "; ".join([message, *notes]))], phase="Deploying",
                needs_pod_models=True)  # fmt: skip


SURGE_HINT = ("a new pod needs room beside the serving ones (a spare GPU); on nodes with one GPU set serving.rollout: "
              "Replace (pods replaced in turn), or InPlace, which swaps new models without new pods")  # fmt: skip


OOM_HINT = ("raise serving.resources.limits.memory (and requests.memory, so the scheduler counts it): the model, "
            "its engine and serving.maxBatchSize images in flight must fit")  # fmt: skip


def rollout_step(served: PipelineRecord, desired: dict[str, Any], replicas: int, deployment: DeploymentObservation | None,
                 before: dict[str, Any], rollout: Rollout = "Surge", pod_models: tuple[PodModel, ...] | None = None) -> Step:  # fmt: skip
    """Ready for a served model, from its Deployment (``kubectl rollout status`` semantics) and,
    for a model swapped in place (``rollout`` InPlace), from the pods (:func:`swap_step`)."""
    # The pods run the desired template and no old ReplicaSet's pods are left (a replicas change
    # is no rollout: the reconcile it triggers still sees the old replicas) ...
    settled = (deployment is not None and runs_template(deployment, desired)
               and deployment.current_replicas == deployment.updated_replicas)  # fmt: skip
    # ... there are as many as wanted, and every one of them is available.
    rolled_out = (settled and deployment is not None and deployment.observed_generation >= deployment.generation
                  and deployment.replicas == replicas and deployment.updated_replicas >= replicas
                  and deployment.available_replicas >= deployment.updated_replicas)  # fmt: skip
    was_serving = (find(list(before.get("conditions") or []), "Ready") or {}).get("reason") == Reason.SERVING and (
        (before.get("serving") or {}).get("servingDigest") == served.model.digest
    )
    serving = f"serving {served.model.digest[:19]}"
    if rolled_out and replicas == 0:
        return Step([Condition("Ready", "True", Reason.SCALED_TO_ZERO, "serving.replicas is 0")], phase="Ready")
    if rolled_out and rollout == "InPlace" and swapping(served, before):
        return swap_step(served.model.digest, replicas, pod_models)
    if rolled_out:
        return Step([Condition("Ready", "True", Reason.SERVING, serving)], phase="Ready")
    if deployment is not None and settled and was_serving and deployment.available_replicas > 0:
        # A scale-up, or a pod being replaced: the model still serves; say how many pods do.
        counts = f"{deployment.available_replicas}/{replicas} pods available"
        return Step([Condition("Ready", "True", Reason.SERVING, "; ".join(p for p in (serving, counts, deployment.pod_problem) if p))],
                    phase="Ready")  # fmt: skip
    if deployment is not None and deployment.stalled_message:  # kstatus Stalled: it will not progress without a change
        message = "; ".join(p for p in (deployment.stalled_message, deployment.pod_problem) if p)
        return Step([Condition("Ready", "False", Reason.PROGRESS_DEADLINE_EXCEEDED, message)], phase="Failed")
    if deployment is not None and deployment.pod_problem_reason:
        hint = ""
        if deployment.pod_problem_reason == "Unschedulable":
            hint = isa_placement_hint(served)
            if deployment.available_replicas > 0 and rollout != "Replace":  # a surging pod beside the serving ones
                hint = "; ".join(p for p in (hint, SURGE_HINT) if p)
        elif deployment.pod_problem_reason == "OOMKilled":
            hint = OOM_HINT + ("; an InPlace swap holds two models at once" if rollout == "InPlace" else "")
        message = "; ".join(p for p in (f"serving {deployment.pod_problem_message}", hint) if p)
        return Step([Condition("Ready", "False", deployment.pod_problem_reason, message)], phase="Deploying")
    ready_pods = deployment.available_replicas if deployment else 0
    rolling = Condition("Ready", "False", Reason.ROLLING_OUT, f"{ready_pods}/{replicas} pods ready with this model")
    return Step([rolling], phase="Deploying")


def autoscaling_hint(reason: str, autoscaling: AutoscalingSpec) -> str:
    """What to do when the HPA cannot read a metric: which API serves it and what it needs."""
    if reason == "FailedGetResourceMetric" or (reason == "InvalidMetricSourceType" and autoscaling.cpu_utilization):
        return ("cpuUtilization is read from the resource metrics API: install metrics-server, and keep a CPU "
                "request on the serving pods (serving.resources.requests.cpu)")  # fmt: skip
    if reason == "FailedGetPodsMetric":
        return (f"inFlightRequests is read from the custom metrics API: run an adapter (prometheus-adapter, KEDA) "
                f"that serves the pods' {IN_FLIGHT_METRIC} gauge as a pods metric (see the user guide)")  # fmt: skip
    return ""


def autoscaling_condition(autoscaling: AutoscalingSpec, hpa: AutoscalerObservation | None, replicas: int) -> Condition:
    """The Autoscaling condition: whether the HPA can scale, in its own reasons, with what to do
    when it cannot, and the counts when it can. ``replicas``: the Deployment's current count."""
    bounds = f"min {autoscaling.min_replicas}, max {autoscaling.max_replicas}"
    waiting = Condition("Autoscaling", "Unknown", Reason.AUTOSCALER_CREATED,
                        f"waiting for the HPA controller to judge the HorizontalPodAutoscaler ({bounds})")  # fmt: skip
    if hpa is None:
        return waiting
    for condition_type in ("AbleToScale", "ScalingActive"):
        condition = hpa.condition(condition_type)
        if condition is not None and condition.status == "False":
            hint = autoscaling_hint(condition.reason, autoscaling)
            message = "; ".join(p for p in (f"the HPA cannot scale: {condition.message}", hint) if p)
            return Condition("Autoscaling", "False", condition.reason or condition_type, message)
    active = hpa.condition("ScalingActive")
    if active is None:
        return waiting
    limited = hpa.condition("ScalingLimited")
    counts = f"{replicas} serving pod(s) ({bounds}); the HPA wants {hpa.desired_replicas}"
    note = limited.message if limited is not None and limited.status == "True" else ""
    return Condition("Autoscaling", "True", active.reason or "ScalingActive", "; ".join(p for p in (counts, note) if p))


def decide(body: dict[str, Any], settings: OperatorSettings, observed: Observed, now: str) -> Decision:
    """The children and the whole status for what was observed (pure; see the module's rules)."""
    generation = int(body.get("metadata", {}).get("generation", 1))
    before = dict(body.get("status") or {})
    conditions_before = list(before.get("conditions") or [])
    deployment = observed.deployment
    available = availability(deployment, conditions_before)
    try:
        model = parse_resource(body)
        problems = cluster_problems(model, settings)
        if problems:
            raise SpecError(problems)
    except SpecError as error:
        return invalid_spec(error, available, before, generation, now)

    plan = pipeline_plan(model.spec)  # what the Job runs, computed here once
    # This spec's pipeline, also as the previous release named it (it hashed the gate budget in):
    # what was made under either is this spec's model, so an upgrade re-runs nothing.
    ours = {plan.pipeline_digest, earlier_pipeline_digest(model.spec)}
    deployed = deployed_model(deployment, before)
    if deployed is not None and deployed.pipeline_digest in ours:
        deployed = judged(deployed, model.spec.quantization)
        step = judgement(deployed, available, serving=True)
    else:
        step = pipeline_step(body, model, plan, ours, observed, before, available, settings)
    # What the pods should serve: this spec's model once it passed its gate, else the one that
    # already serves (a running or failed candidate never takes it down).
    serve = step.served if step.served is not None else deployed
    updates, ensure, phase = [available, *step.updates], list(step.ensure), step.phase
    autoscaling = model.spec.serving.autoscaling
    delete: list[tuple[str, str]] = []
    in_place = model.spec.serving.rollout == "InPlace"
    needs_pod_models = False
    if serve is not None:
        desired = runtime_deployment(body, model, settings, serve, deployment)
        # Applied at every reconcile: a new model or serving setting rolls out, drift is reverted.
        # With InPlace the model reaches the pods through its ConfigMap (before the pods need it).
        ensure += [build_served_model_configmap(body, model, settings, serve)] if in_place else []
        ensure += [desired, build_service(body, model, settings)]
        replicas = model.spec.serving.replicas
        if model.spec.serving.allow_from is not None:
            ensure.append(build_network_policy(body, model, settings))
        if autoscaling is not None:
            ensure.append(build_autoscaler(body, model))
            replicas = deployment.replicas if deployment is not None else autoscaling.min_replicas  # the HPA's count
            updates.append(autoscaling_condition(autoscaling, observed.autoscaler, replicas))
        if step.served is not None:
            rollout = rollout_step(step.served, desired, replicas, deployment, before, model.spec.serving.rollout, observed.pod_models)
            updates, phase, needs_pod_models = updates + rollout.updates, rollout.phase, rollout.needs_pod_models
    if autoscaling is None and observed.autoscaler is not None:
        delete.append(("HorizontalPodAutoscaler", runtime_name(model.name)))  # serving.replicas counts again
    if model.spec.serving.allow_from is None and observed.network_policy:
        delete.append(("NetworkPolicy", runtime_name(model.name)))
    if step.served is None and phase in IN_FLIGHT_PHASES and not any(c.type == "Ready" for c in updates):
        updates.append(Condition("Ready", "False", phase, "the pipeline is running" if phase != "Pending" else "starting"))
    updates += kstatus_conditions(phase, updates)
    conditions = set_conditions(conditions_before, updates, generation, now)
    if autoscaling is None:  # turned off: its condition goes with the HPA
        conditions = [c for c in conditions if c.get("type") != "Autoscaling"]
    status = assemble_status(before, generation, phase, plan.pipeline_digest, conditions, step, serve, deployment,
                             (endpoint(model, settings), grpc_endpoint(model, settings)), model.name)  # fmt: skip
    keep = ours | ({serve.pipeline_digest} if serve is not None else set())
    delete += superseded(model.name, observed.pipeline_jobs, keep)
    return Decision(ensure, status, _events(conditions_before, conditions), plan.pipeline_digest, delete, updates,
                    needs_pod_models)  # fmt: skip


def assemble_status(before: dict[str, Any], generation: int, phase: str, digest: str, conditions: list[dict[str, Any]],
                    step: Step, serve: PipelineRecord | None, deployment: DeploymentObservation | None,
                    urls: tuple[str, str | None], name: str) -> dict[str, Any]:  # fmt: skip
    """The whole status: what was there, with this decision's fields (``urls``: HTTP, gRPC)."""
    http_url, grpc_url = urls
    serving: dict[str, Any] = {
        "endpoint": http_url,
        "readyReplicas": deployment.ready_replicas if deployment else 0,
        "replicas": deployment.current_replicas if deployment else 0,
        "selector": label_selector(runtime_pod_labels(name)),
    }
    if grpc_url is not None or "grpcEndpoint" in (before.get("serving") or {}):
        # The merge patch merges nested objects: turned off, a null removes it (once; then absent).
        serving["grpcEndpoint"] = grpc_url
    decided: dict[str, Any] = {"candidate": step.candidate.wire() if step.candidate is not None else None}
    if serve is not None:
        # absent rather than null: a merge patch drops nulls, and the next compare would differ forever
        serving["servingDigest"] = serve.model.digest
        decided["served"] = serve.wire()
        if serve.accuracy is not None:  # kubectl's mAP/Drop columns: what serves
            decided["accuracy"] = serve.accuracy.wire()
    if step.served is not None:
        decided["model"] = step.served.model.wire()
    return {
        **before,
        **{k: v for k, v in decided.items() if v is not None},
        "observedGeneration": generation,
        "phase": phase,
        "pipelineDigest": digest,
        "conditions": conditions,
        "serving": serving,
        "progress": step.progress,
    }


def with_apply_failures(body: dict[str, Any], decision: Decision, failures: list[ApplyFailure], now: str) -> Decision:
    """The API server refused a child (quota, admission, RBAC, an invalid field): say which and
    why in Ready (and Stalled: it needs a person), as a Warning, on top of what was decided; a
    refused Job is not "created". The conditions are decided again from the status as it was, so a
    refusal repeated at every resync leaves status as it is (no patch, no moved transition time,
    no event). The next resync tries again; the status clears by itself once the cause is gone."""
    if not failures:
        return decision
    message = "; ".join(failure.text for failure in failures)[:2000]
    refused_jobs = "; ".join(failure.text for failure in failures if failure.kind == "Job")[:2000]
    before = list((body.get("status") or {}).get("conditions") or [])
    updates = [u for u in decision.updates if u.type not in ("Reconciling", "Stalled")]
    if refused_jobs:
        updates = [u for u in updates if u.reason != Reason.JOB_CREATED]
        updates.append(Condition("Quantized", "Unknown", Reason.APPLY_FAILED, refused_jobs))
    updates.append(Condition("Ready", "False", Reason.APPLY_FAILED, message))
    updates += kstatus_conditions("Failed", updates)
    generation = int(body.get("metadata", {}).get("generation", 1))
    conditions = set_conditions(before, updates, generation, now)
    status = {**decision.status, "conditions": conditions}
    events = _events(before, conditions)
    return Decision(decision.ensure, status, events, decision.pipeline_digest, decision.delete, updates)


def kstatus_conditions(phase: str, updates: list[Condition]) -> list[Condition]:
    """kstatus' abnormal-true conditions, so Flux (and `kstatus`) read the status as-is:
    Reconciling=True while work is in flight, Stalled=True when it cannot progress."""
    ready = next((c for c in reversed(updates) if c.type == "Ready"), None)
    reason = ready.reason if ready is not None else phase
    message = ready.message if ready is not None else ""
    reconciling = phase in IN_FLIGHT_PHASES
    stalled = phase == "Failed"
    return [
        Condition("Reconciling", "True", reason, message) if reconciling else Condition("Reconciling", "False", Reason.IDLE, ""),
        Condition("Stalled", "True", reason, message) if stalled else Condition("Stalled", "False", Reason.PROGRESSING, ""),
    ]


def _progress_message(progress: dict[str, Any] | None) -> str:
    if not progress:
        return "quantize Job running"
    stage, done, total = progress.get("stage"), progress.get("done"), progress.get("total")
    parts = [f"{progress.get('phase') or stage}: {done}/{total}"]
    if progress.get("loss") is not None:
        parts.append(f"loss {float(progress['loss']):.4f}")
    if progress.get("eta_s") is not None:
        parts.append(f"ETA {int(float(progress['eta_s']))}s")
    return ", ".join(parts)


# Ready=False while work is in flight is progress, not a fault: announced as Normal events.
PROGRESS_REASONS = frozenset({"Pending", "Quantizing", "Evaluating", Reason.EXPORTING, Reason.ROLLING_OUT, Reason.JOB_CREATED,
                              Reason.JOB_RUNNING})


def _events(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[Event]:
    events = []
    for condition in changed(before, after):
        if condition["type"] in ("Reconciling", "Stalled"):
            continue  # mirrors of Ready for kstatus: their changes are already announced
        fault = condition["status"] == "False" and condition["type"] != "Available" and condition["reason"] not in PROGRESS_REASONS
        kind = "Warning" if fault else "Normal"
        if condition["type"] == "Available" and find(before, "Available") is None and condition["status"] == "False":
            continue  # "not deployed yet" is not news
        events.append(Event(kind, condition["reason"], f"{condition['type']}={condition['status']}: {condition['message']}"))
    # One event per reason: a pod that cannot run sets Quantized and Ready alike; say it once,
    # as the Warning if either is one.
    by_reason: dict[str, Event] = {}
    for event in events:
        kept = by_reason.get(event.reason)
        if kept is None or (event.type == "Warning" and kept.type != "Warning"):
            by_reason[event.reason] = event
    return list(by_reason.values())
