"""The ``RTDETRModel`` custom resource as typed Python, its validation and the pipeline digest.

Pure (no Paddle, no Kubernetes): ``rtdetr-edge run`` uses it locally and the operator
uses it in the cluster, so both agree on defaults, on what is invalid, and on which
changes require a new quantization.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rtdetr_edge import __version__
from rtdetr_edge.files import digest_hex
from rtdetr_edge.storage import InvalidUriError, parse_uri

API_VERSION = "rtdetr.io/v1alpha1"
KIND = "RTDETRModel"
ARCHES = ("r18vd", "r34vd", "r50vd", "r50vd_m", "r101vd", "hgnetv2_l", "hgnetv2_x", "hgnetv2_h", "tiny")
METHODS = ("qat", "ptq", "none")
DEVICES = ("gpu", "cpu")
PRECISIONS = ("int8", "fp16", "fp32")
# Tools whose versions change the produced model (part of the pipeline digest).
TOOL_VERSIONS = {"paddlepaddle": "2.6.2", "paddleslim": "2.6.0", "rtdetr-edge": __version__.rsplit(".", 1)[0]}


class SpecError(ValueError):
    """An invalid resource; ``errors`` are the user-facing messages (all of them, not the first)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class SourceSpec:
    inference_model: str | None = None
    checkpoint: str | None = None
    sha256: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    uri: str = ""
    train_images: str = "train2017"
    val_images: str = "val2017"
    val_annotations: str = "annotations/instances_val2017.json"
    max_val_images: int | None = None
    category_ids: tuple[int, ...] | None = None
    """Model class index → dataset category id; default: the dataset's ids, sorted."""


@dataclass(frozen=True)
class QuantizationSpec:
    method: str = "qat"
    train_iter: int | None = None  # None: the arch's ACT default
    eval_iter: int | None = None
    learning_rate: float | None = None
    quantize_op_types: tuple[str, ...] | None = None
    max_map_drop: float = 0.5
    batch_size: int = 1
    calibration_batches: int = 32  # ptq only


@dataclass(frozen=True)
class ServingSpec:
    replicas: int = 2
    device: str = "gpu"
    precision: str = "int8"
    max_batch_size: int = 4
    batch_window_micros: int = 2000
    score_threshold: float = 0.5
    engine_cache: dict[str, Any] | None = None  # None: the operator's default (emptyDir as shipped)
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class CompressionSpec:
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    active_deadline_seconds: int = 7200


@dataclass(frozen=True)
class RTDETRModelSpec:
    arch: str
    source: SourceSpec
    dataset: DatasetSpec
    quantization: QuantizationSpec
    compression: CompressionSpec
    serving: ServingSpec
    artifacts: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RTDETRModel:
    name: str
    namespace: str
    spec: RTDETRModelSpec


def _get(mapping: dict[str, Any], key: str, default: Any, errors: list[str], where: str, kind: type | tuple[type, ...]) -> Any:
    value = mapping.get(key, default)
    if value is None or value is default:
        return value
    if isinstance(kind, tuple):
        ok = isinstance(value, kind) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if not ok:
        errors.append(f"{where}.{key} must be {getattr(kind, '__name__', 'a number')}, got {value!r}")
        return default
    return value


