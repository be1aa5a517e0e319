"""kopf handlers: thin — observe, decide (pure), ensure children, report.

The same reconcile runs on create, on spec updates, on operator start (resume) and on
a timer, so the operator is level-triggered: a restart mid-pipeline, a deleted child
or a finished Job are all picked up at the next tick without duplicating work.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client, config

from rtdetr_edge.resource import SpecError, parse_resource, pipeline_digest
from rtdetr_operator import GROUP, PLURAL, VERSION
from rtdetr_operator.exporter import export_job_name
from rtdetr_operator.kube import Kube
from rtdetr_operator.names import quantize_job_name, runtime_name
from rtdetr_operator.reconcile import Observed, decide
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


class Reconciler:
    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def observe(self, body: dict[str, Any]) -> Observed:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        try:
            model = parse_resource(body)
            digest = pipeline_digest(model.spec)
        except SpecError:
            model, digest = None, None
        lines = self.settings.progress_log_lines
        quantize = self.kube.observe_job(namespace, quantize_job_name(name, digest), lines) if digest else None
        export = None
        if digest and model is not None and model.spec.source.checkpoint:
            export = self.kube.observe_job(namespace, export_job_name(name, digest), lines)
        return Observed(
            quantize_job=quantize,
            export_job=export,
            deployment=self.kube.observe_deployment(namespace, runtime_name(name)),
        )

    def reconcile(self, body: dict[str, Any], patch: kopf.Patch, logger: Any) -> None:
        with self._locks[body["metadata"]["uid"]]:  # timers and change handlers may overlap
            decision = decide(body, self.settings, self.observe(body), now_iso())
            for manifest in decision.ensure:
                outcome = self.kube.ensure(manifest)
                log = logger.debug if outcome == "unchanged" else logger.info
                log("%s %s %s", outcome, manifest["kind"], manifest["metadata"]["name"])
            for event in decision.events:
                kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
            changes = status_patch(dict(body.get("status") or {}), decision.status)
            if changes:
                patch.status.update(changes)


def register(registry: kopf.OperatorRegistry, operator_settings: OperatorSettings) -> None:
    """Register the handlers for ``operator_settings`` on ``registry`` (no global state)."""
    state: dict[str, Reconciler] = {}

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
        settings.posting.level = 20  # post Normal events (INFO) too, not only warnings
        settings.watching.server_timeout = 300
        settings.persistence.finalizer = "rtdetr.io/operator"
        # Namespaced mode runs with Roles only: no cluster-scoped CRD/namespace scans.
        settings.scanning.disabled = bool(operator_settings.namespaces)
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

    def handle(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        state["reconciler"].reconcile(dict(body), patch, logger)

    kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="resume")(handle)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="create")(handle)
    kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry, id="update")(handle)
    kopf.timer(
        GROUP, VERSION, PLURAL, registry=registry, id="resync",
        interval=operator_settings.resync_seconds, initial_delay=operator_settings.resync_seconds,
    )(handle)  # fmt: skip
