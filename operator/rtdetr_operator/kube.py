"""The Kubernetes adapter: read children, create-or-patch manifests. No decisions here."""

from __future__ import annotations

import json
import logging
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rtdetr_edge.progress import PROGRESS_PREFIX
from rtdetr_operator.pod_status import deployment_stalled, pod_problem
from rtdetr_operator.reconcile import DeploymentObservation, JobObservation

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "rtdetr-edge-operator"
APPLIED_KINDS = frozenset({"Deployment", "Service"})


def _json(response: Any) -> dict[str, Any]:
    return dict(json.loads(response.data))


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self._applied_versions: dict[tuple[str, str, str], str] = {}  # what our last apply left

    def close(self) -> None:
        self.api_client.close()

    # -- reading ---------------------------------------------------------------------------
    def _read(self, reader: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return _json(reader(name, namespace, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def observe_job(self, namespace: str, name: str, log_lines: int) -> JobObservation | None:
        job = self._read(self.batch.read_namespaced_job, name, namespace)
        if job is None:
            return None
        status = job.get("status") or {}
        finished = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = finished.get("Failed")
        pod = self._latest_pod(namespace, name)
        termination = None
        progress = None
        waiting: tuple[str, str] = ("", "")
        if pod is not None and not finished:
            waiting = pod_problem(pod)
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

    def _latest_pod(self, namespace: str, job_name: str) -> dict[str, Any] | None:
        pods = _json(
            self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}", _preload_content=False)
        ).get("items", [])
        if not pods:
            return None
        return max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))

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

    def observe_deployment(self, namespace: str, name: str) -> DeploymentObservation | None:
        deployment = self._read(self.apps.read_namespaced_deployment, name, namespace)
        if deployment is None:
            return None
        status = deployment.get("status") or {}
        replicas = int(deployment["spec"].get("replicas", 1))
        problem = ("", "")
        settled = (int(status.get("availableReplicas", 0)) >= replicas and int(status.get("updatedReplicas", 0)) >= replicas
                   and int(status.get("replicas", 0)) == int(status.get("updatedReplicas", 0)))  # fmt: skip
        if not settled:  # only then: why are pods missing? (no extra request on the steady path)
            selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
            pods = _json(self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False))["items"]
            problem = next((p for p in map(pod_problem, pods) if p[0]), ("", ""))
        stalled = deployment_stalled(deployment)
        return DeploymentObservation(
            annotations=dict(deployment["metadata"].get("annotations") or {}),
            replicas=replicas,
            current_replicas=int(status.get("replicas", 0)),
            generation=int(deployment["metadata"].get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            updated_replicas=int(status.get("updatedReplicas", 0)),
            ready_replicas=int(status.get("readyReplicas", 0)),
            available_replicas=int(status.get("availableReplicas", 0)),
            pod_problem_reason=problem[0],
            pod_problem_message=problem[1],
            stalled_message=stalled,
        )

    # -- writing ---------------------------------------------------------------------------
    def ensure(self, manifest: dict[str, Any]) -> str:
        """Make ``manifest`` true on the server; returns what happened (created, configured,
        unchanged, exists).

        Deployments and Services are server-side applied with our field manager, forcing
        ownership of the fields we set: a `kubectl edit`/`scale` of them is reverted at the next
        reconcile, fields others own (an HPA's, a mesh's annotations) are left alone. Jobs and
        ConfigMaps are named by the pipeline digest and immutable in effect: created once.
        """
        kind = manifest["kind"]
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        if kind in APPLIED_KINDS:
            patch = {"Deployment": self.apps.patch_namespaced_deployment, "Service": self.core.patch_namespaced_service}[kind]
            applied = _json(patch(name, namespace, manifest, field_manager=FIELD_MANAGER, force=True,
                                  _content_type="application/apply-patch+yaml", _preload_content=False))  # fmt: skip
            version = applied["metadata"]["resourceVersion"]
            previous = self._applied_versions.get((kind, namespace, name))
            self._applied_versions[(kind, namespace, name)] = version
            return "unchanged" if previous == version else "configured" if previous else "applied"
        create = {"Job": self.batch.create_namespaced_job, "ConfigMap": self.core.create_namespaced_config_map}[kind]
        try:
            create(namespace, manifest, _preload_content=False)
            log.info("created %s %s/%s", kind, namespace, name)
            return "created"
        except ApiException as error:
            if error.status != 409:
                raise
        return "exists"
