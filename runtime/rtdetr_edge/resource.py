"""Reading an ``RTDETRModel`` (the typed API is :mod:`rtdetr_edge.api`) and the pipeline digest.

Pure (no Paddle, no Kubernetes): ``rtdetr-edge run`` uses it locally and the operator
uses it in the cluster, so both agree on defaults, on what is invalid, and on which
changes require a new quantization.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from rtdetr_edge import __version__
from rtdetr_edge.api.spec import (
    API_VERSION,
    KIND,
    NAME_MESSAGE,
    NAME_PATTERN,
    QuantizationSpec,
    RTDETRModelSpec,
    ServingSpec,
)
from rtdetr_edge.api.job import EffectiveQuantization, OnnxRuntimeInt8, PipelinePlan
from rtdetr_edge.files import digest_hex

DISTRIBUTION = "rtdetr-edge"
PINNED_TOOLS = ("paddlepaddle", "paddleslim", "onnxruntime")
"""Tools whose versions change the produced model: their pins are part of the pipeline digest."""
PADDLE_DISTRIBUTIONS = ("paddlepaddle", "paddlepaddle-gpu")  # both provide `paddle`


@functools.cache
def tool_versions() -> dict[str, str]:
    """The versions the pipeline digest names: this package's own pins (pyproject.toml's ``==``,
    read from the installed metadata, so the operator image knows them without Paddle) and
    rtdetr-edge's major.minor. The Job checks its installed tools against them
    (:func:`tool_version_problems`)."""
    pins: dict[str, str] = {}
    for requirement in metadata.requires(DISTRIBUTION) or []:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*==\s*([^\s;]+)", requirement)
        if match and match.group(1).lower() in PINNED_TOOLS:
            pins[match.group(1).lower()] = match.group(2)
    missing = sorted(set(PINNED_TOOLS) - set(pins))
    if missing:
        raise RuntimeError(f"{DISTRIBUTION}'s metadata pins no {', '.join(missing)}: reinstall the package")
    return {**pins, "rtdetr-edge": __version__.rsplit(".", 1)[0]}


def installed_version(*distributions: str) -> str | None:
    """The version of the first of ``distributions`` installed here (None: none is)."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def installed_tool_versions() -> dict[str, str | None]:
    """What this environment actually has (None: not installed)."""
    return {
        "paddlepaddle": installed_version(*PADDLE_DISTRIBUTIONS),
        "paddleslim": installed_version("paddleslim"),
        "onnxruntime": installed_version("onnxruntime"),
    }


def tool_version_problems(expected: dict[str, str], installed: dict[str, str | None]) -> list[str]:
    """Why this environment cannot produce the model a digest names (empty: it can)."""
    problems = []
    for tool, version in expected.items():
        have = installed.get(tool, version) if tool in PINNED_TOOLS else version
        if have is None:
            problems.append(f"{tool} is not installed (the pipeline needs {version})")
        elif have != version:
            problems.append(f"{tool} {have} is installed, the pipeline needs {version}")
    return problems


class SpecError(ValueError):
    """An invalid resource; ``errors`` are the user-facing messages (all of them, not the first)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class RTDETRModel:
    name: str
    namespace: str
    spec: RTDETRModelSpec


def _explain(error: ErrorDetails) -> str:
    """One pydantic error as the user should read it: where (camelCase, as written), what."""
    where = "spec" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"{where}: unknown field (a typo? `kubectl explain rtdetrmodel.spec` lists the fields)"
    return f"{where}: {message}, got {error['input']!r}" if kind != "value_error" else f"{where}: {message}"


def parse_spec(spec: Any) -> RTDETRModelSpec:
    """Validate and default a resource's ``spec``; raise :class:`SpecError` listing every problem."""
    if not isinstance(spec, dict):
        raise SpecError(["spec must be an object"])
    try:
        return RTDETRModelSpec.model_validate(spec)
    except ValidationError as error:
        raise SpecError([_explain(e) for e in error.errors()]) from None


def parse_resource(document: dict[str, Any]) -> RTDETRModel:
    errors: list[str] = []
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        errors.append(f"expected apiVersion {API_VERSION} and kind {KIND}")
    metadata = document.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        errors.append("metadata.name is required")
    elif not re.match(NAME_PATTERN, name):
        errors.append(NAME_MESSAGE)
    namespace = (metadata.get("namespace") if isinstance(metadata, dict) else None) or "default"
    try:
        spec = parse_spec(document.get("spec") or {})
    except SpecError as error:
        errors.extend(error.errors)
    if errors:
        raise SpecError(errors)
    return RTDETRModel(str(name), str(namespace), spec)


def load_resource(path: Path) -> RTDETRModel:
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as error:
        raise SpecError([f"cannot read {path}: {error}"]) from None
    models = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(models) != 1:
        raise SpecError([f"{path} must hold exactly one {KIND} (found {len(models)})"])
    return parse_resource(models[0])


# ---------------------------------------------------------------------------------------
# ACT defaults and the pipeline digest


