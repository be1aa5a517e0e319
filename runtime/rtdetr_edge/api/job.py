"""The operator ↔ quantize Job contract, both ways.

``PipelinePlan``: what the operator hands the Job, computed once by the operator from the
resource as the user wrote it; the Job executes it and never recomputes any of it (for a
checkpoint source the Job's spec names the export, which would hash differently).
``PipelineResult``: everything a run knows, as ``result.json`` on the artifacts volume.
``JobSummary``: its projection the Job hands back, one JSON line ≤ 4 KiB in the pod's
termination message. ``PipelineRecord``: what the operator keeps of it in status.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from rtdetr_edge.api.spec import CpuRuntime, Method, wire_config

PLAN_SCHEMA = "rtdetr.io/pipeline-plan/v1"
RESULT_SCHEMA = "rtdetr.io/quantize-result/v1"
TERMINATION_LIMIT = 4096  # bytes Kubernetes keeps of a termination message
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


class PlanModel(BaseModel):
    model_config = wire_config(frozen=True, extra="forbid")


ONNX_OP_FOR_PADDLE_OP = {
    "conv2d": "Conv",
    "depthwise_conv2d": "Conv",
    "matmul_v2": "MatMul",
    "matmul": "MatMul",
    "mul": "MatMul",
}
"""Paddle op type (quantization.quantizeOpTypes) -> the ONNX op paddle2onnx emits for it."""


class OnnxRuntimeInt8(PlanModel):
    """How ONNX Runtime's static quantization makes the CPU INT8 model (``model.int8.onnx``).

    QDQ with per-channel signed weights and unsigned activations is what ORT's CPU kernels fuse
    into integer convolutions and matmuls; percentile calibration kept the most mAP on the shapes
    model. ``weightBits`` 7 (ORT's reduce_range) keeps every weight within ±64 so no CPU saturates
    (:mod:`rtdetr_edge.cpu_isa`): measured on the shapes model (320 validation images, FP32 41.63),
    8-bit weights give 38.70 on AVX2 and 41.06 with VNNI's exact arithmetic; 7-bit weights 40.98
    on AVX2 and 41.05 exact, at the same speed (RT-DETR-R18 on AVX2: 242 vs 241 ms, `make bench-cpu`)."""

    format: Literal["QDQ"] = "QDQ"
    calibration: Literal["percentile", "minmax"] = "percentile"
    per_channel: bool = True
    activations: Literal["uint8"] = "uint8"
    weights: Literal["int8"] = "int8"
    weight_bits: Literal[7, 8] = 7
    op_types: list[str]
    """ONNX ops to quantize (from quantization.quantizeOpTypes)."""

    @classmethod
    def for_paddle_ops(cls, quantize_op_types: list[str] | tuple[str, ...]) -> OnnxRuntimeInt8:
        """The recipe for these Paddle op types, the defaults above otherwise."""
        ops = sorted({ONNX_OP_FOR_PADDLE_OP[op] for op in quantize_op_types if op in ONNX_OP_FOR_PADDLE_OP})
        if not ops:
            raise ValueError(f"none of {list(quantize_op_types)} maps to an ONNX op ONNX Runtime quantizes")
        return cls(op_types=ops)


class EffectiveQuantization(PlanModel):
    """The ACT settings that run: the arch's defaults (configs/act/) with the spec's overrides."""

    method: Method
    runtime: CpuRuntime = "paddle"
    """Which runtime the INT8 model is made for: paddle = PaddleSlim's QDQ model (TensorRT on GPU,
    oneDNN on CPU); onnxruntime = ONNX Runtime's static QDQ quantization (CPU serving)."""
    train_iter: int = Field(ge=1)
    eval_iter: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    quantize_op_types: list[str]
    batch_size: int = Field(ge=1)
    calibration_batches: int = Field(ge=1)
    max_map_drop: float = Field(ge=0)
    min_baseline_map: float = Field(ge=0)
    onnxruntime: OnnxRuntimeInt8 | None = None
    """The ONNX Runtime recipe (runtime onnxruntime only): part of the digest, so a new recipe
    makes a new model instead of reusing one made by the old."""


