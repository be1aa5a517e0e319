"""The reconcile decision as a table (pure: no API server). Branches the real-cluster tier
cannot reach cheaply — a Job killed at its deadline after hours, serving pods lost with
their node, an export that finished — are pinned here with the observations a cluster
would give."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from rtdetr_edge.api.job import PipelineRecord
from rtdetr_edge.api.status import RTDETRModelStatus
from rtdetr_edge.resource import parse_resource, pipeline_digest
from rtdetr_operator.conditions import find
from rtdetr_operator.names import pipeline_configmap_name, quantize_job_name
from rtdetr_operator.pod_status import pod_problem
from rtdetr_operator.reconcile import (
    AutoscalerObservation,
    Decision,
    DeploymentObservation,
    HpaCondition,
    JobObservation,
    Observed,
    PodModel,
    isa_placement_hint,
)
from rtdetr_operator.reconcile import decide as decide_as_written
from rtdetr_operator.settings import OperatorSettings

from .test_manifests import body_of, summary

NOW = "2026-12-02T00:00:00Z"
LATER = "2026-12-02T01:00:00Z"


def decide(body: dict[str, Any], settings: OperatorSettings, observed: Observed, now: str) -> Decision:
    """Every status a table below produces is one the typed API describes (phase enum, condition
    and accuracy shapes, no stray fields in them): what the CRD's schema is generated from."""
    decision = decide_as_written(body, settings, observed, now)
    if decision.needs_pod_models and observed.pod_models is None and observed.deployment is not None:
        # As the adapter does (Kube.ask_pods), with pods that all serve what the ConfigMap names.
        decision = decide_as_written(body, settings, replace(observed, pod_models=pods_serving(decision, observed)), now)
    RTDETRModelStatus.model_validate(decision.status)
    return decision


def pipeline_children(decision: Decision) -> list[dict[str, Any]]:
    """The Jobs and stage-config ConfigMaps a decision would create: a pipeline run."""
    return [m for m in decision.ensure if m["kind"] == "Job" or (m["kind"] == "ConfigMap" and "-pipeline-" in m["metadata"]["name"])]


def configmap_digest(decision: Decision) -> str:
    configmap = next(m for m in decision.ensure if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-model"))
    return str(json.loads(configmap["data"]["model.json"])["digest"])


def pods_serving(decision: Decision, observed: Observed, digest: str | None = None) -> tuple[PodModel, ...]:
    assert observed.deployment is not None
    digest = digest or configmap_digest(decision)
    return tuple(PodModel(f"pod-{i}", serving=digest) for i in range(observed.deployment.available_replicas))


def r50() -> dict[str, Any]:
    return body_of("rtdetr-r50.yaml")


def digest_of(body: dict[str, Any]) -> str:
    return pipeline_digest(parse_resource(body).spec)


def condition(status: dict[str, Any], condition_type: str) -> dict[str, Any]:
    found = find(status["conditions"], condition_type)
    assert found is not None, f"no {condition_type} condition in {status['conditions']}"
    return found


def serving(body: dict[str, Any], available: int) -> tuple[dict[str, Any], Observed]:
    """A resource already serving its model, with ``available`` pods left."""
    digest = digest_of(body)
    first = decide(body, OperatorSettings(), Observed(quantize_job=JobObservation(succeeded=True,
                   termination_message=summary(digest))), NOW)  # fmt: skip
    deployment = next(m for m in first.ensure if m["kind"] == "Deployment")
    annotations = deployment["metadata"]["annotations"]
    n = int(body["spec"]["serving"]["replicas"])
    live = DeploymentObservation(annotations=annotations, replicas=n, current_replicas=n, generation=1, observed_generation=1,
                                 updated_replicas=n, ready_replicas=n, available_replicas=n)  # fmt: skip
    ready = decide({**body, "status": first.status}, OperatorSettings(), Observed(deployment=live), NOW)
    assert condition(ready.status, "Ready")["reason"] == "Serving"
    in_place = body["spec"]["serving"].get("rollout", "InPlace") == "InPlace"
    assert ready.needs_pod_models == in_place, "InPlace: the pods confirm the model they loaded before Ready says Serving"
    steady = decide_as_written({**body, "status": ready.status}, OperatorSettings(), Observed(deployment=live), NOW)
    assert condition(steady.status, "Ready")["reason"] == "Serving" and not steady.needs_pod_models, "confirmed: not asked again"
    lost = DeploymentObservation(annotations=annotations, replicas=n, current_replicas=n, generation=1, observed_generation=1,
                                 updated_replicas=n, ready_replicas=available, available_replicas=available)  # fmt: skip
    return {**body, "status": ready.status}, Observed(deployment=lost)


@pytest.mark.parametrize(
    ("job", "quantized_reason", "ready_reason", "fragment"),
    [
        (JobObservation(failed=True, failure_reason="DeadlineExceeded", termination_message="quantize: iteration 310/500"),
         "DeadlineExceeded", "QuantizationFailed", "exceeded compression.activeDeadlineSeconds; last output: quantize: iteration 310/500"),
        (JobObservation(failed=True, failure_reason="BackoffLimitExceeded",
                        termination_message=json.dumps({"ok": False, "reason": "DatasetFailed", "message": "corrupt JPEG: x.jpg"})),
         "JobFailed", "QuantizationFailed", "corrupt JPEG: x.jpg"),
        (JobObservation(failed=True, termination_message="Traceback\nMemoryError\nerror: out of GPU memory"),
         "JobFailed", "QuantizationFailed", "MemoryError | error: out of GPU memory"),
        (JobObservation(succeeded=True, termination_message="not json"), "ResultUnreadable", "QuantizationFailed", "unreadable"),
        (JobObservation(active=True, waiting_reason="ImagePullBackOff", waiting_message='Back-off pulling image "x"'),
         "ImagePullBackOff", "ImagePullBackOff", 'Back-off pulling image "x"'),
        (JobObservation(active=True, waiting_reason="Unschedulable", waiting_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
         "Unschedulable", "Unschedulable", "Insufficient nvidia.com/gpu"),
        (JobObservation(active=True, progress={"stage": "quantize", "done": 120, "total": 500, "loss": 0.0123, "eta_s": 4560}),
         "JobRunning", "Quantizing", "120/500, loss 0.0123, ETA 4560s"),
    ],
    ids=["deadline", "structured-failure", "crash-log-tail", "unreadable-result", "image-pull", "unschedulable", "progress"],
)  # fmt: skip
def test_quantize_job_outcomes(job: JobObservation, quantized_reason: str, ready_reason: str, fragment: str) -> None:
    decision = decide(r50(), OperatorSettings(), Observed(quantize_job=job), NOW)
    quantized = condition(decision.status, "Quantized")
    assert quantized["reason"] == quantized_reason and fragment in quantized["message"], quantized
    assert condition(decision.status, "Ready")["reason"] == ready_reason
    assert decision.ensure == [], "an existing Job is never re-created"


def test_serving_pods_lost_with_their_node_are_reported() -> None:
    body, observed = serving(r50(), available=0)
    decision = decide(body, OperatorSettings(), observed, LATER)
    available = condition(decision.status, "Available")
    assert available["reason"] == "ReplicasLost" and "no model is being served" in available["message"]
    assert condition(decision.status, "Ready")["reason"] == "RollingOut"


def test_transition_time_moves_only_when_status_flips() -> None:
    body, observed = serving(r50(), available=2)
    again = decide(body, OperatorSettings(), observed, LATER)
    assert condition(again.status, "Ready") == condition(body["status"], "Ready")
    assert again.events == []


def test_checkpoint_source_exports_first_then_quantizes_the_export() -> None:
    body = r50()
    body["spec"]["source"] = {"checkpoint": "pvc://models/rtdetr_r50vd_6x_coco.pdparams"}
    first = decide(body, OperatorSettings(), Observed(), NOW)
    assert [m["kind"] for m in first.ensure] == ["Job"] and first.status["phase"] == "Exporting"
    assert "trt=True" in first.ensure[0]["spec"]["template"]["spec"]["containers"][0]["command"][2]
    after = decide(body, OperatorSettings(), Observed(export_job=JobObservation(succeeded=True)), NOW)
    configmap, job = after.ensure
    assert job["metadata"]["annotations"]["rtdetr.io/pipeline-digest"] == first.ensure[0]["metadata"]["annotations"]["rtdetr.io/pipeline-digest"]
    assert "inferenceModel: pvc://rtdetr-artifacts/vision/rtdetr-r50/export-" in configmap["data"]["resource.yaml"]


def test_a_lost_deployment_comes_back_with_the_served_model_after_a_failed_gate() -> None:
    body, _ = serving(r50(), available=2)
    served = body["status"]["served"]
    body["spec"]["quantization"]["trainIter"] = 600  # a new candidate...
    new_digest = digest_of(body)
    failed = JobObservation(succeeded=True, termination_message=summary(new_digest, passed=False, quantized=51.0))
    decision = decide(body, OperatorSettings(), Observed(quantize_job=failed), LATER)  # ...fails; the Deployment is gone
    deployments = [m for m in decision.ensure if m["kind"] == "Deployment"]
    assert len(deployments) == 1, "the model that served comes back"
    assert deployments[0]["metadata"]["annotations"]["rtdetr.io/pipeline-digest"] == served["pipelineDigest"] != new_digest
    assert condition(decision.status, "Ready")["reason"] == "AccuracyGateFailed"
    assert decision.status["served"] == served


@pytest.mark.parametrize(("reason", "quantization"), [("DropExceedsBudget", {}), ("BaselineTooLow", {"minBaselineMap": 60.0})])
def test_the_gates_reason_reaches_its_condition(reason: str, quantization: dict[str, float]) -> None:
    body = r50()
    body["spec"]["quantization"].update(quantization)
    job = JobObservation(succeeded=True, termination_message=summary(digest_of(body), passed=False, quantized=51.0))
    decision = decide(body, OperatorSettings(), Observed(quantize_job=job), NOW)
    assert condition(decision.status, "AccuracyGatePassed")["reason"] == reason
    assert condition(decision.status, "Ready")["reason"] == "AccuracyGateFailed"
    assert not [m for m in decision.ensure if m["kind"] == "Deployment"], "nothing served yet, nothing deployed"


def test_a_rollout_whose_new_pods_never_become_available_is_not_ready() -> None:
    """One old pod still serves, the new template's pod crash-loops: not rolled out (counting
    available pods alone would say it is)."""
    body = r50()
    body["spec"]["serving"]["replicas"] = 1
    body, observed = serving(body, available=1)
    assert observed.deployment is not None
    stuck = DeploymentObservation(annotations=observed.deployment.annotations, replicas=1, current_replicas=2,
                                  generation=2, observed_generation=2, updated_replicas=1, ready_replicas=1,
                                  available_replicas=1)  # fmt: skip
    decision = decide(body, OperatorSettings(), Observed(deployment=stuck), LATER)
    assert condition(decision.status, "Ready")["reason"] == "RollingOut"


CRASHING_POD = {
    "metadata": {"name": "rtdetr-r50-7d9f-abcde"},
    "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}], "containerStatuses": [{
        "name": "runtime", "ready": False, "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=runtime"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                     "message": "Traceback ...\\nPermissionError: [Errno 13] Permission denied: '/var/cache/rtdetr-edge/shapes'\\nerror: warm-up failed"}},
    }]},
}  # fmt: skip


