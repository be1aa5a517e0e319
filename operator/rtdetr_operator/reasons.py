"""The condition reasons the operator decides, each with its meaning in one line.

docs/user-guide.md's table of reasons is checked against this list (tests/operator/test_decide.py).
Reasons in Kubernetes' own words pass through as they are: a pod's (``ImagePullBackOff``,
``Unschedulable``, ``CrashLoopBackOff``, ...), the gate's (``DropExceedsBudget``,
``BaselineTooLow``) and the phases while the pipeline runs (``Pending``, ``Quantizing``, ...).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    meaning: str

    def __new__(cls, value: str, meaning: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    def __repr__(self) -> str:  # logs print status patches: the word, as the API server stores it
        return repr(self.value)

    # Ready
    SERVING = "Serving", "the gated model is rolled out and every replica is ready (or, once Ready, still serves while scaling)"
    SCALED_TO_ZERO = "ScaledToZero", "serving.replicas is 0"
    ROLLING_OUT = "RollingOut", "new serving pods are warming up; the old ones keep serving"
    MODEL_SWAPPING = "ModelSwapping", "serving.rollout InPlace: pods load the new model beside the one they serve"
    MODEL_SWAP_FAILED = "ModelSwapFailed", "a pod could not load the new model beside the old one, which keeps serving"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded", "the serving Deployment stopped progressing"
    INVALID_SPEC = "InvalidSpec", "the spec cannot run in a cluster; nothing is touched"
    ACCURACY_GATE_FAILED = "AccuracyGateFailed", "the model lost more mAP than the budget allows; the previous one keeps serving"
    QUANTIZATION_FAILED = "QuantizationFailed", "the quantize Job failed or left no usable result"
    EXPORT_FAILED = "ExportFailed", "the PaddleDetection export Job failed"
    APPLY_FAILED = "ApplyFailed", "the API server refused a child the operator applies"
    # Quantized
    JOB_CREATED = "JobCreated", "the quantize Job was created"
    JOB_RUNNING = "JobRunning", "the quantize Job runs; the message has its progress"
    JOB_SUCCEEDED = "JobSucceeded", "the quantize Job finished and its verdict was read"
    JOB_FAILED = "JobFailed", "the quantize Job failed; the message is its cause"
    DEADLINE_EXCEEDED = "DeadlineExceeded", "the quantize Job ran past compression.activeDeadlineSeconds"
    RESULT_UNREADABLE = "ResultUnreadable", "the quantize Job succeeded without a readable result"
    EXPORTING = "Exporting", "the export Job runs"
    # AccuracyGatePassed
    WITHIN_BUDGET = "WithinBudget", "the gate's verdict: the drop is within quantization.maxMapDrop"
    # Available
    MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable", "at least one serving pod is available"
    NO_REPLICAS_AVAILABLE = "NoReplicasAvailable", "no serving pod is available yet"
    NOT_DEPLOYED = "NotDeployed", "no serving pods yet"
    REPLICAS_LOST = "ReplicasLost", "pods served before and now none do"
    # Autoscaling (the HPA's own reasons pass through: ValidMetricFound, FailedGetResourceMetric, ...)
    AUTOSCALER_CREATED = "AutoscalerCreated", "the HorizontalPodAutoscaler is applied; its controller has not judged it yet"
    # Reconciling, Stalled (kstatus)
    IDLE = "Idle", "Reconciling=False: nothing in flight"
    PROGRESSING = "Progressing", "Stalled=False: nothing needs a person"