class PipelinePlan(PlanModel):
    schema_: Literal["rtdetr.io/pipeline-plan/v1"] = Field(PLAN_SCHEMA, alias="schema")
    pipeline_digest: str = Field(pattern=DIGEST_PATTERN)
    """Names the artifacts (its first 16 hex digits) and the operator's children."""
    tools: dict[str, str]
    """Tool versions the digest was computed for; the Job refuses to run with others."""
    quantization: EffectiveQuantization


class SummaryModel(BaseModel):
    """Read leniently (a newer Job may say more; an older one wrote nested fields in snake_case,
    which populate_by_name still reads), written exactly."""

    model_config = wire_config(frozen=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """As JSON holds it: camelCase, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ModelRef(SummaryModel):
    digest: str
    uri: str
    size_bytes: int | None = None
    quantized: bool | None = None
    method: str | None = None
    isa_portable: bool | None = None
    """Computes the same numbers on every x86 CPU level (false: an ONNX Runtime INT8 model with
    8-bit weights, whose results differ with and without VNNI; see rtdetr_edge.cpu_isa)."""


class MeasuredOn(SummaryModel):
    """Where the accuracy gate ran: the device, its product name and, on CPU, its ISA level."""

    device: Literal["cpu", "gpu"]
    product: str
    isa_level: str | None = None


class Accuracy(SummaryModel):
    baseline_map: float
    quantized_map: float
    map_drop: float
    images: int


class ShapeRangesRef(SummaryModel):
    file: str
    """Relative to the run's artifact directory."""
    max_batch_size: int | None = None
    tensors: int | None = None


class GateVerdict(SummaryModel):
    """The accuracy gate's verdict (``rtdetr_edge.gate.accuracy_gate``): by the Job, and by the
    operator again when the budget changes."""

    passed: bool
    reason: str = Field(description="WithinBudget, DropExceedsBudget or BaselineTooLow.")
    message: str = Field(description="e.g. mAP 53.1 -> 53.0 (drop 0.1 <= 0.5).")
    max_map_drop: float | None = Field(None, description="The quantization.maxMapDrop it was judged with.")


class PipelineRecord(SummaryModel):
    """A finished pipeline as the operator keeps it: ``status.served`` (the model the pods serve,
    also on the serving Deployment) and ``status.candidate`` (this spec's last verdict, kept once
    read so a deleted Job or pod never loses it). Made from the Job's summary; the operator judges
    its gate again when the budget changes."""

    pipeline_digest: str = Field(description="The pipeline that made the model (names its artifacts).")
    model: ModelRef
    accuracy: Accuracy | None = None
    gate: GateVerdict | None = None
    measured_on: MeasuredOn | None = None
    shape_ranges: ShapeRangesRef | None = Field(None, description="TensorRT shape ranges the Job collected (GPU serving).")

    @property
    def passed(self) -> bool:
        return self.gate is not None and self.gate.passed


class JobSummary(SummaryModel):
    schema_: Literal["rtdetr.io/quantize-result/v1"] = Field(RESULT_SCHEMA, alias="schema")
    ok: bool
    """The pipeline finished (the gate may still have refused the candidate)."""
    pipeline_digest: str | None = None
    model: ModelRef | None = None
    accuracy: Accuracy | None = None
    shape_ranges: ShapeRangesRef | None = None
    gate: GateVerdict | None = None
    measured_on: MeasuredOn | None = None
    reason: str | None = None
    """Why it failed (``ok`` false): PipelineFailed, ToolVersionMismatch, DatasetFailed, …"""
    message: str = ""

    def line(self) -> str:
        """The termination message: one JSON line within Kubernetes' 4 KiB, the message cut first."""
        document = self.model_dump(by_alias=True, exclude_none=True)
        text = json.dumps(document, separators=(",", ":"))
        excess = len(text.encode()) - TERMINATION_LIMIT
        if excess > 0:
            cut = self.message.encode()[: max(0, len(self.message.encode()) - excess - 3)].decode(errors="ignore")
            text = json.dumps({**document, "message": cut + "..."}, separators=(",", ":"))
        return text

    @classmethod
    def from_termination_message(cls, text: str | None) -> JobSummary | None:
        """The summary in a pod's termination message (its last line), or None: a crash leaves
        the log tail there instead (FallbackToLogsOnError)."""
        lines = (text or "").strip().splitlines()
        if not lines:
            return None
        try:
            return cls.model_validate_json(lines[-1])
        except ValueError:
            return None

    def record(self) -> PipelineRecord:
        """What the operator keeps of a finished pipeline (status.served / status.candidate)."""
        if self.pipeline_digest is None or self.model is None:
            raise ValueError("a summary without pipelineDigest and model cannot be served")
        model = self.model.model_copy(update={"quantized": None, "method": None})  # status keeps what serving needs
        shapes = ShapeRangesRef(file=self.shape_ranges.file) if self.shape_ranges is not None else None
        return PipelineRecord(pipeline_digest=self.pipeline_digest, model=model, accuracy=self.accuracy, gate=self.gate,
                              measured_on=self.measured_on, shape_ranges=shapes)  # fmt: skip


class ResourceRef(SummaryModel):
    name: str
    namespace: str


class SourceRef(SummaryModel):
    """The FP32 export the run started from."""

    digest: str
    size_bytes: int


class Evaluation(SummaryModel):
    """One model's COCO evaluation through the serving predictor (``rtdetr_edge.evaluate``)."""

    map: float
    """AP@[.50:.95] in points (0-100)."""
    map50: float
    images: int
    model_digest: str
    precision: str
    device: str
    backend: str
    latency_ms: float
    """Mean predictor time per image, batch as evaluated."""
    seconds: float


class QuantizeRun(SummaryModel):
    """What the quantize stage did (``rtdetr_edge.quantize``)."""

    method: str
    act_config: dict[str, Any]
    """The ACT config that ran (PaddleSlim's own keys), or ONNX Runtime's recipe."""
    iterations: int
    final_loss: float | None = None
    seconds: float
    input_digest: str
    output_digest: str
    input_bytes: int
    output_bytes: int
    """What the runtime loads: the INT8 files only."""
    params_ratio: float


class PipelineResult(SummaryModel):
    """``result.json``: a finished run (``status`` Succeeded, the gate's verdict inside: a refused
    candidate is a result, not a failure) or a failed one (``<key>.failed.json``: reason, message)."""

    schema_: Literal["rtdetr.io/quantize-result/v1"] = Field(RESULT_SCHEMA, alias="schema")
    status: Literal["Succeeded", "Failed"]
    pipeline_digest: str
    message: str = ""
    reason: str | None = None
    """Why it failed: PipelineFailed, ToolVersionMismatch, DatasetFailed, …"""
    finished_at: str
    resource: ResourceRef | None = None
    model: ModelRef | None = None
    source: SourceRef | None = None
    quantize: QuantizeRun | None = None
    """None for method none (the FP32 export is served as it is)."""
    quantization: EffectiveQuantization | None = None
    baseline: Evaluation | None = None
    candidate: Evaluation | None = None
    gate: GateVerdict | None = None
    accuracy: Accuracy | None = None
    shape_ranges: ShapeRangesRef | None = None
    category_ids: list[int] | None = None
    measured_on: MeasuredOn | None = None
    timings_seconds: dict[str, float] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "Succeeded"

    @property
    def passed(self) -> bool:
        return self.succeeded and self.gate is not None and self.gate.passed

    def summary(self) -> JobSummary:
        """The termination message's projection of this result."""
        return JobSummary(
            ok=self.succeeded, pipeline_digest=self.pipeline_digest, model=self.model, accuracy=self.accuracy,
            shape_ranges=self.shape_ranges, gate=self.gate, measured_on=self.measured_on, reason=self.reason,
            message=self.message,
        )  # fmt: skip