OOM_KILLED_POD = {
    "metadata": {"name": "rtdetr-r50-7d9f-abcde"},
    "spec": {"containers": [{"name": "runtime", "resources": {"limits": {"memory": "256Mi"}}}]},
    "status": {"phase": "Running", "containerStatuses": [{
        "name": "runtime", "ready": False, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container=runtime"}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    }]},
}  # fmt: skip


@pytest.mark.parametrize(
    ("pod", "reason", "fragment"),
    [
        (CRASHING_POD, "CrashLoopBackOff", "last exit 1 (Error): "),
        (OOM_KILLED_POD, "OOMKilled", "container runtime was killed for using more memory than its limit (256Mi), 2 restarts"),
        # Started again after the kill, not ready yet: the same limit kills it again.
        ({**OOM_KILLED_POD, "status": {"containerStatuses": [{"name": "runtime", "ready": False, "state": {"running": {}},
          "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}, "OOMKilled", "its limit (256Mi)"),
        # Ready again (it survived): nothing to report.
        ({**OOM_KILLED_POD, "status": {"containerStatuses": [{"name": "runtime", "ready": True, "state": {"running": {}},
          "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}, "", ""),
        ({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}}, "Unschedulable", "Insufficient nvidia.com/gpu"),
        ({"status": {"phase": "Pending", "containerStatuses": [{"name": "runtime", "state": {"waiting": {
            "reason": "ImagePullBackOff", "message": 'Back-off pulling image "mirror.local/rtdetr:0.1.0"'}}}]}},
         "ImagePullBackOff", "mirror.local/rtdetr"),
        ({"status": {"phase": "Running", "containerStatuses": [{"name": "runtime", "state": {"running": {}}}]}}, "", ""),
    ],
    ids=["crash-loop", "unschedulable", "image-pull", "running", "oom-killed", "oom-killed-restarting", "oom-killed-recovered"],
)  # fmt: skip
def test_pod_problem(pod: dict[str, Any], reason: str, fragment: str) -> None:
    found = pod_problem(pod)
    assert found[0] == reason and fragment in found[1], found


def test_serving_pods_killed_for_memory_say_so_and_what_to_raise() -> None:
    body, observed = serving(r50(), available=0)
    assert observed.deployment is not None
    reason, message = pod_problem(OOM_KILLED_POD)
    killed = replace(observed.deployment, pod_problem_reason=reason, pod_problem_message=message)
    ready = condition(decide(body, OperatorSettings(), Observed(deployment=killed), LATER).status, "Ready")
    assert ready["reason"] == "OOMKilled", ready
    assert "limit (256Mi)" in ready["message"] and "raise serving.resources.limits.memory" in ready["message"], ready


def test_crash_looping_serving_pods_reach_ready_with_the_cause() -> None:
    body, observed = serving(r50(), available=2)
    assert observed.deployment is not None
    reason, message = pod_problem(CRASHING_POD)
    crashing = replace(observed.deployment, generation=2, observed_generation=2, current_replicas=3, updated_replicas=1,
                       pod_problem_reason=reason, pod_problem_message=message)  # fmt: skip
    ready = condition(decide(body, OperatorSettings(), Observed(deployment=crashing), LATER).status, "Ready")
    assert ready["reason"] == "CrashLoopBackOff" and "Permission denied: '/var/cache/rtdetr-edge/shapes'" in ready["message"]
    stalled = replace(crashing, stalled_message='ReplicaSet "rtdetr-r50-7d9f" has timed out progressing.')
    status = decide(body, OperatorSettings(), Observed(deployment=stalled), LATER).status
    assert condition(status, "Ready")["reason"] == "ProgressDeadlineExceeded"
    assert condition(status, "Stalled")["status"] == "True" and "timed out progressing" in condition(status, "Stalled")["message"]


def test_a_verdict_outlives_its_job_and_pod() -> None:
    """Once read, the quantization verdict is kept in status.candidate: the finished Job's pod
    (or the Job) deleted must neither turn it into ResultUnreadable nor re-run hours of QAT."""
    body, _ = serving(r50(), available=2)
    body["spec"]["quantization"]["trainIter"] = 600
    digest = digest_of(body)
    failed = decide(body, OperatorSettings(), Observed(quantize_job=JobObservation(
        succeeded=True, termination_message=summary(digest, passed=False, quantized=51.0))), LATER)  # fmt: skip
    assert failed.status["candidate"]["pipelineDigest"] == digest and failed.status["candidate"]["gate"]["passed"] is False
    body["status"] = failed.status
    for job in (JobObservation(succeeded=True, termination_message=None), None):  # its pod deleted, then the Job
        again = decide(body, OperatorSettings(), Observed(quantize_job=job), LATER)
        assert not pipeline_children(again), "no re-run of the pipeline"
        assert condition(again.status, "Ready")["reason"] == "AccuracyGateFailed", job
        assert condition(again.status, "Quantized")["reason"] == "JobSucceeded"


def test_a_passed_verdict_still_deploys_after_its_job_is_gone() -> None:
    body = r50()
    digest = digest_of(body)
    passed = decide(body, OperatorSettings(), Observed(quantize_job=JobObservation(succeeded=True, termination_message=summary(digest))), NOW)
    body["status"] = {k: v for k, v in passed.status.items() if k != "served"}  # the Deployment was never created
    again = decide(body, OperatorSettings(), Observed(), LATER)
    assert [m["kind"] for m in again.ensure] == ["ConfigMap", "Deployment", "Service"]  # the served model's, then its pods


def test_status_accuracy_describes_the_served_model_and_candidate_the_new_one() -> None:
    body, _ = serving(r50(), available=2)
    served_accuracy = body["status"]["accuracy"]
    body["spec"]["quantization"]["trainIter"] = 600
    failing = JobObservation(succeeded=True, termination_message=summary(digest_of(body), passed=False, quantized=51.0))
    status = decide(body, OperatorSettings(), Observed(quantize_job=failing), LATER).status
    assert status["accuracy"] == served_accuracy and status["accuracy"]["quantizedMap"] == 53.0, "kubectl's mAP column"
    assert status["candidate"]["accuracy"]["quantizedMap"] == 51.0


def test_a_scale_up_keeps_ready() -> None:
    body = r50()
    body, observed = serving(body, available=2)
    assert observed.deployment is not None
    body["spec"]["serving"]["replicas"] = 3
    # The reconcile the edit triggers sees the Deployment as it was (it applies the change after).
    first = decide(body, OperatorSettings(), Observed(deployment=replace(observed.deployment, ready_replicas=2, available_replicas=2)), LATER)
    kept, was = condition(first.status, "Ready"), condition(body["status"], "Ready")
    assert (kept["status"], kept["reason"], kept["lastTransitionTime"]) == ("True", "Serving", was["lastTransitionTime"]), kept
    desired = next(m for m in decide(body, OperatorSettings(), Observed(deployment=observed.deployment), LATER).ensure
                   if m["kind"] == "Deployment")  # fmt: skip
    scaling = replace(observed.deployment, annotations=desired["metadata"]["annotations"], replicas=3, current_replicas=3,
                      generation=2, observed_generation=2, updated_replicas=3, ready_replicas=2, available_replicas=2)  # fmt: skip
    ready = condition(decide(body, OperatorSettings(), Observed(deployment=scaling), LATER).status, "Ready")
    assert ready["status"] == "True" and "2/3" in ready["message"], ready
    # A template change (a new model or serving setting) is a rollout: not Ready until done.
    body["spec"]["serving"]["scoreThreshold"] = 0.3
    rolling = replace(scaling, current_replicas=4, updated_replicas=1, available_replicas=3)
    assert condition(decide(body, OperatorSettings(), Observed(deployment=rolling), LATER).status, "Ready")["reason"] == "RollingOut"


def _runtime(decision: Decision) -> dict[str, Any]:
    return next(m for m in decision.ensure if m["kind"] == "Deployment")


def test_a_replicas_change_leaves_the_pod_template_as_it_is() -> None:
    """A new pod template is a new ReplicaSet that replaces every serving pod: scaling must not
    make one (the operator's result and spec hash live on the Deployment, not its pods)."""
    body, observed = serving(r50(), available=2)
    before = _runtime(decide(body, OperatorSettings(), observed, LATER))
    body["spec"]["serving"]["replicas"] = 5
    after = _runtime(decide(body, OperatorSettings(), observed, LATER))
    assert after["spec"]["replicas"] == 5
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["annotations"]["rtdetr.io/runtime-template-hash"] == before["metadata"]["annotations"]["rtdetr.io/runtime-template-hash"]
    assert "annotations" not in after["spec"]["template"]["metadata"], "InPlace: the model is not the pods' template"


def test_in_place_a_new_model_changes_the_configmap_not_the_pods_and_is_ready_once_every_pod_serves_it() -> None:
    """serving.rollout InPlace (the default): a model that passed its gate reaches the pods
    through their ConfigMap; the pod template stays as it is (no new pod, no spare GPU) and Ready
    follows what the pods say they serve: ModelSwapping, ModelSwapFailed with the pod's cause and
    what to do, Serving once every pod answers with it. The pods are asked only while it matters."""
    body, observed = serving(r50(), available=2)
    assert observed.deployment is not None
    steady = replace(observed.deployment, ready_replicas=2, available_replicas=2)
    idle = decide_as_written(body, OperatorSettings(), Observed(deployment=steady), LATER)
    assert not idle.needs_pod_models and condition(idle.status, "Ready")["reason"] == "Serving", "a serving model: pods not asked"
    before = _runtime(idle)
    old_digest = configmap_digest(idle)

    body["spec"]["quantization"]["trainIter"] = 600  # a new model passes its gate
    new_digest = "sha256:" + "cd" * 32
    passed = JobObservation(succeeded=True, termination_message=summary(digest_of(body), model_digest=new_digest))
    first = decide_as_written(body, OperatorSettings(), Observed(quantize_job=passed, deployment=steady), LATER)
    assert first.needs_pod_models and configmap_digest(first) == new_digest
    assert _runtime(first)["spec"]["template"] == before["spec"]["template"], "no pod replaced"
    kinds = [m["kind"] for m in first.ensure]
    assert kinds.index("ConfigMap") < kinds.index("Deployment")

    def ready(*pods: PodModel) -> dict[str, Any]:
        decided = decide(body, OperatorSettings(), Observed(quantize_job=passed, deployment=steady, pod_models=pods), LATER)
        assert decided.status["served"]["model"]["digest"] == new_digest
        return condition(decided.status, "Ready")

    swapping = ready(PodModel("p-1", serving=old_digest, loading=new_digest), PodModel("p-2", serving=new_digest))
    assert (swapping["status"], swapping["reason"]) == ("False", "ModelSwapping")
    assert swapping["message"] == f"1/2 pods serve {new_digest[:19]}; 1 loading it beside the previous model"
    unreachable = ready(PodModel("p-1", error="POST http://10.0.0.5:8080/v2/repository/index failed: timed out"),
                        PodModel("p-2", serving=new_digest))  # fmt: skip
    assert unreachable["reason"] == "ModelSwapping" and "p-1: POST http://10.0.0.5:8080" in unreachable["message"]
    refused = ready(PodModel("p-1", serving=old_digest, refused=new_digest, reason="out of memory"), PodModel("p-2", serving=new_digest))
    assert (refused["status"], refused["reason"]) == ("False", "ModelSwapFailed")
    assert refused["message"].startswith(f"pod p-1 could not load {new_digest[:19]} beside the model it serves and still serves {old_digest[:19]}: out of memory")
    assert "serving.rollout: Replace" in refused["message"] and "kubectl delete pod p-1" in refused["message"]
    done = ready(PodModel("p-1", serving=new_digest), PodModel("p-2", serving=new_digest))
    assert (done["status"], done["reason"], done["message"]) == ("True", "Serving", f"serving {new_digest[:19]}")


def test_a_pod_that_started_before_the_configmap_changed_is_asked_before_ready_says_serving() -> None:
    """Seen on the real node: a new model passed its gate while the Deployment was still rolling
    out (re-created). Its pod had loaded the ConfigMap's previous model, and the kubelet hands it
    the new file only later; Ready must wait for the pod to say it serves the new model."""
    body, observed = serving(r50(), available=2)
    assert observed.deployment is not None
    old_digest = body["status"]["serving"]["servingDigest"]
    body["spec"]["quantization"]["trainIter"] = 600
    new_digest = "sha256:" + "cd" * 32
    passed = JobObservation(succeeded=True, termination_message=summary(digest_of(body), model_digest=new_digest))
    warming = replace(observed.deployment, ready_replicas=1, available_replicas=1)  # not rolled out yet
    rolling = decide_as_written(body, OperatorSettings(), Observed(quantize_job=passed, deployment=warming), LATER)
    assert condition(rolling.status, "Ready")["reason"] == "RollingOut"
    body["status"] = rolling.status
    rolled = replace(observed.deployment, ready_replicas=2, available_replicas=2)
    stale = (PodModel("p-1", serving=old_digest), PodModel("p-2", serving=new_digest))
    asked = decide_as_written(body, OperatorSettings(), Observed(quantize_job=passed, deployment=rolled, pod_models=stale), LATER)
    assert asked.needs_pod_models and condition(asked.status, "Ready")["reason"] == "ModelSwapping", condition(asked.status, "Ready")
    body["status"] = asked.status
    both = (PodModel("p-1", serving=new_digest), PodModel("p-2", serving=new_digest))
    done = decide_as_written(body, OperatorSettings(), Observed(quantize_job=passed, deployment=rolled, pod_models=both), LATER)
    assert condition(done.status, "Ready")["reason"] == "Serving"


@pytest.mark.parametrize(("rollout", "strategy"), [("InPlace", (0, 1)), ("Surge", (0, 1)), ("Replace", (1, 0))])
def test_surge_and_replace_name_the_model_in_the_pod_template_and_roll_pods(rollout: str, strategy: tuple[int, int]) -> None:
    """Surge and Replace: a new model is a new pod template (a rollout of new pods, no ConfigMap);
    Replace stops a pod before its replacement starts (no spare GPU), the others surge one."""
    resource = r50()
    resource["spec"]["serving"]["rollout"] = rollout
    body, observed = serving(resource, available=2)
    deployment = _runtime(decide(body, OperatorSettings(), observed, LATER))
    update = deployment["spec"]["strategy"]["rollingUpdate"]
    assert (update["maxUnavailable"], update["maxSurge"]) == strategy
    body["spec"]["quantization"]["trainIter"] = 600
    passed = JobObservation(succeeded=True, termination_message=summary(digest_of(body), model_digest="sha256:" + "cd" * 32))
    swapped = decide_as_written(body, OperatorSettings(), Observed(quantize_job=passed, deployment=observed.deployment), LATER)
    in_place = rollout == "InPlace"
    assert (_runtime(swapped)["spec"]["template"] == deployment["spec"]["template"]) == in_place
    assert any(m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-model") for m in swapped.ensure) == in_place
    if not in_place:
        assert condition(swapped.status, "Ready")["reason"] == "RollingOut" and not swapped.needs_pod_models


def test_a_deployment_made_by_0_1_0_is_not_restarted_by_the_upgrade() -> None:
    """0.1.0 wrote its result and spec hash on the pod template too: the upgraded operator keeps
    them there while the same model serves (dropping them would replace every pod once), reads
    the Deployment as current (Ready stays, no event), and lets a new model drop them."""
    from rtdetr_operator.reconcile import ANNOTATION_RESULT, ANNOTATION_SPEC_HASH, ANNOTATION_TEMPLATE_HASH

    resource = r50()
    resource["spec"]["serving"]["rollout"] = "Surge"  # 0.1.0 named the model in the template, as Surge does
    body, observed = serving(resource, available=2)
    assert observed.deployment is not None
    new = _runtime(decide(body, OperatorSettings(), observed, LATER))
    old = json.loads(json.dumps(new))  # as 0.1.0 made it: one annotations dict, the whole spec hashed
    old["metadata"]["annotations"].pop(ANNOTATION_TEMPLATE_HASH)
    old["spec"]["template"]["metadata"]["annotations"] = old["metadata"]["annotations"]
    old_hash = hashlib.sha256(json.dumps(old["spec"], sort_keys=True).encode()).hexdigest()[:16]
    old["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = old_hash
    live = replace(observed.deployment, annotations=old["metadata"]["annotations"], template_annotations=old["metadata"]["annotations"],
                   ready_replicas=2, available_replicas=2)  # fmt: skip
    upgraded = decide(body, OperatorSettings(), Observed(deployment=live), LATER)
    template = _runtime(upgraded)["spec"]["template"]["metadata"]["annotations"]
    assert template[ANNOTATION_SPEC_HASH] == old_hash and ANNOTATION_RESULT in template, "kept: no pod restarts"
    assert condition(upgraded.status, "Ready") == condition(body["status"], "Ready") and upgraded.events == []

    body["spec"]["quantization"]["trainIter"] = 600  # a new model: it rolls out anyway
    passed = JobObservation(succeeded=True, termination_message=summary(digest_of(body)))
    swapped = decide(body, OperatorSettings(), Observed(quantize_job=passed, deployment=live), LATER)
    assert ANNOTATION_SPEC_HASH not in _runtime(swapped)["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("observed", "event_type", "reason"),
    [
        (Observed(), "Normal", "JobCreated"),
        (Observed(quantize_job=JobObservation(active=True)), "Normal", "JobRunning"),
        (Observed(quantize_job=JobObservation(failed=True, failure_reason="BackoffLimitExceeded")), "Warning", "QuantizationFailed"),
        (Observed(quantize_job=JobObservation(active=True, waiting_reason="Unschedulable", waiting_message="0/3 nodes")),
         "Warning", "Unschedulable"),
    ],
    ids=["created", "running", "failed", "unschedulable"],
)  # fmt: skip
def test_progress_events_are_normal_and_faults_are_warnings(observed: Observed, event_type: str, reason: str) -> None:
    events = decide(r50(), OperatorSettings(), observed, NOW).events
    matching = [e for e in events if e.reason == reason]
    assert matching and {e.type for e in matching} == {event_type}, events
    if event_type == "Normal":
        assert all(e.type == "Normal" for e in events), f"a resource making progress raises no warning: {events}"


def test_drift_is_a_missing_or_changed_field_of_ours_only() -> None:
    from rtdetr_operator.drift import drifted

    body, observed = serving(r50(), available=2)
    desired = next(m for m in decide(body, OperatorSettings(), observed, LATER).ensure if m["kind"] == "Deployment")
    live = json.loads(json.dumps(desired))
    live["metadata"].update(uid="u", resourceVersion="7", annotations={**live["metadata"]["annotations"], "mesh.io/inject": "true"})
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"  # a server default
    live["status"] = {"replicas": 2}
    assert not drifted(desired, live), "server defaults and others' fields are not drift"
    assert drifted(desired, None)
    scaled = json.loads(json.dumps(live))
    scaled["spec"]["replicas"] = 5  # kubectl scale
    assert drifted(desired, scaled)
    edited = json.loads(json.dumps(live))
    edited["spec"]["template"]["spec"]["containers"][0]["args"].append("--debug")  # kubectl edit
    assert drifted(desired, edited)

    configmap = next(m for m in decide(body, OperatorSettings(), observed, LATER).ensure if m["kind"] == "ConfigMap")
    live_configmap = {**json.loads(json.dumps(configmap)), "metadata": {**configmap["metadata"], "uid": "c", "resourceVersion": "3"}}
    assert not drifted(configmap, live_configmap), "a ConfigMap has data, no spec"
    assert drifted(configmap, {**live_configmap, "data": {"model.json": "{}"}}), "an edited model file is drift"


def test_a_count_the_operator_alone_holds_is_handed_over_before_it_stops_applying_it() -> None:
    """Server-side apply deletes a field its only manager stops applying: a Deployment the
    operator made with a count would fall back to 1 pod when autoscaling is turned on."""
    from rtdetr_operator.drift import releases_field
    from rtdetr_operator.kube import FIELD_MANAGER, HANDOVER_MANAGER

    def live(*holders: str) -> dict[str, Any]:
        entries = [{"manager": m, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}} for m in holders]
        entries.append({"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {"f:replicas": {}}}})
        return {"metadata": {"managedFields": entries}, "spec": {"replicas": 3}}

    without = {"spec": {"template": {}}}
    path = ("spec", "replicas")
    assert releases_field(without, live(FIELD_MANAGER), FIELD_MANAGER, path)
    assert not releases_field(without, live(FIELD_MANAGER, HANDOVER_MANAGER), FIELD_MANAGER, path), "handed over already"
    assert not releases_field(without, live("kube-controller-manager"), FIELD_MANAGER, path), "the HPA holds it"
    assert not releases_field({"spec": {"replicas": 2}}, live(FIELD_MANAGER), FIELD_MANAGER, path), "still applied"
    assert not releases_field(without, None, FIELD_MANAGER, path), "nothing to lose before it exists"


def test_jobs_of_pipelines_the_spec_moved_on_from_are_deleted() -> None:
    from rtdetr_operator.reconcile import PipelineJob

    body, observed = serving(r50(), available=2)
    served_digest = body["status"]["served"]["pipelineDigest"]
    body["spec"]["quantization"]["trainIter"] = 600
    current = digest_of(body)
    abandoned = "sha256:" + "cd" * 32
    jobs = (PipelineJob(quantize_job_name("rtdetr-r50", served_digest), "quantize", served_digest, False),
            PipelineJob(quantize_job_name("rtdetr-r50", current), "quantize", current, True),
            PipelineJob(quantize_job_name("rtdetr-r50", abandoned), "quantize", abandoned, True),
            PipelineJob("rtdetr-r50-export-cdcdcdcdcd", "export", abandoned, False))  # fmt: skip
    decision = decide(body, OperatorSettings(), replace(observed, pipeline_jobs=jobs), LATER)
    assert decision.delete == [("Job", "rtdetr-r50-export-cdcdcdcdcd"), ("Job", quantize_job_name("rtdetr-r50", abandoned)),
                               ("ConfigMap", pipeline_configmap_name("rtdetr-r50", abandoned))]  # fmt: skip
    body["spec"]["arch"] = "no-such-arch"  # an invalid spec touches nothing, deletes included
    assert decide(body, OperatorSettings(), replace(observed, pipeline_jobs=jobs), LATER).delete == []


def test_an_api_refusal_reaches_ready_and_clears_with_its_cause() -> None:
    from rtdetr_operator.reconcile import ApplyFailure, with_apply_failures

    body = r50()
    decision = decide(body, OperatorSettings(), Observed(), NOW)
    refusal = [ApplyFailure("Job", 'Job rtdetr-r50-quantize-1: jobs.batch "x" is forbidden: exceeded quota (403)')]
    failed = with_apply_failures(body, decision, refusal, NOW)
    ready = condition(failed.status, "Ready")
    assert ready["reason"] == "ApplyFailed" and "exceeded quota" in ready["message"]
    assert condition(failed.status, "Stalled")["status"] == "True"
    assert [(e.type, e.reason) for e in failed.events if e.reason == "ApplyFailed"] == [("Warning", "ApplyFailed")]
    # A refused Job was not created: no condition and no event says it was.
    assert condition(failed.status, "Quantized")["reason"] == "ApplyFailed"
    assert not [e for e in failed.events if e.reason == "JobCreated"]
    assert with_apply_failures(body, decision, [], NOW) is decision

    # The same refusal at the next resync leaves status exactly as it was: nothing to patch, no
    # moved transition time (Stalled was True and stays True), no event.
    again_body = {**body, "status": failed.status}
    again = with_apply_failures(again_body, decide(again_body, OperatorSettings(), Observed(), LATER), refusal, LATER)
    assert again.status["conditions"] == failed.status["conditions"] and again.events == []
    later = decide({**body, "status": failed.status}, OperatorSettings(), Observed(), LATER)  # the quota was raised
    assert condition(later.status, "Ready")["reason"] != "ApplyFailed"


def test_pods_that_cannot_be_created_are_explained() -> None:
    from rtdetr_operator.pod_status import replica_failure

    deployment = {"status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                  "message": 'pods "r50-7d9f-x" is forbidden: violates PodSecurity "restricted:latest": hostPath volumes'}]}}  # fmt: skip
    assert "violates PodSecurity" in replica_failure(deployment)
    assert replica_failure({"status": {"conditions": [{"type": "Available", "status": "True"}]}}) == ""
    init = {"metadata": {"name": "p"}, "status": {"initContainerStatuses": [{"name": "engine-cache-owner", "state": {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]}}  # fmt: skip
    assert pod_problem(init) == ("CrashLoopBackOff", "pod p init container engine-cache-owner; back-off")


def merge_patched(document: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a status merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(document) if isinstance(document, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patched(result.get(key), value)
    return result


@pytest.mark.parametrize("available", [None, 2], ids=["pending", "serving"])
def test_an_unchanged_world_writes_no_status(available: int | None) -> None:
    """What the API server stores after our merge patch, decided again, patches nothing (an
    idle resource must cost no write per resync)."""
    from rtdetr_operator.handlers import status_patch

    body, observed = (r50(), Observed(quantize_job=JobObservation(active=True))) if available is None else serving(r50(), available)
    for _ in range(2):
        decision = decide(body, OperatorSettings(), observed, LATER)
        stored = merge_patched(body.get("status") or {}, status_patch(dict(body.get("status") or {}), decision.status))
        body = {**body, "status": stored}
    assert status_patch(body["status"], decide(body, OperatorSettings(), observed, LATER).status) == {}


def test_the_user_guide_explains_every_reason_the_operator_sets() -> None:
    """Every condition reason the operator can write has a row in docs/user-guide.md's table
    (with what to do): the ones it decides are the Reason enum (the code writes no other literal
    reason), the ones it passes through are listed here."""
    import ast
    from pathlib import Path

    from rtdetr_edge.api.status import IN_FLIGHT_PHASES
    from rtdetr_edge.gate import BASELINE_TOO_LOW, DROP_EXCEEDS_BUDGET
    from rtdetr_operator.pod_status import STUCK_CONTAINER_REASONS
    from rtdetr_operator.reasons import Reason

    root = Path(__file__).resolve().parents[2]
    tree = ast.parse((root / "operator" / "rtdetr_operator" / "reconcile.py").read_text())
    literal = [ast.unparse(call) for call in ast.walk(tree) if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Condition"
               and len(call.args) > 2 and isinstance(call.args[2], ast.Constant)]  # fmt: skip
    assert not literal, f"a reason the operator decides belongs in rtdetr_operator.reasons.Reason: {literal}"
    passed_through = {"Unschedulable", "FailedCreate", DROP_EXCEEDS_BUDGET, BASELINE_TOO_LOW, *STUCK_CONTAINER_REASONS,
                      *(phase for phase in IN_FLIGHT_PHASES if phase != "Deploying")}  # fmt: skip
    guide = (root / "docs" / "user-guide.md").read_text()
    table = guide[guide.index("## What each condition reason means") :]
    table = table[: table.index("\n\n", table.index("| --- |"))]
    missing = sorted(r for r in {*Reason, *passed_through} if f"`{r}`" not in table)
    assert len(Reason) > 20 and all(reason.meaning for reason in Reason) and not missing, missing


@pytest.mark.parametrize(
    ("served", "hint"),
    [
        ({"model": {"isaPortable": False}, "measuredOn": {"device": "cpu", "product": "EPYC", "isaLevel": "avx512-vnni"}},
         "only on avx512-vnni-class CPUs"),
        ({"model": {"isaPortable": True}, "measuredOn": {"device": "cpu", "product": "EPYC", "isaLevel": "avx512-vnni"}}, ""),
        ({"model": {}, "measuredOn": {"device": "gpu", "product": "Tesla T4"}}, ""),  # GPU, or an older Job's summary
        ({"model": {"isaPortable": False}}, ""),
    ],
)  # fmt: skip
def test_an_unschedulable_cpu_specific_model_says_what_it_waits_for(served: dict[str, Any], hint: str) -> None:
    """A model that is not ISA-portable is placed by NFD labels: a cluster without them must hear why."""
    text = isa_placement_hint(PipelineRecord.model_validate({"pipelineDigest": "d", **served,
                                                             "model": {"uri": "pvc://a/m", "digest": "x", **served["model"]}}))
    assert (hint in text and "Node Feature Discovery" in text) if hint else text == ""


def test_a_condition_that_ends_as_it_began_keeps_its_transition_time() -> None:
    """Updates of one type applied in turn (decide's, then an API refusal's) are judged against
    the status as it was, not against each other."""
    from rtdetr_operator.conditions import Condition, set_conditions

    before = [{"type": "Stalled", "status": "True", "reason": "ApplyFailed", "message": "m",
               "lastTransitionTime": NOW, "observedGeneration": 1}]  # fmt: skip
    flipped_back = set_conditions(before, [Condition("Stalled", "False", "Progressing"), Condition("Stalled", "True", "ApplyFailed", "m")], 1, LATER)
    assert flipped_back == before
    assert set_conditions(before, [Condition("Stalled", "False", "Progressing")], 1, LATER)[0]["lastTransitionTime"] == LATER


def test_a_raised_budget_rejudges_the_failed_candidate_without_a_job() -> None:
    """The Job measures; the operator judges with the budget as it is now. Raising maxMapDrop
    after AccuracyGateFailed rolls the candidate out in one reconcile: same pipeline digest, no
    Job, no ConfigMap, with the Job and its pod gone (the verdict kept in status.candidate)."""
    body, observed = serving(r50(), available=2)
    body["spec"]["quantization"]["trainIter"] = 600
    digest = digest_of(body)
    job = JobObservation(succeeded=True, termination_message=summary(digest, passed=False, quantized=51.0))
    failed = decide(body, OperatorSettings(), replace(observed, quantize_job=job), LATER)
    assert condition(failed.status, "Ready")["reason"] == "AccuracyGateFailed"
    body["status"] = failed.status
    body["spec"]["quantization"]["maxMapDrop"] = 3.0
    assert digest_of(body) == digest, "the budget does not make the model"
    for still in (job, None):  # the Job still there, then deleted
        raised = decide(body, OperatorSettings(), replace(observed, quantize_job=still), LATER)
        assert not pipeline_children(raised), "no re-quantization"
        (deployment,) = [m for m in raised.ensure if m["kind"] == "Deployment"]
        assert deployment["metadata"]["annotations"]["rtdetr.io/pipeline-digest"] == digest, "the candidate rolls out"
        gate = condition(raised.status, "AccuracyGatePassed")
        assert (gate["status"], gate["reason"]) == ("True", "WithinBudget") and "(drop 2.1 <= 3)" in gate["message"], gate
        assert raised.status["served"]["gate"]["passed"] is True


def test_a_tightened_budget_refuses_the_serving_model_and_keeps_it_serving() -> None:
    body, observed = serving(r50(), available=2)
    served = body["status"]["served"]
    body["spec"]["quantization"]["maxMapDrop"] = 0.0  # the served model measured a drop of 0.1
    tightened = decide(body, OperatorSettings(), observed, LATER)
    ready = condition(tightened.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AccuracyGateFailed"), ready
    assert "outside the gate's budget: mAP 53.1 -> 53.0 (drop 0.1 > 0); it keeps serving" in ready["message"], ready
    assert condition(tightened.status, "Available")["status"] == "True" and tightened.status["phase"] == "Failed"
    (deployment,) = [m for m in tightened.ensure if m["kind"] == "Deployment"]
    assert deployment["metadata"]["annotations"]["rtdetr.io/model-digest"] == served["model"]["digest"]
    assert not pipeline_children(tightened)
    body["status"] = tightened.status
    body["spec"]["quantization"]["maxMapDrop"] = 0.5
    restored = decide(body, OperatorSettings(), observed, LATER)
    assert condition(restored.status, "AccuracyGatePassed")["status"] == "True"
    assert not pipeline_children(restored)


def test_what_the_previous_release_made_is_this_specs_model() -> None:
    """The previous release hashed the gate budget into the pipeline digest: a model it serves, a
    verdict it remembered and a Job it started are read as this spec's after the upgrade."""
    from rtdetr_edge.resource import earlier_pipeline_digest
    from rtdetr_operator.reconcile import PipelineJob

    body = r50()
    earlier = earlier_pipeline_digest(parse_resource(body).spec)
    assert earlier != digest_of(body)
    upgraded, observed = serving(r50(), available=2)
    for record in ("served", "candidate"):
        upgraded["status"][record] = {**upgraded["status"][record], "pipelineDigest": earlier}
    old_job = PipelineJob(quantize_job_name("rtdetr-r50", earlier), "quantize", earlier, False)
    decision = decide(upgraded, OperatorSettings(), replace(observed, deployment=None, pipeline_jobs=(old_job,)), LATER)
    assert not pipeline_children(decision), "no re-quantization after the upgrade"
    assert decision.delete == [], "its Job is kept"
    (deployment,) = [m for m in decision.ensure if m["kind"] == "Deployment"]
    assert deployment["metadata"]["annotations"]["rtdetr.io/pipeline-digest"] == earlier
    running = JobObservation(active=True, progress={"stage": "quantize", "done": 3, "total": 500})
    mid_run = decide(r50(), OperatorSettings(), Observed(quantize_job=running, pipeline_jobs=(old_job,)), NOW)
    assert condition(mid_run.status, "Quantized")["reason"] == "JobRunning" and mid_run.delete == []


def _pruned(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` as the API server stores it under a structural ``schema`` (unknown fields pruned)."""
    if isinstance(value, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        known = schema.get("properties", {})
        return {k: _pruned(v, known[k]) for k, v in value.items() if k in known}
    if isinstance(value, list) and "items" in schema:
        return [_pruned(item, schema["items"]) for item in value]
    return value


def test_every_status_field_the_operator_writes_survives_the_crds_schema() -> None:
    """What the API server prunes, the operator would write again at every resync (a status
    write per resource every few seconds, forever): status is typed by the same classes the CRD
    is generated from, so nothing it writes is pruned."""
    import yaml as yaml_module

    from rtdetr_edge.api import crd

    schema = yaml_module.safe_load(crd.render())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    body, observed = serving(r50(), available=2)
    body["spec"]["quantization"]["trainIter"] = 600
    refused = JobObservation(succeeded=True, termination_message=summary(digest_of(body), passed=False, quantized=51.0))
    for status in (body["status"], decide(body, OperatorSettings(), replace(observed, quantize_job=refused), LATER).status):
        assert status["served"]["model"]["isaPortable"] is True and status["model"]["isaPortable"] is True
        assert _pruned(status, schema) == status


AUTOSCALING = {"minReplicas": 2, "maxReplicas": 4, "cpuUtilization": 70}


def autoscaled(body: dict[str, Any]) -> dict[str, Any]:
    body["spec"]["serving"]["autoscaling"] = dict(AUTOSCALING)
    body["spec"]["serving"]["resources"] = {"requests": {"cpu": "2"}}
    return body


def test_autoscaling_makes_an_hpa_and_leaves_the_replica_count_to_it() -> None:
    """serving.autoscaling → an autoscaling/v2 HPA on the Deployment; the Deployment starts at
    minReplicas and, once it exists, is applied without a count (serving.replicas is ignored)."""
    body, observed = serving(autoscaled(r50()), available=2)
    body["spec"]["serving"]["replicas"] = 1
    created = decide(body, OperatorSettings(), Observed(), LATER)  # no Deployment yet
    assert _runtime(created)["spec"]["replicas"] == 2, "a new Deployment starts at minReplicas"
    hpa = next(m for m in created.ensure if m["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rtdetr-r50"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                                                 "averageUtilization": 70}}}]  # fmt: skip
    assert condition(created.status, "Autoscaling")["reason"] == "AutoscalerCreated"

    assert observed.deployment is not None
    scaled = replace(observed.deployment, replicas=3, current_replicas=3, updated_replicas=3, ready_replicas=3, available_replicas=3)
    decision = decide(body, OperatorSettings(), Observed(deployment=scaled), LATER)
    assert "replicas" not in _runtime(decision)["spec"], "the operator wrote the HPA's replica count"
    ready = condition(decision.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Serving"), "3 pods of the HPA's 3 are a finished rollout"


def hpa(*conditions: tuple[str, str, str, str], desired: int = 2) -> AutoscalerObservation:
    return AutoscalerObservation(2, desired, tuple(HpaCondition(*c) for c in conditions))


@pytest.mark.parametrize(
    ("observed", "status", "reason", "fragments"),
    [
        (hpa(("AbleToScale", "True", "SucceededGetScale", ""),
             ("ScalingActive", "False", "FailedGetResourceMetric",
              "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics "
              "for resource cpu: no metrics returned from resource metrics API")),
         "False", "FailedGetResourceMetric", ["no metrics returned from resource metrics API", "install metrics-server"]),
        (hpa(("AbleToScale", "True", "SucceededGetScale", ""),
             ("ScalingActive", "False", "FailedGetPodsMetric", "unable to get metric rtdetr_inflight_requests")),
         "False", "FailedGetPodsMetric", ["custom metrics API", "prometheus-adapter", "rtdetr_inflight_requests"]),
        (hpa(("AbleToScale", "False", "FailedGetScale", 'deployments/scale.apps "rtdetr-r50" not found')),
         "False", "FailedGetScale", ["not found"]),
        (hpa(("AbleToScale", "True", "ReadyForNewScale", ""),
             ("ScalingActive", "True", "ValidMetricFound", "the HPA was able to successfully calculate a replica count"),
             ("ScalingLimited", "True", "TooManyReplicas", "the desired replica count is more than the maximum replica count"),
             desired=4),
         "True", "ValidMetricFound", ["the HPA wants 4", "min 2, max 4", "more than the maximum"]),
        (hpa(), "Unknown", "AutoscalerCreated", ["waiting for the HPA controller"]),
    ],
    ids=["no metrics-server", "no custom metrics adapter", "no scale target", "scaling", "not judged yet"],
)
def test_the_autoscaling_condition_says_whether_the_hpa_can_scale_and_what_to_do(
    observed: AutoscalerObservation, status: str, reason: str, fragments: list[str]
) -> None:
    body, lost = serving(autoscaled(r50()), available=2)
    decision = decide(body, OperatorSettings(), replace(lost, autoscaler=observed), LATER)
    found = condition(decision.status, "Autoscaling")
    assert (found["status"], found["reason"]) == (status, reason), found
    for fragment in fragments:
        assert fragment in found["message"], found["message"]
    ready = condition(decision.status, "Ready")
    assert ready["status"] == "True", "the model serves whatever the autoscaler can do"
    if status == "False":
        assert any(e.type == "Warning" and e.reason == reason for e in decision.events), decision.events


def test_turning_autoscaling_off_deletes_the_hpa_and_serving_replicas_counts_again() -> None:
    body, observed = serving(autoscaled(r50()), available=2)
    on = decide(body, OperatorSettings(), replace(observed, autoscaler=hpa()), LATER)
    body["status"] = on.status
    del body["spec"]["serving"]["autoscaling"]
    off = decide(body, OperatorSettings(), replace(observed, autoscaler=hpa()), LATER)
    assert ("HorizontalPodAutoscaler", "rtdetr-r50") in off.delete
    assert not any(m["kind"] == "HorizontalPodAutoscaler" for m in off.ensure)
    assert _runtime(off)["spec"]["replicas"] == body["spec"]["serving"]["replicas"]
    assert find(off.status["conditions"], "Autoscaling") is None, "the condition went with the HPA"


def test_cpu_autoscaling_without_a_cpu_request_is_refused_with_what_to_set() -> None:
    body = autoscaled(r50())
    body["spec"]["serving"]["resources"] = {"limits": {"memory": "8Gi"}}
    status = decide(body, OperatorSettings(), Observed(), NOW).status
    ready = condition(status, "Ready")
    assert ready["reason"] == "InvalidSpec" and "serving.resources.requests.cpu" in ready["message"], ready


MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


@pytest.mark.parametrize(
    ("allow_from", "settings", "ingress_peers"),
    [
        ([{"podSelector": {"matchLabels": {"app": "gateway"}}}], OperatorSettings(serving_metrics_from=(MONITORING,)),
         [[{"podSelector": {"matchLabels": {"app": "gateway"}}}], [MONITORING]]),
        ([], OperatorSettings(serving_metrics_from=(MONITORING,)), [[MONITORING]]),
        ([], OperatorSettings(), []),
    ],
    ids=["callers and scrapers", "scrapers only", "nobody"],
)  # fmt: skip
def test_allow_from_fences_the_serving_port(allow_from: list[dict[str, Any]], settings: OperatorSettings,
                                           ingress_peers: list[list[dict[str, Any]]]) -> None:  # fmt: skip
    """serving.allowFrom → a NetworkPolicy on the serving pods. An ingress rule without ``from``
    would admit everyone: an empty list must leave no rule at all (deny all)."""
    body, observed = serving(r50(), available=2)
    body["spec"]["serving"]["allowFrom"] = allow_from
    policy = next(m for m in decide(body, settings, observed, LATER).ensure if m["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": _runtime(decide(body, settings, observed, LATER))["spec"]["selector"]["matchLabels"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert [rule["from"] for rule in policy["spec"]["ingress"]] == ingress_peers
    assert all(rule["from"] and rule["ports"] == [{"port": 8080, "protocol": "TCP"}] for rule in policy["spec"]["ingress"])


def test_removing_allow_from_deletes_the_network_policy() -> None:
    body, observed = serving(r50(), available=2)
    decision = decide(body, OperatorSettings(), replace(observed, network_policy=True), LATER)
    assert ("NetworkPolicy", "rtdetr-r50") in decision.delete
    assert not decide(body, OperatorSettings(), observed, LATER).delete, "nothing to delete without one"


def test_serving_grpc_opens_port_8081_on_pods_service_and_network_policy_and_names_it_in_status() -> None:
    body, observed = serving(r50(), available=2)
    body["spec"]["serving"]["allowFrom"] = [{"podSelector": {"matchLabels": {"app": "gateway"}}}]
    plain = decide(body, OperatorSettings(serving_metrics_from=(MONITORING,)), observed, LATER)
    assert "grpcEndpoint" not in plain.status["serving"]
    body["spec"]["serving"]["grpc"] = True
    decision = decide(body, OperatorSettings(serving_metrics_from=(MONITORING,)), observed, LATER)
    container = _runtime(decision)["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][container["args"].index("--grpc-port") + 1] == "8081"
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"]["port"] == "http", "probes stay on HTTP"
    service = next(m for m in decision.ensure if m["kind"] == "Service")
    assert [(p["name"], p["port"], p["targetPort"], p.get("appProtocol")) for p in service["spec"]["ports"]] == [
        ("http", 8080, "http", None), ("grpc", 8081, "grpc", "grpc")]  # fmt: skip
    policy = next(m for m in decision.ensure if m["kind"] == "NetworkPolicy")
    callers, scrapers = policy["spec"]["ingress"]
    assert callers["ports"] == [{"port": 8080, "protocol": "TCP"}, {"port": 8081, "protocol": "TCP"}]
    assert scrapers["ports"] == [{"port": 8080, "protocol": "TCP"}], "scrapers need /metrics only"
    assert decision.status["serving"]["grpcEndpoint"] == "rtdetr-r50.vision.svc:8081"

    # Turned off: the merge patch of status must remove the field (a nested object merges), once.
    body["spec"]["serving"]["grpc"] = False
    body["status"] = decision.status
    off = decide(body, OperatorSettings(), observed, LATER)
    assert off.status["serving"]["grpcEndpoint"] is None
    body["status"] = {**off.status, "serving": {k: v for k, v in off.status["serving"].items() if v is not None}}
    assert "grpcEndpoint" not in decide(body, OperatorSettings(), observed, LATER).status["serving"]
    assert "--grpc-port" not in _runtime(off)["spec"]["template"]["spec"]["containers"][0]["args"]


def test_serving_tls_and_auth_mount_whole_secrets_move_probes_and_scrapes_to_the_management_port() -> None:
    body, observed = serving(r50(), available=2)
    body["spec"]["serving"].update(grpc=True, allowFrom=[{"podSelector": {"matchLabels": {"app": "gateway"}}}],
                                   tls={"secretName": "r50-tls", "clientCASecretName": "camera-ca"},
                                   auth={"tokenSecretName": "r50-tokens"})  # fmt: skip
    decision = decide(body, OperatorSettings(serving_metrics_from=(MONITORING,)), observed, LATER)
    pod = _runtime(decision)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    expected = {"--tls-cert-file": "/etc/rtdetr-edge/serving-tls/tls.crt", "--tls-key-file": "/etc/rtdetr-edge/serving-tls/tls.key",
                "--tls-client-ca-file": "/etc/rtdetr-edge/client-ca/ca.crt", "--auth-token-file": "/etc/rtdetr-edge/auth-tokens/tokens",
                "--management-port": "8082"}  # fmt: skip
    assert {flag: args[args.index(flag) + 1] for flag in expected} == expected
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"serving-tls": {"secretName": "r50-tls", "defaultMode": 0o440},
                       "client-ca": {"secretName": "camera-ca", "defaultMode": 0o440},
                       "auth-tokens": {"secretName": "r50-tokens", "defaultMode": 0o440}}  # fmt: skip
    mounts = [m for m in container["volumeMounts"] if m["name"] in secrets]
    assert all(m["readOnly"] and "subPath" not in m for m in mounts), "subPath mounts never see a rotated Secret"
    assert pod["securityContext"]["fsGroup"] == 10001, "0440 files are read through the pod's group"
    assert [p["name"] for p in container["ports"]] == ["https", "grpc", "metrics"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics", "kubelet probes carry no client certificate or token"
    service = next(m for m in decision.ensure if m["kind"] == "Service")
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("https", 8080), ("grpc", 8081), ("metrics", 8082)]
    policy = next(m for m in decision.ensure if m["kind"] == "NetworkPolicy")
    callers, scrapers = policy["spec"]["ingress"]
    assert [p["port"] for p in callers["ports"]] == [8080, 8081] and [p["port"] for p in scrapers["ports"]] == [8082]
    assert decision.status["serving"]["endpoint"] == "https://rtdetr-r50.vision.svc:8080"

    body["spec"]["serving"].update(tls=None)  # tokens alone: everything stays on the plain port
    plain = _runtime(decide(body, OperatorSettings(), observed, LATER))["spec"]["template"]["spec"]["containers"][0]
    assert "--management-port" not in plain["args"] and "--auth-token-file" in plain["args"]
    assert plain["readinessProbe"]["httpGet"]["port"] == "http" and [p["name"] for p in plain["ports"]] == ["http", "grpc"]
