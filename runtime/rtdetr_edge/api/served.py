"""The operator ↔ serving pod contract: which model a resource's pods serve.

With ``serving.rollout: InPlace`` the operator writes a :class:`ServedModel` to the resource's
``<name>-runtime-model`` ConfigMap; the pods read it at start and watch it, loading a new model
beside the one they serve and switching once it is warm. Each pod answers Triton's repository
index (``POST /v2/repository/index``) with a :class:`ModelIndexEntry` per model it serves or
loads: how the operator learns that a swap finished, or why it failed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rtdetr_edge.api.job import DIGEST_PATTERN, SummaryModel

SERVED_MODEL_SCHEMA = "rtdetr.io/served-model/v1"
SERVED_MODEL_KEY = "model.json"
"""The ConfigMap's key, and the file's name where the pods mount it."""


class ServedModel(SummaryModel):
    schema_: Literal["rtdetr.io/served-model/v1"] = Field(SERVED_MODEL_SCHEMA, alias="schema")
    model_dir: str = Field("", description="The model's directory as mounted in the pod (or oci).")
    oci: str | None = Field(None, description="The model as an OCI artifact, oci://registry/repository@sha256:…: "
                            "the pod pulls it into its cache, verified, instead of reading modelDir.")
    digest: str = Field(pattern=DIGEST_PATTERN, description="The model files' digest: a model with another is refused.")
    pipeline_digest: str = Field(description="The pipeline that made it.")
    shape_ranges: str | None = Field(None, description="TensorRT shape ranges the quantize Job collected (GPU).")
    measured_on_isa: str | None = Field(None, description="The CPU ISA level its accuracy gate ran on (CPU serving).")


ModelState = Literal["READY", "LOADING", "UNAVAILABLE"]


class ModelIndexEntry(SummaryModel):
    """One row of Triton's repository index: the model serving (READY), one loading beside it
    (LOADING), or one that could not be loaded (UNAVAILABLE, with the reason)."""

    name: str
    version: str = Field(description="The model's digest.")
    state: ModelState
    reason: str = ""
