"""``rtdetr-edge``: every pipeline stage and tool as a subcommand (click).

Serving and predictor flags also read ``RTDETR_<FLAG>`` environment variables (e.g.
``RTDETR_CACHE_DIR`` for ``--cache-dir``; ``--help`` names each one), which is how the
Kubernetes manifests configure the runtime. A failing command exits non-zero with
``error: <cause>`` as the last line of stderr (2 for a usage error).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import click
from annotated_types import Ge, Gt, Le
from pydantic import BaseModel

from rtdetr_edge import __version__
from rtdetr_edge.api.spec import ARCHES, METHODS, QuantizationSpec, ServingSpec
from rtdetr_edge.cpu_isa import IsaLevel
from rtdetr_edge.errors import RtdetrEdgeError
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.predictor.plan import default_backend
from rtdetr_edge.predictor.settings import BACKENDS, CPU_INT8_MODES, DEVICES, PRECISIONS, PredictorSettings
from rtdetr_edge.oci import RegistryAccess
from rtdetr_edge.server.model_service import MAX_DETECTIONS_LIMIT, ServeOptions
from rtdetr_edge.server.security import DEFAULT_RELOAD_SECONDS, SecurityOptions

log = logging.getLogger("rtdetr_edge")
ENV_PREFIX = "RTDETR_"
PATH = click.Path(path_type=Path)
EXISTING_DIR = click.Path(path_type=Path, exists=True, file_okay=False)
EXISTING_FILE = click.Path(path_type=Path, exists=True, dir_okay=False)


def option(*declarations: str, env: bool = False, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option; ``env=True`` also reads ``RTDETR_<FLAG>`` (named in ``--help``)."""
    if env:
        flag = next(d for d in declarations if d.startswith("--")).split("/")[0]  # --x/--no-x: RTDETR_X
        kwargs.setdefault("envvar", ENV_PREFIX + flag[2:].upper().replace("-", "_"))
        kwargs.setdefault("show_envvar", True)
    if "default" in kwargs and kwargs["default"] is not None and kwargs["default"] is not False and kwargs["default"] != ():
        kwargs.setdefault("show_default", True)
    return click.option(*declarations, **kwargs)


