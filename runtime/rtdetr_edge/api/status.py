"""``RTDETRModel.status``, typed: the phases, the condition types and the shape of what the
operator writes. The CRD's status schema is generated from these classes."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from rtdetr_edge.api.job import ModelRef, PipelineRecord
from rtdetr_edge.api.spec import wire_config

Phase = Literal["Pending", "Exporting", "Quantizing", "Evaluating", "Deploying", "Ready", "Failed"]
PHASES: tuple[str, ...] = get_args(Phase)
IN_FLIGHT_PHASES: frozenset[str] = frozenset({"Pending", "Exporting", "Quantizing", "Evaluating", "Deploying"})
"""Work is under way (kstatus' Reconciling=True)."""

ConditionType = Literal["Quantized", "AccuracyGatePassed", "Available", "Ready", "Autoscaling", "Reconciling", "Stalled"]
CONDITION_TYPES: tuple[str, ...] = get_args(ConditionType)


class StatusModel(BaseModel):
    """A part of the status with a closed shape: every field the operator writes is listed."""

    model_config = wire_config(extra="forbid")


class ConditionStatus(StatusModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    observed_generation: int | None = None


class AccuracyStatus(StatusModel):
    """COCO mAP of the model being served (the mAP/Drop columns); a candidate's is in status.candidate."""

    baseline_map: float | None = None
    quantized_map: float | None = None
    map_drop: float | None = None
    images: int | None = None


class ServingStatus(StatusModel):
    endpoint: str | None = None
    grpc_endpoint: str | None = Field(
        None, description="host:port of the Open Inference Protocol over gRPC (serving.grpc), for gRPC clients."
    )
    ready_replicas: int | None = None
    replicas: int | None = Field(None, description="Serving pods that exist (the scale subresource's status).")
    selector: str | None = Field(
        None, description="Label selector of the serving pods (the scale subresource's; an HPA reads it)."
    )
    serving_digest: str | None = None


class RTDETRModelStatus(StatusModel):
    # Open at the top: kopf keeps its own bookkeeping here (status.kopf), and an older operator
    # may have written fields this one no longer does.
    model_config = wire_config(extra="allow")

    observed_generation: int | None = None
    phase: Phase | None = None
    pipeline_digest: str | None = None
    served: PipelineRecord | None = Field(
        None,
        description="The pipeline record of the model the pods serve (kept so a lost Deployment comes back with it).",
    )
    candidate: PipelineRecord | None = Field(
        None,
        description="The last pipeline verdict for this spec (accuracy, gate), kept once read so a deleted Job or "
        "pod never loses it; status.accuracy describes the served model.",
    )
    conditions: list[ConditionStatus] | None = Field(None, json_schema_extra={"x-kubernetes-list-type": "map",
                                                                            "x-kubernetes-list-map-keys": ["type"]})
    model: ModelRef | None = Field(None, description="The model this spec made, once it passed its gate.")
    accuracy: AccuracyStatus | None = None
    serving: ServingStatus | None = None
    progress: dict[str, Any] | None = Field(None, description="The running Job's stage, iteration and ETA.")
