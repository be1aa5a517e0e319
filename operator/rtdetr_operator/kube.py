"""The Kubernetes adapter: turn watched children into observations, create/apply/delete
manifests. No decisions here."""

from __future__ import annotations

import json
import logging
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rtdetr_edge.progress import PROGRESS_PREFIX
from rtdetr_operator.drift import drifted, releases_field
from rtdetr_operator.pod_status import deployment_stalled, pod_problem, replica_failure
from rtdetr_operator.reconcile import (
    AutoscalerObservation,
    DeploymentObservation,
    HpaCondition,
    JobObservation,
    PodModel,
)

log = logging.getLogger(__name__)
FIELD_MANAGER = "rtdetr-edge-operator"
# Holds the serving Deployment's replica count for the moment the operator lets go of it (the
# HPA's controller takes it with its first scale): see Kube.ensure.
HANDOVER_MANAGER = "rtdetr-edge-operator-handover"
APPLIED_KINDS = frozenset({"Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy", "ConfigMap"})
POD_INDEX_TIMEOUT = urllib3.Timeout(connect=2.0, read=3.0)


class ForeignObject(Exception):
    """A child's name is taken by an object this resource does not own."""


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.pods_http = urllib3.PoolManager(retries=False, timeout=POD_INDEX_TIMEOUT)

    def close(self) -> None:
        self.api_client.close()
        self.pods_http.clear()

    def ask_pods(self, pods: list[dict[str, Any]], port: int, model_name: str) -> tuple[PodModel, ...]:
        """What each Ready serving pod serves, from its repository index (``POST
        /v2/repository/index`` on ``port``, open without credentials); a pod that does not answer
        says why. Pods not Ready yet are left out: they load the ConfigMap's model as they start."""
        answers = []
        for pod in pods:
            status = pod.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            if not ready or not status.get("podIP") or pod["metadata"].get("deletionTimestamp"):
                continue
            name = pod["metadata"]["name"]
            url = f"http://{status['podIP']}:{port}/v2/repository/index"
            try:
                response = self.pods_http.request("POST", url, body=b"{}", headers={"Content-Type": "application/json"})
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                entries = [e for e in json.loads(response.data) if e.get("name") == model_name]
            except (urllib3.exceptions.HTTPError, ValueError, AttributeError) as error:
                answers.append(PodModel(name, error=f"POST {url} failed: {error}"))
                continue
            by_state = {e.get("state"): e for e in entries}
            refused = by_state.get("UNAVAILABLE") or {}
            answers.append(PodModel(name, serving=str((by_state.get("READY") or {}).get("version", "")),
                                    loading=str((by_state.get("LOADING") or {}).get("version", "")),
                                    refused=str(refused.get("version", "")), reason=str(refused.get("reason", ""))))  # fmt: skip
        return tuple(answers)

    # -- reading (children arrive through kopf's watch indexes; see handlers.py) --------------
    def observe_job(self, job: dict[str, Any] | None, pods: list[dict[str, Any]], log_lines: int) -> JobObservation | None:
        """A Job and its pods as the watch delivered them; the only request is for a running
        pod's last log lines (training progress)."""
        if job is None:
            return None
        namespace = job["metadata"]["namespace"]
        status = job.get("status") or {}
        finished = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = finished.get("Failed")
        pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", "")) if pods else None
        termination = None
        progress = None
        waiting: tuple[str, str] = ("", "")
        if pod is not None and not finished:
            waiting = pod_problem(pod)
        elif pod is None and not finished:
            waiting = self._pod_creation_failure(job)
        if pod is not None:
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated") or {}
                if terminated.get("message"):
                    termination = terminated["message"]
            if not finished and (pod.get("status") or {}).get("phase") == "Running":
                progress = self._progress(namespace, pod["metadata"]["name"], log_lines)
        return JobObservation(
            active=not finished,
            succeeded="Complete" in finished or "SuccessCriteriaMet" in finished,
            failed=failed is not None,
            failure_reason=str(failed.get("reason", "")) if failed else "",
            failure_message=str(failed.get("message", "")) if failed else "",
            termination_message=termination,
            progress=progress,
            waiting_reason=waiting[0],
            waiting_message=waiting[1],
        )

    def _pod_creation_failure(self, job: dict[str, Any]) -> tuple[str, str]:
        """A Job without a pod: the Job controller's FailedCreate event says why (quota, Pod
        Security, an admission webhook). Read only in that state."""
        metadata = job["metadata"]
        try:
            events = self.core.list_namespaced_event(
                metadata["namespace"], field_selector=f"involvedObject.uid={metadata['uid']},reason=FailedCreate",
                _preload_content=False,
            )  # fmt: skip
        except ApiException as error:
            log.debug("no events for Job %s: %s", metadata["name"], error.reason)
            return "", ""
        items = json.loads(events.data).get("items") or []
        if not items:
            return "", ""
        latest = max(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return "FailedCreate", f"the Job controller cannot create its pod: {latest.get('message', '')}"

    def _progress(self, namespace: str, pod_name: str, lines: int) -> dict[str, Any] | None:
        try:
            text = self.core.read_namespaced_pod_log(pod_name, namespace, tail_lines=lines, _preload_content=False).data
        except ApiException as error:
            log.debug("no log for %s/%s yet: %s", namespace, pod_name, error.reason)
            return None
        for line in reversed(text.decode(errors="replace").splitlines()):
            if line.startswith(PROGRESS_PREFIX + " "):
                try:
                    return dict(json.loads(line[len(PROGRESS_PREFIX) + 1 :]))
                except ValueError:
                    return None
        return None

    @staticmethod
    def observe_deployment(deployment: dict[str, Any] | None, pods: list[dict[str, Any]]) -> DeploymentObservation | None:
        if deployment is None:
            return None
        status = deployment.get("status") or {}
        replicas = int(deployment["spec"].get("replicas", 1))
        settled = (int(status.get("availableReplicas", 0)) >= replicas and int(status.get("updatedReplicas", 0)) >= replicas
                   and int(status.get("replicas", 0)) == int(status.get("updatedReplicas", 0)))  # fmt: skip
        # Why pods are missing, only while some are (a settled Deployment has nothing to explain).
        problem = ("", "") if settled else next((p for p in map(pod_problem, pods) if p[0]), ("", ""))
        cannot_create = replica_failure(deployment)
        if not problem[0] and cannot_create:
            problem = ("FailedCreate", cannot_create)
        template = deployment["spec"].get("template") or {}
        return DeploymentObservation(
            annotations=dict(deployment["metadata"].get("annotations") or {}),
            template_annotations=dict((template.get("metadata") or {}).get("annotations") or {}),
            replicas=replicas,
            current_replicas=int(status.get("replicas", 0)),
            generation=int(deployment["metadata"].get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            updated_replicas=int(status.get("updatedReplicas", 0)),
            ready_replicas=int(status.get("readyReplicas", 0)),
            available_replicas=int(status.get("availableReplicas", 0)),
            pod_problem_reason=problem[0],
            pod_problem_message=problem[1],
            stalled_message=deployment_stalled(deployment),
        )

    @staticmethod
    def observe_autoscaler(hpa: dict[str, Any] | None) -> AutoscalerObservation | None:
        if hpa is None:
            return None
        status = hpa.get("status") or {}
        conditions = tuple(
            HpaCondition(str(c.get("type", "")), str(c.get("status", "")), str(c.get("reason") or ""), str(c.get("message") or ""))
            for c in status.get("conditions") or []
        )
        return AutoscalerObservation(int(status.get("currentReplicas") or 0), int(status.get("desiredReplicas") or 0), conditions)

    # -- writing ---------------------------------------------------------------------------
    def ensure(self, manifest: dict[str, Any], live: dict[str, Any] | None) -> str:
        """Make ``manifest`` true on the server, given the ``live`` object the watch last saw
        (None: none yet); returns what happened (applied, configured, unchanged, created, exists).

        Deployments, Services, HPAs and NetworkPolicies are server-side applied with our field manager, forcing
        ownership of the fields we set — but only when the live object lacks one of them
        (drift.py): an idle resource costs no request, while a `kubectl edit`/`scale` of an
        owned field is reverted at the next reconcile. Fields others own (an HPA's, a mesh's
        annotations) are left alone. Jobs and ConfigMaps are named by the pipeline digest and
        immutable in effect: created once.

        A Deployment applied without ``spec.replicas`` (autoscaling) while we still own the count
        would lose it: server-side apply removes a field its only manager stops applying, and the
        Deployment would fall back to 1 pod. So a second manager first applies the live count
        (Kubernetes' documented hand-over between managers); the HPA takes it from there.
        """
        kind = manifest["kind"]
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        if kind in APPLIED_KINDS:
            handover = kind == "Deployment" and releases_field(manifest, live, FIELD_MANAGER, ("spec", "replicas"))
            if not drifted(manifest, live) and not handover:
                return "unchanged"
            if live is None:
                self._refuse_foreign(manifest)
            patch = {
                "ConfigMap": self.core.patch_namespaced_config_map,
                "Deployment": self.apps.patch_namespaced_deployment,
                "Service": self.core.patch_namespaced_service,
                "HorizontalPodAutoscaler": self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                "NetworkPolicy": self.networking.patch_namespaced_network_policy,
            }[kind]
            if handover:
                assert live is not None
                held = {"apiVersion": manifest["apiVersion"], "kind": kind, "metadata": {"name": name, "namespace": namespace},
                        "spec": {"replicas": live["spec"]["replicas"]}}  # fmt: skip
                patch(name, namespace, held, field_manager=HANDOVER_MANAGER,
                      _content_type="application/apply-patch+yaml", _preload_content=False)  # fmt: skip
                log.info("handed %s %s/%s's replica count (%s) over to its autoscaler", kind, namespace, name, live["spec"]["replicas"])
            patch(name, namespace, manifest, field_manager=FIELD_MANAGER, force=True,
                  _content_type="application/apply-patch+yaml", _preload_content=False)  # fmt: skip
            return "applied" if live is None else "configured"
        if live is not None:
            return "exists"
        create = {"Job": self.batch.create_namespaced_job}[kind]
        try:
            create(namespace, manifest, _preload_content=False)
            log.info("created %s %s/%s", kind, namespace, name)
            return "created"
        except ApiException as error:
            if error.status != 409:
                raise
        return "exists"

    def _refuse_foreign(self, manifest: dict[str, Any]) -> None:
        """Before the first apply: a same-named object someone else made is never taken over
        (a forced apply would silently adopt it). Costs one GET, only when ours is not seen."""
        kind, metadata = manifest["kind"], manifest["metadata"]
        read = {
            "ConfigMap": self.core.read_namespaced_config_map,
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "HorizontalPodAutoscaler": self.autoscaling.read_namespaced_horizontal_pod_autoscaler,
            "NetworkPolicy": self.networking.read_namespaced_network_policy,
        }[kind]
        try:
            existing = json.loads(read(metadata["name"], metadata["namespace"], _preload_content=False).data)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        ours = {ref["uid"] for ref in metadata.get("ownerReferences") or []}
        owners = existing["metadata"].get("ownerReferences") or []
        if not any(ref.get("uid") in ours for ref in owners):
            owner = ", ".join(f"{ref.get('kind')} {ref.get('name')}" for ref in owners) or "nothing"
            raise ForeignObject(f"a {kind} named {metadata['name']} already exists and is not this RTDETRModel's "
                                f"(owned by {owner}); rename the RTDETRModel, or delete or rename that {kind}")  # fmt: skip

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete a superseded child (its pods follow in the background); False if gone already."""
        remove = {
            "Job": self.batch.delete_namespaced_job,
            "ConfigMap": self.core.delete_namespaced_config_map,
            "HorizontalPodAutoscaler": self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            "NetworkPolicy": self.networking.delete_namespaced_network_policy,
        }[kind]
        try:
            remove(name, namespace, propagation_policy="Background", _preload_content=False)
            return True
        except ApiException as error:
            if error.status != 404:
                raise
        return False