def options(*decorators: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Several options as one decorator (shared by commands)."""

    def apply(function: Callable[..., Any]) -> Callable[..., Any]:
        return functools.reduce(lambda f, decorate: decorate(f), reversed(decorators), function)

    return apply


def from_api(model: type[BaseModel], name: str) -> dict[str, Any]:
    """A numeric option's range and default, from the API field ``name`` of ``model``: each bound
    and default is defined once, in the API (the CRD is generated from the same field)."""
    field = model.model_fields[name]
    low: float | None = None
    high: float | None = None
    low_open = False
    for rule in field.metadata:
        if isinstance(rule, Ge):
            low = rule.ge  # type: ignore[assignment]
        elif isinstance(rule, Gt):
            low, low_open = rule.gt, True  # type: ignore[assignment]
        elif isinstance(rule, Le):
            high = rule.le  # type: ignore[assignment]
    kind = click.FloatRange if float in (field.annotation, *get_args(field.annotation)) else click.IntRange
    return {"type": kind(low, high, min_open=low_open), "default": field.default}


PREDICTOR_DEFAULTS = PredictorSettings()
SERVE_DEFAULTS = {field.name: field.default for field in dataclasses.fields(ServeOptions)}
AUTO = "auto"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtdetr-edge"


DEVICE = option("--device", env=True, type=click.Choice(DEVICES), default=PREDICTOR_DEFAULTS.device,
                help="gpu = TensorRT")  # fmt: skip
CACHE_DIR = option("--cache-dir", env=True, type=PATH, default=default_cache_dir, help="engine cache root",
                   show_default="~/.cache/rtdetr-edge")  # fmt: skip
PREDICTOR = options(
    DEVICE,
    option("--precision", env=True, type=click.Choice(PRECISIONS), default=PREDICTOR_DEFAULTS.precision),
    option(
        "--backend", env=True, type=click.Choice((AUTO, *BACKENDS)), default=AUTO,
        help="auto: paddle (TensorRT) on GPU; on CPU onnxruntime (the faster CPU runtime), except an INT8 "
        "model without model.int8.onnx, which only Paddle runs",
    ),
    option("--max-batch-size", env=True, **from_api(ServingSpec, "max_batch_size")),
    option("--cpu-threads", env=True, type=click.IntRange(1), default=PREDICTOR_DEFAULTS.cpu_threads),
    option("--gpu-device-id", env=True, type=click.IntRange(0), default=PREDICTOR_DEFAULTS.gpu_device_id),
    option(
        "--cpu-int8", env=True, type=click.Choice(CPU_INT8_MODES), default=PREDICTOR_DEFAULTS.cpu_int8,
        help="INT8 models on CPU: the QDQ graph in FP32 kernels (the quantized model's accuracy) or oneDNN INT8 "
        "kernels (measured -12 mAP on RT-DETR-shaped models here; validate with the gate)",
    ),  # fmt: skip
    CACHE_DIR,
)
MODEL_DIR = option("--model", "model", envvar="RTDETR_MODEL_DIR", show_envvar=True, type=EXISTING_DIR, required=True,
                   help="an exported model folder (model.pdmodel + model.pdiparams)")  # fmt: skip
PORT = option("--port", env=True, type=click.IntRange(0, 65535), default=8080)


# How to reach an OCI registry holding models (push, pull, serve).
REGISTRY = options(
    option("--registry-config", env=True, type=EXISTING_FILE, default=None,
           help="Docker config file with registry credentials (~/.docker/config.json, a dockerconfigjson Secret)"),
    option("--registry-ca-file", env=True, type=EXISTING_FILE, default=None, help="CA bundle of a registry with a private CA"),
    option("--registry-plain-http", env=True, is_flag=True, default=False, help="plain HTTP (a registry on loopback)"),
)  # fmt: skip


def usable(device: str) -> str:
    """``device``, once known to work here: ``gpu`` without CUDA Paddle or a visible driver fails
    now, with the fix, instead of deep inside Paddle seconds later."""
    if device == "gpu":
        from rtdetr_edge.gpu_check import require_gpu

        require_gpu()
    return device


def chosen_backend(params: dict[str, Any]) -> str:
    """``--backend``, with ``auto`` resolved for this device, precision and model."""
    if params["backend"] != AUTO:
        return str(params["backend"])
    try:
        has_onnx_int8 = ModelFiles.locate(params["model"]).onnx_int8 is not None
    except RtdetrEdgeError:  # no model: warm-up reports it, with its cause
        has_onnx_int8 = False
    backend = default_backend(params["device"], params["precision"], has_onnx_int8)
    log.info("backend auto: %s (%s, %s)", backend, params["device"], params["precision"])
    return backend


def predictor_settings(params: dict[str, Any]) -> PredictorSettings:
    usable(params["device"])
    try:
        return PredictorSettings(
            device=params["device"], precision=params["precision"], backend=chosen_backend(params),
            max_batch_size=params["max_batch_size"], cpu_threads=params["cpu_threads"],
            gpu_device_id=params["gpu_device_id"], cpu_int8=params["cpu_int8"],
        )  # fmt: skip
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="rtdetr-edge")
@option("--log-level", env=True, default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def cli(log_level: str) -> None:
    """RT-DETR quantization and serving: every pipeline stage as a subcommand."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# --- the data plane ------------------------------------------------------------------------


@cli.command()
@option("--model", "model", envvar="RTDETR_MODEL_DIR", show_envvar=True, default=None,
        help="an exported model folder (model.pdmodel + model.pdiparams), or one pushed to a registry "
        "(oci://registry/repository@sha256:…, pulled into --cache-dir); or --model-config")  # fmt: skip
@option("--model-config", env=True, type=EXISTING_FILE, default=None,
        help="a served-model file naming the model (the operator's ConfigMap): watched, and a new model it names "
        "is loaded beside the serving one and swapped in without dropping a request")  # fmt: skip
@PREDICTOR
@REGISTRY
@option("--model-name", env=True, default=SERVE_DEFAULTS["model_name"], help="name in the OIP v2 API")
@option("--host", env=True, default="0.0.0.0")
@PORT
@option("--grpc-port", env=True, type=click.IntRange(0, 65535), default=None,
        help="also serve the Open Inference Protocol over gRPC on this port (KServe and the operator use 8081; "
        "0 picks a free one); off by default")  # fmt: skip
@option("--tls-cert-file", env=True, type=EXISTING_FILE, default=None,
        help="serve HTTPS (and gRPC over TLS) with this PEM certificate chain; reloaded when the file changes")
@option("--tls-key-file", env=True, type=EXISTING_FILE, default=None, help="the certificate's PEM private key")
@option("--tls-client-ca-file", env=True, type=EXISTING_FILE, default=None,
        help="require client certificates signed by these PEM CAs (mutual TLS)")
@option("--auth-token-file", env=True, type=EXISTING_FILE, default=None,
        help="require 'Authorization: Bearer <token>' with one of this file's tokens (one per line) on every "
        "route but health and /metrics; reloaded when the file changes")
@option("--management-port", env=True, type=click.IntRange(0, 65535), default=None,
        help="also answer health and /metrics on this plain-HTTP port (probes and Prometheus, when the serving "
        "ports need client certificates or tokens)")
@option("--credential-reload-seconds", env=True, type=click.FloatRange(0.1), default=DEFAULT_RELOAD_SECONDS,
        help="how often the TLS and token files are checked for changes")
@option("--labels", env=True, type=EXISTING_FILE, default=None, help="label file (default: the export's, else COCO's 80)")
@option("--score-threshold", env=True, **from_api(ServingSpec, "score_threshold"))
@option("--max-detections", env=True, type=click.IntRange(1, MAX_DETECTIONS_LIMIT),
        default=SERVE_DEFAULTS["max_detections"])  # fmt: skip
@option("--batch-window-micros", env=True, **from_api(ServingSpec, "batch_window_micros"))
@option("--max-queue-millis", env=True, **from_api(ServingSpec, "max_queue_millis"),
        help="queue-time budget: a request that would wait longer is refused with 503 + Retry-After")  # fmt: skip
@option("--max-body-bytes", env=True, type=click.IntRange(1), default=SERVE_DEFAULTS["max_body_bytes"])
@option("--access-log/--no-access-log", env=True, default=ServingSpec.model_fields["access_log"].default,
        help="one JSON line per request on standard output (never a body; probes and scrapes left out)")  # fmt: skip
@option("--tracing/--no-tracing", env=True, default=False,
        help="OpenTelemetry spans per detect/infer request (decode, queue, inference, postprocess, encode), sent by "
        "OTLP/HTTP to $OTEL_EXPORTER_OTLP_ENDPOINT, sampled as $OTEL_TRACES_SAMPLER says (the SDK's variables)")  # fmt: skip
@option("--max-image-pixels", env=True, type=click.IntRange(1), default=SERVE_DEFAULTS["max_image_pixels"])
@option("--drain-seconds", env=True, type=click.FloatRange(0), default=30.0)
@option("--shutdown-delay-seconds", env=True, type=click.FloatRange(0), default=0.0,
        help="on SIGTERM, report not-ready and keep serving this long before draining (pods the operator creates: 10)")
@option("--shape-ranges", env=True, type=PATH, default=None,
        help="shape-range file collected by the quantize Job for this model (skips collection; missing: collected)")
@option("--measured-on-isa", env=True, type=click.Choice(get_args(IsaLevel)), default=None,
        help="CPU ISA level the model's accuracy gate ran on (the operator sets it): an INT8 model that computes "
        "other numbers on this CPU is refused")  # fmt: skip
def serve(**params: Any) -> int:
    """Warm up a model and serve detection over HTTP (and the Open Inference Protocol over gRPC)."""
    from rtdetr_edge.server.run import run_server

    if (params["model"] is None) == (params["model_config"] is None):
        raise click.UsageError("give the model as --model DIR or --model-config FILE (one of them)")
    model = str(params["model"] or "")
    model_ref = model if model.startswith("oci://") else None
    if model and model_ref is None and not Path(model).is_dir():
        raise click.BadParameter(f"directory '{model}' does not exist", param_hint="'--model'")
    settings = predictor_settings(params)
    serve_options = ServeOptions(
        model_dir=Path(model) if model and model_ref is None else Path(),
        model_ref=model_ref,
        model_config=params["model_config"],
        cache_dir=params["cache_dir"],
        predictor=settings,
        model_name=params["model_name"],
        labels_file=params["labels"],
        score_threshold=params["score_threshold"],
        max_detections=params["max_detections"],
        batch_window_seconds=params["batch_window_micros"] / 1e6,
        max_queue_seconds=params["max_queue_millis"] / 1000,
        max_body_bytes=params["max_body_bytes"],
        access_log=params["access_log"],
        tracing=params["tracing"],
        security=security_options(params),
        max_image_pixels=params["max_image_pixels"],
        preprocess_threads=settings.cpu_threads,
        shape_seed=params["shape_ranges"],
        measured_on_isa=params["measured_on_isa"],
        registry=registry_access(params),
    )
    return run_server(serve_options, params["host"], params["port"], params["drain_seconds"],
                      shutdown_delay=params["shutdown_delay_seconds"], grpc_port=params["grpc_port"],
                      management_port=params["management_port"])  # fmt: skip


def registry_access(params: dict[str, Any]) -> RegistryAccess:
    return RegistryAccess(config_file=params["registry_config"], ca_file=params["registry_ca_file"],
                          plain_http=params["registry_plain_http"])  # fmt: skip


@cli.command()
@option("--model", "model", type=EXISTING_DIR, required=True, help="the model folder to push (every file in it)")
@option("--shape-ranges", type=EXISTING_FILE, default=None, help="TensorRT shape ranges collected for it, pushed beside it")
@REGISTRY
@click.argument("reference")
def push(**params: Any) -> int:
    """Push a model folder to an OCI registry as an artifact (ORAS layout; `oras pull` gets it too).

    REFERENCE is oci://registry/repository[:tag]; the reference pinned by digest is printed: name it
    as the resource's source, or serve it with `serve --model-config`.
    """
    from rtdetr_edge.oci import Reference, push_model

    pinned = push_model(params["model"], Reference.parse(params["reference"]), registry_access(params), params["shape_ranges"])
    click.echo(str(pinned))
    return 0


@cli.command()
@option("--cache-dir", type=PATH, required=True, help="where pulled models are kept (models/<digest>/model)")
@option("--expected-digest", default=None, help="the model files' digest it must have (sha256:…)")
@REGISTRY
@click.argument("reference")
def pull(**params: Any) -> int:
    """Pull a model pushed by `push` (oci://…@sha256:…), verified; print where it is."""
    from rtdetr_edge.oci import Reference, pull_model

    pulled = pull_model(Reference.parse(params["reference"]), params["cache_dir"], registry_access(params), params["expected_digest"])
    print_json({"modelDir": str(pulled.model_dir), "shapeRanges": str(pulled.shape_ranges) if pulled.shape_ranges else None,
                "manifestDigest": pulled.manifest_digest})  # fmt: skip
    return 0


def security_options(params: dict[str, Any]) -> SecurityOptions:
    try:
        return SecurityOptions(
            tls_cert_file=params["tls_cert_file"], tls_key_file=params["tls_key_file"],
            client_ca_file=params["tls_client_ca_file"], token_file=params["auth_token_file"],
            reload_seconds=params["credential_reload_seconds"],
        )  # fmt: skip
    except ValueError as error:
        raise click.UsageError(str(error)) from None


@cli.command()
@MODEL_DIR
@PREDICTOR
def warmup(**params: Any) -> int:
    """Collect shape ranges and build the engine cache entry, then exit."""
    from rtdetr_edge.warmup import warm_up

    warmed = warm_up(params["model"], predictor_settings(params), params["cache_dir"])
    warmed.predictor.close()
    print_json(warmed.report.to_dict())
    return 0


@cli.command("gpu-libraries")
def gpu_libraries() -> int:
    """Check, without a GPU, that every CUDA, cuDNN and TensorRT library Paddle loads resolves, at
    the versions Paddle was built with (the runtime-gpu image's self-check; run it on a node to
    see what a GPU pod would load)."""
    from rtdetr_edge.cuda_libraries import check_libraries, paddle_build_versions
    from rtdetr_edge.resource import installed_version

    if installed_version("paddlepaddle-gpu") is None:
        raise click.ClickException("this install has no CUDA build of Paddle (paddlepaddle-gpu): use the runtime-gpu image")
    report = check_libraries(paddle_build_versions())
    print_json(report.to_dict())
    if report.problems:
        raise click.ClickException("; ".join(report.problems))
    return 0


@cli.command()
@click.argument("images", nargs=-1, required=True, type=EXISTING_FILE)
@option("--url", env=True, default="http://127.0.0.1:8080")
@option("--score-threshold", type=click.FloatRange(0, 1), default=None, help="default: the server's")
@option("--max-detections", type=click.IntRange(1), default=None, help="default: the server's")
@option("--timeout", type=click.FloatRange(0, min_open=True), default=30.0)
@option("--json", "as_json", is_flag=True, help="print the server's JSON, one line per image")
def detect(images: tuple[Path, ...], url: str, score_threshold: float | None, max_detections: int | None,
           timeout: float, as_json: bool) -> int:  # fmt: skip
    """Send images to a running server and print the detections."""
    from rtdetr_edge.client import DetectClient

    client = DetectClient(url, timeout=timeout)
    for image in images:
        result = client.detect_file(image, score_threshold, max_detections)
        if as_json:
            click.echo(json.dumps(result))
            continue
        timing = result["timing_ms"]
        click.echo(f"{image}: {len(result['detections'])} detections ({timing['total']:.1f} ms in the server)")
        for detection in result["detections"]:
            x1, y1, x2, y2 = detection["box"]
            click.echo(f"  {detection['label']:<16} {detection['score']:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    return 0


# --- the pipeline --------------------------------------------------------------------------


@cli.command()
@option("--model", type=EXISTING_DIR, required=True, help="FP32 export (left untouched)")
@option("--train-images", type=EXISTING_DIR, required=True, help="folder of training images (no labels)")
@option("--out", type=PATH, required=True, help="output folder (must not exist)")
@option("--arch", type=click.Choice(ARCHES), default="r50vd", help="selects the ACT defaults in configs/act/")
@option("--method", type=click.Choice([m for m in METHODS if m != "none"]),
        default=QuantizationSpec.model_fields["method"].default)  # fmt: skip
@option("--train-iter", **from_api(QuantizationSpec, "train_iter"), help="default: the arch's")
@option("--eval-iter", **from_api(QuantizationSpec, "eval_iter"), help="default: the arch's")
@option("--learning-rate", **from_api(QuantizationSpec, "learning_rate"), help="default: the arch's")
@option("--quantize-op-types", multiple=True, help="repeat for each op type (default: the arch's)")
@option("--batch-size", **from_api(QuantizationSpec, "batch_size"))
@option("--calibration-batches", **from_api(QuantizationSpec, "calibration_batches"), help="ptq only")
@option(
    "--for", "runtime", type=click.Choice(BACKENDS), default="paddle",
    help="paddle: PaddleSlim's QDQ model (TensorRT, Paddle CPU); onnxruntime: ONNX Runtime's INT8 "
    "model.int8.onnx for CPU serving (--method ptq)",
)
@DEVICE
@option("--progress-file", type=PATH, default=None, help="JSON progress (iteration, loss, ETA)")
def quantize(**params: Any) -> int:
    """Quantize an FP32 export with PaddleSlim (ACT QAT + distillation, or PTQ)."""
    from rtdetr_edge.coco import list_images
    from rtdetr_edge.quantize import QuantizeSettings, quantize_model

    settings = QuantizeSettings(
        arch=params["arch"], method=params["method"], train_iter=params["train_iter"], eval_iter=params["eval_iter"],
        learning_rate=params["learning_rate"], quantize_op_types=params["quantize_op_types"] or None,
        batch_size=params["batch_size"], calibration_batches=params["calibration_batches"], device=usable(params["device"]),
        runtime=params["runtime"],
    )  # fmt: skip
    report = quantize_model(params["model"], list_images(params["train_images"]), params["out"], settings,
                            params["progress_file"])  # fmt: skip
    print_json(report.wire())
    return 0


@cli.command()
@option("--model", type=EXISTING_DIR, required=True)
@option("--images", type=EXISTING_DIR, required=True, help="validation image folder")
@option("--annotations", type=EXISTING_FILE, required=True, help="COCO instances_*.json")
@option("--max-images", type=click.IntRange(1), default=None)
@option("--num-classes", type=click.IntRange(1), default=None, help="default: the export's infer_cfg.yml label_list, else 80")
@option("--category-ids", type=int, multiple=True, help="class index -> category id, repeated in order (default: sorted ids)")
@option("--batch-size", type=click.IntRange(1), default=1)
@option("--out", type=PATH, default=None, help="also write the JSON result here")
@PREDICTOR
def evaluate(**params: Any) -> int:
    """COCO mAP of a model through the serving predictor."""
    from rtdetr_edge.coco import class_to_category_ids, load_ground_truth
    from rtdetr_edge.evaluate import evaluate_model
    from rtdetr_edge.files import write_text_atomic
    from rtdetr_edge.pipeline import num_model_classes

    ground_truth = load_ground_truth(params["annotations"], params["images"], params["max_images"])
    num_classes = params["num_classes"] or num_model_classes(params["model"])
    mapping = class_to_category_ids(ground_truth, num_classes, list(params["category_ids"]) or None)
    result = evaluate_model(params["model"], predictor_settings(params), params["cache_dir"], ground_truth, mapping,
                            params["batch_size"])  # fmt: skip
    document = json.dumps(result.wire(), indent=2)
    if params["out"]:
        write_text_atomic(params["out"], document)
    click.echo(document)
    return 0


@cli.command()
@click.argument("resource", type=EXISTING_FILE)
@option("--pvc-root", env=True, type=PATH, default=Path("/mnt/pvc"), help="where pvc://CLAIM/… is mounted (ROOT/CLAIM)")
@option("--download-dir", env=True, type=PATH, default=Path("/tmp/rtdetr-downloads"), help="https:// downloads")
@CACHE_DIR
@DEVICE
@option("--termination-log", type=PATH, default=None, help="default: /dev/termination-log if present")
@option("--plan", type=EXISTING_FILE, default=None, metavar="PLAN.json",
        help="the operator's plan for this run: digest, ACT settings, tool versions (default: made from the resource)")  # fmt: skip
@REGISTRY
def pipeline(resource: Path, pvc_root: Path, download_dir: Path, cache_dir: Path, device: str,
             termination_log: Path | None, plan: Path | None, **registry: Any) -> int:  # fmt: skip
    """The quantize Job: quantize, evaluate FP32 and INT8, gate, shapes."""
    from pydantic import ValidationError

    from rtdetr_edge.api.job import PipelinePlan
    from rtdetr_edge.pipeline import run_pipeline
    from rtdetr_edge.resource import SpecError, load_resource
    from rtdetr_edge.storage import StorageResolver

    try:
        model = load_resource(resource)
    except SpecError as error:
        raise click.UsageError(f"invalid spec: {error}") from None
    the_plan = None
    if plan is not None:
        try:
            the_plan = PipelinePlan.model_validate_json(plan.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as error:
            raise click.BadParameter(str(error), param_hint=f"--plan {plan}") from None
    access = registry_access(registry)
    resolver = StorageResolver(pvc_root=pvc_root, download_dir=download_dir, registry=access)
    result = run_pipeline(model, resolver, cache_dir, usable(device), termination_log, the_plan, access)
    print_json(result.summary().wire())
    return 0


@cli.command()
@click.argument("resource", type=EXISTING_FILE)
@option("--root", type=PATH, default=Path(".rtdetr-edge/run"), help="pvc:// maps to ROOT/pvc/")
@option("--device", type=click.Choice(DEVICES), default=None, help="override spec.serving.device")
@option("--host", default="127.0.0.1")
@PORT
@option("--no-serve", is_flag=True, help="stop after the pipeline and the summary")
@option("--sample-images", type=EXISTING_FILE, multiple=True, help="sent once the server is ready (repeatable)")
def run(resource: Path, root: Path, device: str | None, host: str, port: int, no_serve: bool,
        sample_images: tuple[Path, ...]) -> int:  # fmt: skip
    """Run an RTDETRModel locally: quantize, evaluate, gate, warm up, serve."""
    from rtdetr_edge.local_run import RunOptions, run_local

    return run_local(RunOptions(resource_file=resource, root=root, device=device, host=host, port=port,
                                serve=not no_serve, sample_images=list(sample_images)))  # fmt: skip


# --- development tools (rtdetr_edge.dev: in a source checkout, not in the images) ----------


def dev_tool(function: Callable[..., int]) -> Callable[..., int]:
    """Commands of ``rtdetr_edge.dev``, which the container images leave out."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            import rtdetr_edge.dev  # noqa: F401
        except ModuleNotFoundError:
            raise click.UsageError(
                "this is a development tool, not part of this image: run it from a source checkout "
                "(git clone … && make demo)"
            ) from None
        return function(*args, **kwargs)

    return wrapper


@cli.command("tiny-model")
@click.argument("out", type=PATH)
@option("--seed", type=int, default=0)
@option("--num-classes", type=click.IntRange(1), default=80)
@option("--hidden-dim", type=click.IntRange(8), default=64)
@dev_tool
def tiny_model(out: Path, seed: int, num_classes: int, hidden_dim: int) -> int:
    """Export the small RT-DETR-shaped model used by tests and demos."""
    from rtdetr_edge.dev.tiny_model import TinyModelSpec, export_tiny_model

    spec = TinyModelSpec(num_classes=num_classes, hidden_dim=hidden_dim, seed=seed)
    export_tiny_model(out, spec)
    click.echo(f"wrote {out}/model.pdmodel and model.pdiparams ({spec})")
    return 0


@cli.command("make-dataset")
@click.argument("out", type=PATH)
@option("--train", type=click.IntRange(0), default=64)
@option("--val", type=click.IntRange(1), default=64)
@option("--seed", type=int, default=0)
@dev_tool
def make_dataset(out: Path, train: int, val: int, seed: int) -> int:
    """Write a deterministic synthetic COCO-layout dataset."""
    from rtdetr_edge.dev.synthetic import write_coco_dataset

    write_coco_dataset(out, train=train, val=val, seed=seed)
    click.echo(f"wrote a COCO-layout dataset to {out} ({train} train, {val} val images)")
    return 0


@cli.command("train-tiny")
@click.argument("out", type=PATH)
@option("--iterations", type=click.IntRange(1), default=2000)
@option("--batch-size", type=click.IntRange(1), default=8)
@option("--seed", type=int, default=0)
@dev_tool
def train_tiny(out: Path, iterations: int, batch_size: int, seed: int) -> int:
    """Train the tiny model on synthetic shapes (the demo's weights)."""
    from rtdetr_edge.dev.train_tiny import TrainSettings, train_tiny_model

    train_tiny_model(out, TrainSettings(iterations=iterations, batch_size=batch_size, seed=seed))
    click.echo(f"wrote the trained tiny model to {out}")
    return 0


@cli.command()
@option("--work-dir", type=PATH, default=Path(".rtdetr-edge/demo"))
@option("--host", default="127.0.0.1")
@PORT
@option("--no-serve", is_flag=True, help="stop after the pipeline and the summary")
@dev_tool
def demo(work_dir: Path, host: str, port: int, no_serve: bool) -> int:
    """The embedded default: run the sample resource on synthetic data and serve it."""
    from rtdetr_edge.dev.demo import run_demo

    return run_demo(work_dir, host, port, serve=not no_serve)


@cli.command()
@click.argument("images", nargs=-1, type=EXISTING_FILE)
@option("--model", type=EXISTING_DIR, default=None, help="an RT-DETR export (default: the tiny model)")
@option("--cpu-threads", type=click.IntRange(1), default=PREDICTOR_DEFAULTS.cpu_threads)
@option("--max-batch-size", **from_api(ServingSpec, "max_batch_size"))
@option("--requests", type=click.IntRange(1), default=200, help="requests per HTTP measurement")
@option("--concurrency", type=click.IntRange(1), multiple=True, default=(1, 4, 8), help="repeatable")
@option("--work-dir", type=PATH, default=Path(".rtdetr-edge/bench"))
@option("--repetitions", type=click.IntRange(1), default=3, help="every measurement, both backends interleaved")
@option("--predictor-runs", type=click.IntRange(1), default=20, help="timed calls per batch size and repetition")
@option("--json-out", type=PATH, default=None)
@dev_tool
def bench(images: tuple[Path, ...], **params: Any) -> int:
    """Measure predictor, HTTP server and backends side by side (IMAGES: JPEGs to send; default:
    generated scenes)."""
    from rtdetr_edge.dev.bench import BenchOptions, run_bench

    report = run_bench(BenchOptions(
        model_dir=params["model"], images=list(images), cpu_threads=params["cpu_threads"],
        max_batch_size=params["max_batch_size"], requests=params["requests"], concurrency=tuple(params["concurrency"]),
        work_dir=params["work_dir"], repetitions=params["repetitions"], predictor_runs=params["predictor_runs"],
    ))  # fmt: skip
    click.echo(report.to_markdown())
    if params["json_out"]:
        params["json_out"].write_text(json.dumps(report.to_dict(), indent=2))
    return 0


@cli.command("bench-cpu")
@click.argument("images", nargs=-1, type=EXISTING_FILE)
@option("--model", type=EXISTING_DIR, default=None, help="an RT-DETR export to time (default: the shipped R18 graph)")
@option("--cpu-threads", type=click.IntRange(1), default=PREDICTOR_DEFAULTS.cpu_threads)
@option("--repetitions", type=click.IntRange(1), default=3, help="every runtime, interleaved")
@option("--runs", type=click.IntRange(1), default=8, help="timed calls per runtime and repetition")
@option("--calibration-images", type=click.IntRange(1), default=8, help="of IMAGES, for the INT8 models")
@option("--work-dir", type=PATH, default=Path(".rtdetr-edge/bench-cpu"))
@option("--accuracy/--no-accuracy", default=True, help="also mAP of each INT8 variant on the shapes model")
@dev_tool
def bench_cpu(images: tuple[Path, ...], **params: Any) -> int:
    """CPU INT8 vs every FP32 path on this CPU, side by side (IMAGES: photos to time and calibrate on;
    default: tests/fixtures/images)."""
    from rtdetr_edge.dev.bench_cpu import CpuBenchOptions, run_cpu_bench
    from rtdetr_edge.dev.real_graph import REPO_ROOT

    photos = list(images) or sorted((REPO_ROOT / "tests" / "fixtures" / "images").glob("*.jpg"))
    if not photos:
        raise click.UsageError("give IMAGES (JPEG photos): tests/fixtures/images is not in this install")
    click.echo(run_cpu_bench(CpuBenchOptions(
        model_dir=params["model"], images=photos, work_dir=params["work_dir"], cpu_threads=params["cpu_threads"],
        repetitions=params["repetitions"], runs=params["runs"], calibration_images=params["calibration_images"],
        accuracy=params["accuracy"],
    )))  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; its return value is the exit status. Usage errors exit 2, failures 1,
    each with ``error: <cause>`` as the last line of stderr."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="rtdetr-edge", standalone_mode=False)
    except click.ClickException as error:
        if isinstance(error, click.UsageError) and error.ctx is not None:
            click.echo(error.ctx.get_usage(), err=True)
        click.echo(f"error: {error.format_message()}", err=True)
        return error.exit_code
    except RtdetrEdgeError as error:
        click.echo(f"error: {error}", err=True)
        return 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        return 130
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
