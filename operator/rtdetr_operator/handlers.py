"""kopf handlers: thin — observe, decide (pure), ensure children, report.

The same reconcile runs on create, on spec updates, on operator start (resume) and on
a timer, so the operator is level-triggered: a restart mid-pipeline, a deleted child
or a finished Job are all picked up at the next tick without duplicating work.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rtdetr_edge.resource import SpecError, earlier_pipeline_digest, parse_resource, pipeline_digest
from rtdetr_operator import GROUP, PLURAL, VERSION
from rtdetr_operator.exporter import export_job_name
from rtdetr_operator.kube import ForeignObject, Kube
from rtdetr_operator.manifests import ANNOTATION_PIPELINE, plain_port
from rtdetr_operator.names import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED,
    quantize_job_name,
    runtime_name,
    selector_labels,
)
from rtdetr_operator.reconcile import ApplyFailure, JobObservation, Observed, PipelineJob, decide, with_apply_failures
from rtdetr_operator.settings import OperatorSettings


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``before`` into ``after`` (top-level keys; None removes)."""
    patch = {key: value for key, value in after.items() if before.get(key) != value}
    for key in before:
        if key not in after and key != "kopf":
            patch[key] = None
    return {k: v for k, v in patch.items() if not (v is None and before.get(k) is None)}


# Children watched through kopf indexes (one watch per kind, filtered server-side by our
# managed-by label) instead of 3-6 GETs per resource per resync.
CHILD_KINDS = {"jobs": ("batch", "v1"), "pods": ("", "v1"), "deployments": ("apps", "v1"), "services": ("", "v1"),
               "horizontalpodautoscalers": ("autoscaling", "v2"), "networkpolicies": ("networking.k8s.io", "v1"),
               "configmaps": ("", "v1")}  # fmt: skip


@dataclass(frozen=True)
class Children:
    """What the watches hold for one resource: its Jobs, Deployment, Service, HPA, NetworkPolicy and
    their pods."""

    jobs: dict[str, dict[str, Any]]  # by name
    deployment: dict[str, Any] | None
    service: dict[str, Any] | None
    pods: dict[str, list[dict[str, Any]]]  # by owner: "job/<name>" or "runtime"
    autoscaler: dict[str, Any] | None = None
    network_policy: dict[str, Any] | None = None
    config_maps: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name

    @classmethod
    def from_indexes(cls, body: dict[str, Any], indexes: dict[str, Any]) -> Children:
        namespace, name, uid = body["metadata"]["namespace"], body["metadata"]["name"], body["metadata"]["uid"]

        def owned(index_name: str) -> list[dict[str, Any]]:
            return list(indexes[index_name].get(uid, []))

        service = runtime_name(name)
        pods: dict[str, list[dict[str, Any]]] = {}
        instance = selector_labels(name)[INSTANCE_LABEL]  # the label value (cut to 63 characters)
        for pod in indexes["rtdetr_pods"].get((namespace, instance), []):
            labels = pod["metadata"].get("labels") or {}
            key = f"job/{labels['job-name']}" if "job-name" in labels else "runtime"
            pods.setdefault(key, []).append(pod)
        return cls(
            jobs={job["metadata"]["name"]: job for job in owned("rtdetr_jobs")},
            deployment=next((d for d in owned("rtdetr_deployments") if d["metadata"]["name"] == service), None),
            service=next((s for s in owned("rtdetr_services") if s["metadata"]["name"] == service), None),
            pods=pods,
            autoscaler=next((h for h in owned("rtdetr_horizontalpodautoscalers") if h["metadata"]["name"] == service), None),
            network_policy=next((n for n in owned("rtdetr_networkpolicies") if n["metadata"]["name"] == service), None),
            config_maps={c["metadata"]["name"]: c for c in owned("rtdetr_configmaps")},
        )

    def live(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind == "Job":
            return self.jobs.get(name)
        if kind == "ConfigMap":
            return self.config_maps.get(name)
        return {"Deployment": self.deployment, "Service": self.service, "HorizontalPodAutoscaler": self.autoscaler,
                "NetworkPolicy": self.network_policy}.get(kind)  # fmt: skip

    def pipeline_jobs(self) -> tuple[PipelineJob, ...]:
        return tuple(
            PipelineJob(name, str((job["metadata"].get("labels") or {}).get(COMPONENT_LABEL, "")),
                        str((job["metadata"].get("annotations") or {}).get(ANNOTATION_PIPELINE, "")),
                        not any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                                for c in (job.get("status") or {}).get("conditions") or []))  # fmt: skip
            for name, job in self.jobs.items()
        )