def configs_dir() -> Path:
    """``configs/`` of this checkout, or ``$RTDETR_CONFIG_DIR`` (set in the container images)."""
    configured = os.environ.get("RTDETR_CONFIG_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(__file__).resolve().parents[2] / "configs")
    for candidate in candidates:
        if (candidate / "act").is_dir():
            return candidate
    raise FileNotFoundError(f"no configs/act directory (looked in {', '.join(map(str, candidates))}); set RTDETR_CONFIG_DIR")


@functools.cache
def _act_defaults_file(arch: str) -> str:
    return (configs_dir() / "act" / f"{arch}.yaml").read_text(encoding="utf-8")


def act_defaults(arch: str) -> dict[str, Any]:
    """PaddleSlim ACT defaults for ``arch`` (a fresh dict; the file is read once per process,
    since the operator computes digests on every reconcile)."""
    return dict(yaml.safe_load(_act_defaults_file(arch)))


def serving_backend(serving: ServingSpec) -> str:
    """The runtime serving pods use (``rtdetr-edge serve --backend``): Paddle (TensorRT) on GPU,
    ``serving.cpuRuntime`` on CPU."""
    return serving.cpu_runtime if serving.device == "cpu" else "paddle"


def int8_runtime(serving: ServingSpec) -> str:
    """The runtime an INT8 model is made for: the serving runtime (ONNX Runtime's model is made
    by ONNX Runtime; Paddle's by PaddleSlim, for TensorRT or oneDNN)."""
    return serving_backend(serving)


def effective_quantization(arch: str, quantization: QuantizationSpec, serving: ServingSpec) -> EffectiveQuantization:
    """The ACT settings that will actually run: the arch defaults with the spec's overrides."""
    defaults = act_defaults(arch)
    train = defaults["TrainConfig"]
    runtime = int8_runtime(serving) if quantization.method != "none" else "paddle"
    op_types = list(quantization.quantize_op_types or defaults["QuantAware"]["quantize_op_types"])
    return EffectiveQuantization(
        method=quantization.method,
        runtime=runtime,
        train_iter=quantization.train_iter or int(train["train_iter"]),
        eval_iter=quantization.eval_iter or int(train["eval_iter"]),
        learning_rate=float(quantization.learning_rate or train["learning_rate"]["learning_rate"]),
        quantize_op_types=op_types,
        batch_size=quantization.batch_size,
        calibration_batches=quantization.calibration_batches,
        max_map_drop=quantization.max_map_drop,
        min_baseline_map=quantization.min_baseline_map,
        onnxruntime=OnnxRuntimeInt8.for_paddle_ops(op_types) if runtime == "onnxruntime" else None,
    )


GATE_BUDGET = frozenset({"max_map_drop", "min_baseline_map"})
"""The plan's fields that judge a model rather than make it: out of the pipeline digest."""


def _digest(spec: RTDETRModelSpec, quantization: EffectiveQuantization, tools: dict[str, str], exclude: frozenset[str]) -> str:
    material = {
        "arch": spec.arch,
        "source": {**spec.source.model_dump(), "sha256": spec.source.sha256 or ""},
        "dataset": spec.dataset.model_dump(),
        # exclude_none: a field added to the plan moves no digest of a resource that does not use it
        # (a moved digest re-runs hours of quantization for every user after an upgrade).
        "quantization": quantization.model_dump(exclude_none=True, exclude=set(exclude)),
        "tools": tools,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def pipeline_plan(spec: RTDETRModelSpec) -> PipelinePlan:
    """The Job's plan, with a content hash of everything that changes the produced model as its
    digest.

    ``serving``, ``compression`` (where the Job runs) and ``storage`` are left out: editing them
    never re-quantizes. So is the gate budget (``maxMapDrop``, ``minBaselineMap``): the Job
    measures both mAPs and the operator judges them with the resource's current budget, so a
    budget change re-judges the last model in seconds instead of re-running hours of QAT.
    """
    quantization = effective_quantization(spec.arch, spec.quantization, spec.serving)
    tools = tool_versions()
    digest = _digest(spec, quantization, tools, exclude=GATE_BUDGET)
    return PipelinePlan(pipeline_digest=digest, tools=tools, quantization=quantization)


def pipeline_digest(spec: RTDETRModelSpec) -> str:
    return pipeline_plan(spec).pipeline_digest


def earlier_pipeline_digest(spec: RTDETRModelSpec) -> str:
    """The digest releases before the operator judged the gate gave this spec (the budget hashed
    in): a model, result or Job made under it is this spec's, so an upgrade re-runs nothing."""
    quantization = effective_quantization(spec.arch, spec.quantization, spec.serving)
    return _digest(spec, quantization, tool_versions(), exclude=frozenset())


def short_digest(digest: str, length: int = 12) -> str:
    return digest_hex(digest, length)


ARTIFACT_KEY_LENGTH = 16
"""Hex digits of the pipeline digest that name its artifact directory (and the operator's children)."""


def artifact_key(pipeline_digest: str) -> str:
    return digest_hex(pipeline_digest, ARTIFACT_KEY_LENGTH)