def _section(spec: dict[str, Any], key: str, errors: list[str]) -> dict[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        errors.append(f"spec.{key} must be an object")
        return {}
    return value


def _check_uri(uri: str | None, where: str, errors: list[str]) -> None:
    if uri is None:
        return
    try:
        parse_uri(uri)
    except InvalidUriError as error:
        errors.append(f"{where}: {error}")


def parse_spec(spec: dict[str, Any]) -> RTDETRModelSpec:
    """Validate and default a resource's ``spec``; raise :class:`SpecError` listing every problem."""
    errors: list[str] = []
    if not isinstance(spec, dict):
        raise SpecError(["spec must be an object"])
    arch = spec.get("arch")
    if arch not in ARCHES:
        errors.append(f"spec.arch must be one of {', '.join(ARCHES)}; got {arch!r}")

    src = _section(spec, "source", errors)
    source = SourceSpec(
        inference_model=_get(src, "inferenceModel", None, errors, "spec.source", str),
        checkpoint=_get(src, "checkpoint", None, errors, "spec.source", str),
        sha256=_get(src, "sha256", "", errors, "spec.source", str) or "",
    )
    if (source.inference_model is None) == (source.checkpoint is None):
        errors.append("spec.source needs exactly one of inferenceModel (an exported model dir) or checkpoint (.pdparams)")
    _check_uri(source.inference_model, "spec.source.inferenceModel", errors)
    _check_uri(source.checkpoint, "spec.source.checkpoint", errors)
    if source.sha256 and (len(source.sha256.removeprefix("sha256:")) != 64):
        errors.append("spec.source.sha256 must be 64 hex digits (optionally prefixed with 'sha256:')")

    ds = _section(spec, "dataset", errors)
    category_ids = _get(ds, "categoryIds", None, errors, "spec.dataset", list)
    dataset = DatasetSpec(
        uri=_get(ds, "uri", "", errors, "spec.dataset", str) or "",
        train_images=_get(ds, "trainImages", "train2017", errors, "spec.dataset", str),
        val_images=_get(ds, "valImages", "val2017", errors, "spec.dataset", str),
        val_annotations=_get(ds, "valAnnotations", "annotations/instances_val2017.json", errors, "spec.dataset", str),
        max_val_images=_get(ds, "maxValImages", None, errors, "spec.dataset", int),
        category_ids=tuple(category_ids) if category_ids is not None else None,
    )
    if not dataset.uri:
        errors.append("spec.dataset.uri is required (a COCO-layout folder: pvc://claim/path, file:///… or https://…)")
    _check_uri(dataset.uri or None, "spec.dataset.uri", errors)
    if dataset.max_val_images is not None and dataset.max_val_images < 1:
        errors.append("spec.dataset.maxValImages must be >= 1")
    if dataset.category_ids is not None and not all(isinstance(c, int) and not isinstance(c, bool) for c in dataset.category_ids):
        errors.append("spec.dataset.categoryIds must be a list of integers")

    q = _section(spec, "quantization", errors)
    op_types = _get(q, "quantizeOpTypes", None, errors, "spec.quantization", list)
    quantization = QuantizationSpec(
        method=_get(q, "method", "qat", errors, "spec.quantization", str),
        train_iter=_get(q, "trainIter", None, errors, "spec.quantization", int),
        eval_iter=_get(q, "evalIter", None, errors, "spec.quantization", int),
        learning_rate=_get(q, "learningRate", None, errors, "spec.quantization", (int, float)),
        quantize_op_types=tuple(op_types) if op_types is not None else None,
        max_map_drop=float(_get(q, "maxMapDrop", 0.5, errors, "spec.quantization", (int, float))),
        batch_size=_get(q, "batchSize", 1, errors, "spec.quantization", int),
        calibration_batches=_get(q, "calibrationBatches", 32, errors, "spec.quantization", int),
    )
    if quantization.method not in METHODS:
        errors.append(f"spec.quantization.method must be one of {', '.join(METHODS)}; got {quantization.method!r}")
    for name, value, low in (("trainIter", quantization.train_iter, 1), ("evalIter", quantization.eval_iter, 1),
                             ("batchSize", quantization.batch_size, 1), ("calibrationBatches", quantization.calibration_batches, 1)):  # fmt: skip
        if value is not None and value < low:
            errors.append(f"spec.quantization.{name} must be >= {low}")
    if quantization.learning_rate is not None and not quantization.learning_rate > 0:
        errors.append("spec.quantization.learningRate must be > 0")
    if not 0 <= quantization.max_map_drop <= 100:
        errors.append("spec.quantization.maxMapDrop must be within 0..100 mAP points")

    c = _section(spec, "compression", errors)
    compression = CompressionSpec(
        resources=_get(c, "resources", {}, errors, "spec.compression", dict),
        node_selector=_get(c, "nodeSelector", {}, errors, "spec.compression", dict),
        tolerations=tuple(_get(c, "tolerations", [], errors, "spec.compression", list)),
        active_deadline_seconds=_get(c, "activeDeadlineSeconds", 7200, errors, "spec.compression", int),
    )
    if compression.active_deadline_seconds < 60:
        errors.append("spec.compression.activeDeadlineSeconds must be >= 60")

    s = _section(spec, "serving", errors)
    serving = ServingSpec(
        replicas=_get(s, "replicas", 2, errors, "spec.serving", int),
        device=_get(s, "device", "gpu", errors, "spec.serving", str),
        precision=_get(s, "precision", "int8", errors, "spec.serving", str),
        max_batch_size=_get(s, "maxBatchSize", 4, errors, "spec.serving", int),
        batch_window_micros=_get(s, "batchWindowMicros", 2000, errors, "spec.serving", int),
        score_threshold=float(_get(s, "scoreThreshold", 0.5, errors, "spec.serving", (int, float))),
        engine_cache=_get(s, "engineCache", None, errors, "spec.serving", dict),
        resources=_get(s, "resources", {}, errors, "spec.serving", dict),
        node_selector=_get(s, "nodeSelector", {}, errors, "spec.serving", dict),
        tolerations=tuple(_get(s, "tolerations", [], errors, "spec.serving", list)),
    )
    if serving.device not in DEVICES:
        errors.append(f"spec.serving.device must be gpu or cpu; got {serving.device!r}")
    if serving.precision not in PRECISIONS:
        errors.append(f"spec.serving.precision must be int8, fp16 or fp32; got {serving.precision!r}")
    if serving.precision == "int8" and quantization.method == "none":
        errors.append("spec.serving.precision int8 needs spec.quantization.method qat or ptq (method is none)")
    if serving.precision == "fp16" and serving.device == "cpu":
        errors.append("spec.serving.precision fp16 needs device gpu (use fp32 or int8 on cpu)")
    if serving.precision in ("fp16", "fp32") and quantization.method != "none":
        errors.append(
            f"spec.serving.precision {serving.precision} serves the FP32 model: set spec.quantization.method none "
            "(or serve int8)"
        )
    if not 0 <= serving.replicas <= 100:
        errors.append("spec.serving.replicas must be within 0..100")
    if not 1 <= serving.max_batch_size <= 64:
        errors.append("spec.serving.maxBatchSize must be within 1..64")
    if not 0 <= serving.batch_window_micros <= 1_000_000:
        errors.append("spec.serving.batchWindowMicros must be within 0..1000000")
    if not 0 <= serving.score_threshold <= 1:
        errors.append("spec.serving.scoreThreshold must be within 0..1")
    if serving.engine_cache is not None:
        cache_kinds = set(serving.engine_cache) & {"hostPath", "pvcName", "emptyDir"}
        if len(cache_kinds) != 1 or len(serving.engine_cache) != 1:
            errors.append("spec.serving.engineCache needs exactly one of hostPath, pvcName or emptyDir")

    st = _section(spec, "storage", errors)
    artifacts = _get(st, "artifacts", "", errors, "spec.storage", str) or ""
    if not artifacts:
        errors.append("spec.storage.artifacts is required (where quantized models and results land, e.g. pvc://rtdetr-artifacts)")
    else:
        _check_uri(artifacts, "spec.storage.artifacts", errors)
        if artifacts.startswith("https://"):
            errors.append("spec.storage.artifacts must be writable: use pvc:// or file://, not https://")
    if errors:
        raise SpecError(errors)
    return RTDETRModelSpec(arch, source, dataset, quantization, compression, serving, artifacts)  # type: ignore[arg-type]


def parse_resource(document: dict[str, Any]) -> RTDETRModel:
    errors: list[str] = []
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        errors.append(f"expected apiVersion {API_VERSION} and kind {KIND}")
    metadata = document.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        errors.append("metadata.name is required")
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


def effective_quantization(arch: str, quantization: QuantizationSpec) -> dict[str, Any]:
    """The ACT settings that will actually run: the arch defaults with the spec's overrides."""
    defaults = act_defaults(arch)
    train = defaults["TrainConfig"]
    return {
        "method": quantization.method,
        "train_iter": quantization.train_iter or int(train["train_iter"]),
        "eval_iter": quantization.eval_iter or int(train["eval_iter"]),
        "learning_rate": float(quantization.learning_rate or train["learning_rate"]["learning_rate"]),
        "quantize_op_types": list(quantization.quantize_op_types or defaults["QuantAware"]["quantize_op_types"]),
        "batch_size": quantization.batch_size,
        "calibration_batches": quantization.calibration_batches,
        "max_map_drop": quantization.max_map_drop,
    }


def pipeline_digest(spec: RTDETRModelSpec) -> str:
    """A content hash of everything that changes the produced model or its verdict.

    ``serving``, ``compression`` (where the Job runs) and ``storage`` are left out:
    editing them never re-quantizes. The gate budget is in: it changes the verdict.
    """
    material = {
        "arch": spec.arch,
        "source": asdict(spec.source),
        "dataset": asdict(spec.dataset),
        "quantization": effective_quantization(spec.arch, spec.quantization),
        "tools": TOOL_VERSIONS,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), default=list)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def short_digest(digest: str, length: int = 12) -> str:
    return digest_hex(digest, length)


ARTIFACT_KEY_LENGTH = 16
"""Hex digits of the pipeline digest that name its artifact directory (and the operator's children)."""


def artifact_key(pipeline_digest: str) -> str:
    return digest_hex(pipeline_digest, ARTIFACT_KEY_LENGTH)