class Reconciler:
    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def observe(self, body: dict[str, Any], children: Children) -> Observed:
        name = body["metadata"]["name"]
        try:
            model = parse_resource(body)
            digest = pipeline_digest(model.spec)
            earlier = earlier_pipeline_digest(model.spec)
        except SpecError:
            model, digest, earlier = None, None, None
        lines = self.settings.progress_log_lines

        def job(job_name: str) -> JobObservation | None:
            return self.kube.observe_job(children.jobs.get(job_name), children.pods.get(f"job/{job_name}", []), lines)

        quantize = None
        if digest and earlier:
            # A quantize Job the previous release started for this spec runs on under its name.
            names = [quantize_job_name(name, d) for d in (digest, earlier)]
            quantize = job(next((n for n in names if n in children.jobs), names[0]))
        export = None
        if digest and model is not None and model.spec.source.checkpoint:
            export = job(export_job_name(name, digest))
        return Observed(
            quantize_job=quantize,
            export_job=export,
            deployment=self.kube.observe_deployment(children.deployment, children.pods.get("runtime", [])),
            pipeline_jobs=children.pipeline_jobs(),
            autoscaler=self.kube.observe_autoscaler(children.autoscaler),
            network_policy=children.network_policy is not None,
        )

    def reconcile(self, body: dict[str, Any], patch: kopf.Patch, logger: Any, indexes: dict[str, Any]) -> None:
        with self._locks[body["metadata"]["uid"]]:  # timers and change handlers may overlap
            children = Children.from_indexes(body, indexes)
            now = now_iso()
            observed = self.observe(body, children)
            decision = decide(body, self.settings, observed, now)
            if decision.needs_pod_models and observed.pod_models is None:
                # An in-place swap is confirmed by the pods: ask them, then decide with their answers.
                serving = parse_resource(body).spec.serving
                pod_models = self.kube.ask_pods(children.pods.get("runtime", []), plain_port(serving), body["metadata"]["name"])
                decision = decide(body, self.settings, replace(observed, pod_models=pod_models), now)
            namespace = body["metadata"]["namespace"]
            failures: list[ApplyFailure] = []
            for manifest in decision.ensure:
                kind, name = manifest["kind"], manifest["metadata"]["name"]
                try:
                    outcome = self.kube.ensure(manifest, children.live(manifest))
                except ApiException as error:
                    failures.append(ApplyFailure(kind, f"{kind} {name}: {api_message(error)}"))
                    logger.error("cannot apply %s %s: %s", kind, name, api_message(error))
                    continue
                except ForeignObject as error:
                    failures.append(ApplyFailure(kind, str(error)))
                    logger.error("%s", error)
                    continue
                log = logger.debug if outcome in ("unchanged", "exists") else logger.info
                log("%s %s %s", outcome, kind, name)
            for kind, name in decision.delete:
                try:
                    if self.kube.delete(kind, namespace, name):
                        logger.info("deleted superseded %s %s", kind, name)
                except ApiException as error:
                    failures.append(ApplyFailure("", f"deleting {kind} {name}: {api_message(error)}"))
            decision = with_apply_failures(body, decision, failures, now)
            for event in decision.events:
                kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
            changes = status_patch(dict(body.get("status") or {}), decision.status)
            if changes:
                patch.status.update(changes)


def api_message(error: ApiException) -> str:
    """The API server's own words (its Status message), with the HTTP status."""
    try:
        message = json.loads(error.body or "{}").get("message") or error.reason
    except (ValueError, AttributeError):
        message = error.reason
    return f"{message} ({error.status})"


def index_child(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, dict[str, Any]]:
    """Jobs, Deployments and Services by their RTDETRModel's uid; pods (owned by a Job or a
    ReplicaSet) by (namespace, instance label)."""
    metadata = body.get("metadata") or {}
    if body.get("kind") == "Pod" or "containers" in (body.get("spec") or {}):
        instance = (metadata.get("labels") or {}).get(INSTANCE_LABEL)
        return {(namespace, instance): dict(body)} if instance else {}
    owners = [ref["uid"] for ref in metadata.get("ownerReferences") or [] if ref.get("kind") == "RTDETRModel"]
    return {uid: dict(body) for uid in owners}


def register(registry: kopf.OperatorRegistry, operator_settings: OperatorSettings) -> None:
    """Register the handlers for ``operator_settings`` on ``registry`` (no global state)."""
    state: dict[str, Reconciler] = {}

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
        settings.posting.level = 20  # post Normal events (INFO) too, not only warnings
        settings.watching.server_timeout = 300
        settings.persistence.finalizer = "rtdetr.io/operator"
        # A deletion that lands while the resync timer runs waits for that run to end before the
        # finalizer goes; kopf checks again after this long (default 60 s: `kubectl delete` hung a
        # minute on the real node). A resync takes milliseconds.
        settings.background.cancellation_polling = 1
        # Namespaced mode runs with Roles only: no cluster-scoped CRD/namespace scans.
        settings.scanning.disabled = bool(operator_settings.namespaces)
        for plural, (group, version) in CHILD_KINDS.items():  # watch only our children
            settings.watching.label_selectors[group, version, plural] = ",".join(f"{k}={v}" for k, v in MANAGED.items())
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        state["reconciler"] = Reconciler(operator_settings, Kube(client.ApiClient()))
        logger.info("rtdetr-edge operator started (resync every %.1fs)", operator_settings.resync_seconds)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The kubernetes client's own discovery, as for the child-object client: in a pod the
        # service account with KUBERNETES_SERVICE_HOST (no dependency on cluster DNS, unlike
        # kopf's minimal login with https://kubernetes.default.svc); elsewhere $KUBECONFIG.
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    def close(logger: kopf.Logger, **_: Any) -> None:
        if "reconciler" in state:
            state["reconciler"].kube.close()
            logger.info("closed the Kubernetes API client")

    @kopf.on.probe(id="reconciler", registry=registry)
    def probe(**_: Any) -> str:
        return "ready" if "reconciler" in state else "starting"

    for plural, (group, version) in CHILD_KINDS.items():
        kopf.index(group, version, plural, registry=registry, id=f"rtdetr_{plural}",
                   labels=dict(MANAGED))(index_child)  # fmt: skip

    def handle(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **kwargs: Any) -> None:
        indexes = {f"rtdetr_{plural}": kwargs[f"rtdetr_{plural}"] for plural in CHILD_KINDS}
        state["reconciler"].reconcile(dict(body), patch, logger, indexes)

    kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="resume")(handle)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="create")(handle)
    kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry, id="update")(handle)
    kopf.timer(
        GROUP, VERSION, PLURAL, registry=registry, id="resync",
        interval=operator_settings.resync_seconds, initial_delay=operator_settings.resync_seconds,
    )(handle)  # fmt: skip
