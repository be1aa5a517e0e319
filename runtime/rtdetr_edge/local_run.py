"""``rtdetr-edge run RESOURCE.yaml``: the whole pipeline on this machine, no cluster needed.

Takes the same ``RTDETRModel`` YAML users apply to Kubernetes. ``pvc://claim/path``
maps to ``<root>/pvc/claim/path``. Finished stages are skipped (the pipeline digest
names the artifact directory), and a ``serving``-only edit never quantizes again.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rtdetr_edge.api.job import Evaluation, MeasuredOn, PipelineResult
from rtdetr_edge.pipeline import MODEL_SUBDIR, artifact_paths, read_result, run_pipeline
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.resource import RTDETRModel, SpecError, load_resource
from rtdetr_edge.storage import StorageResolver
from rtdetr_edge.warmup import WarmedModel

log = logging.getLogger(__name__)

EXIT_GATE_FAILED = 3
EXIT_INVALID_SPEC = 2


@dataclass
class RunOptions:
    resource_file: Path
    root: Path = Path(".rtdetr-edge/run")
    device: str | None = None  # None: spec.serving.device
    host: str = "127.0.0.1"
    port: int = 8080
    serve: bool = True
    sample_images: list[Path] = field(default_factory=list)
    """Sent to the server once it is ready; detections are printed."""


def resolver_for(root: Path) -> StorageResolver:
    return StorageResolver(pvc_root=root / "pvc", download_dir=root / "downloads")


def cuda_available() -> bool:
    from rtdetr_edge.paddle_import import import_paddle

    paddle = import_paddle()
    return bool(paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0)


def measured_where(measured_on: MeasuredOn | None) -> str:
    """``cpu AMD EPYC, ISA avx2`` / ``gpu Tesla T4``: where the gate's numbers come from."""
    if measured_on is None:
        return "(not recorded: a result of an earlier release)"
    where = f"{measured_on.device} {measured_on.product}"
    return where + (f", ISA {measured_on.isa_level}" if measured_on.isa_level else "")


def simulates_tensorrt(candidate: Evaluation) -> bool:
    """A CPU run of PaddleSlim's INT8 model: its QDQ graph in FP32 kernels gives the accuracy
    TensorRT INT8 will give on a GPU, at no INT8 speed."""
    return candidate.device == "cpu" and candidate.precision == "int8" and candidate.backend == "paddle"


def runtime_name(evaluation: Evaluation) -> str:
    return "Paddle" if evaluation.backend == "paddle" else "ONNX Runtime"


def summary_table(model: RTDETRModel, result: PipelineResult, reused: bool, endpoint: str | None) -> str:
    baseline, candidate, gate = result.baseline, result.candidate, result.gate
    if baseline is None or candidate is None or gate is None or result.source is None or result.model is None:
        raise ValueError(f"pipeline {result.pipeline_digest} has no evaluations to show (status {result.status})")
    source_mb = result.source.size_bytes / 1e6
    # What the runtime loads: ONNX Runtime's INT8 model is one file beside the FP32 export it came from.
    quantize = result.quantize
    onnx_int8 = candidate.backend == "onnxruntime" and candidate.precision == "int8" and quantize is not None
    model_mb = (quantize.output_bytes if onnx_int8 and quantize else result.model.size_bytes or 0) / 1e6
    simulated = simulates_tensorrt(candidate)
    label = f"{candidate.precision.upper()} ({'for TensorRT' if simulated else runtime_name(candidate)})"
    # A simulated INT8 latency is accuracy work, not a serving speed: never print it as one.
    int8_latency = "(GPU: TensorRT)" if simulated else f"{candidate.latency_ms:.1f} ms"
    rows = [
        ("", f"FP32 ({runtime_name(baseline)})", label),
        ("mAP .50:.95", f"{baseline.map:.2f}", f"{candidate.map:.2f}"),
        ("AP .50", f"{baseline.map50:.2f}", f"{candidate.map50:.2f}"),
        ("latency/image", f"{baseline.latency_ms:.1f} ms", int8_latency),
        ("model size", f"{source_mb:.2f} MB", f"{model_mb:.2f} MB"),
    ]
    how = "reused (inputs unchanged)" if reused else f"ran in {result.timings_seconds.get('total', 0):.0f} s"
    lines = [f"{model.namespace}/{model.name}: pipeline {result.pipeline_digest[7:19]} {how}, "
             f"{candidate.images} validation images, measured on {measured_where(result.measured_on)}"]  # fmt: skip
    for name, left, right in rows:
        lines.append(f"  {name:<16} {left:>20} {right:>20}")
    verdict = "PASSED" if gate.passed else "FAILED"
    lines.append(f"  accuracy gate {verdict}: {gate.message}")
    if simulated:
        lines.append(
            "  (INT8 for TensorRT: this CPU runs the quantized QDQ graph in FP32 kernels to measure the accuracy"
            " TensorRT INT8 will give on a GPU; CPU INT8 serving is ONNX Runtime's: serving.cpuRuntime onnxruntime,"
            " quantization.method ptq)"
        )
    elif candidate.precision == "int8" and candidate.latency_ms > baseline.latency_ms:
        lines.append(
            "  (INT8 is slower than FP32 here: this model is too small for integer kernels to pay off; measure a"
            " real export with `make bench-cpu`)"
        )
    if endpoint:
        lines.append(f"  endpoint: {endpoint}")
    return "\n".join(lines)


def run_local(options: RunOptions) -> int:
    try:
        model = load_resource(options.resource_file)
    except SpecError as error:
        print(f"{options.resource_file} is not a valid RTDETRModel:", file=sys.stderr)
        for message in error.errors:
            print(f"  - {message}", file=sys.stderr)
        print(f"error: invalid spec ({len(error.errors)} problems)", file=sys.stderr)
        return EXIT_INVALID_SPEC
    device = options.device or model.spec.serving.device
    if device == "gpu" and not cuda_available():
        print(
            f"error: {options.resource_file} serves on device gpu but this machine has no CUDA GPU; "
            "run with --device cpu to run it here",
            file=sys.stderr,
        )
        return EXIT_INVALID_SPEC
    resolver = resolver_for(options.root)
    paths = artifact_paths(model, resolver)
    reused = read_result(paths) is not None
    if reused:
        print(f"pipeline {paths.key} is up to date ({paths.final}); skipping quantize and evaluate", flush=True)
    result = run_pipeline(model, resolver, options.root / "engine-cache" / "pipeline", device)
    endpoint = f"http://{options.host}:{options.port}" if options.serve and result.passed else None
    print("\n" + summary_table(model, result, reused, endpoint) + "\n", flush=True)
    if not result.passed:
        print("error: the accuracy gate failed; the quantized model is not served", file=sys.stderr)
        return EXIT_GATE_FAILED
    if not options.serve:
        return 0
    return _serve(model, result, paths.final, options, device)


def _serve(model: RTDETRModel, result: PipelineResult, final: Path, options: RunOptions, device: str) -> int:
    from rtdetr_edge.client import DetectClient, DetectError
    from rtdetr_edge.server.model_service import ServeOptions
    from rtdetr_edge.server.run import run_server

    serving = model.spec.serving
    # Serve exactly what the gate measured (device, runtime, precision).
    candidate = result.candidate
    if candidate is None:
        raise ValueError(f"pipeline {result.pipeline_digest} has no evaluated candidate to serve")
    device, precision, backend = candidate.device, candidate.precision, candidate.backend
    url = f"http://{options.host}:{options.port}"

    def on_ready(warmed: WarmedModel) -> None:
        print(f"serving {model.name} at {url} (warm-up {warmed.report.seconds['total']:.1f}s, shapes "
              f"{warmed.report.shape_collection}, engine cache {warmed.report.engine_cache})", flush=True)  # fmt: skip
        client = DetectClient(url)
        best: tuple[int, Path] | None = None
        for image in options.sample_images[:3]:
            try:
                response = client.detect_file(image)
            except DetectError as error:  # the demo keeps serving even if a sample is odd
                print(f"  {image.name}: {error}", flush=True)
                continue
            found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in response["detections"][:6]) or "nothing"
            print(f"  POST /v1/detect {image.name}: {found} ({response['timing_ms']['total']:.1f} ms)", flush=True)
            if best is None or len(response["detections"]) > best[0]:
                best = (len(response["detections"]), image)
        if best is not None:
            print(f"  try: curl -s -H 'Content-Type: image/jpeg' --data-binary @{best[1]} {url}/v1/detect", flush=True)
        print("Press Ctrl+C to stop.", flush=True)

    serve_options = ServeOptions(
        model_dir=final / MODEL_SUBDIR,
        cache_dir=options.root / "engine-cache" / "serving",
        predictor=PredictorSettings(
            device=device, precision=precision, backend=backend, max_batch_size=serving.max_batch_size  # type: ignore[arg-type]
        ),
        model_name=model.name,
        score_threshold=serving.score_threshold,
        batch_window_seconds=serving.batch_window_micros / 1e6,
        shape_seed=final / result.shape_ranges.file if result.shape_ranges is not None else None,
    )
    return run_server(serve_options, options.host, options.port, drain_seconds=10, on_ready=on_ready)
