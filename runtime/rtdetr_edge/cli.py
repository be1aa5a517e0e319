"""``rtdetr-edge``: every pipeline stage and tool as a subcommand.

Flags default to ``RTDETR_<FLAG>`` environment variables (e.g. ``RTDETR_CACHE_DIR``),
which is how the Kubernetes manifests configure the runtime. A failing command
exits non-zero with ``error: <cause>`` as the last line of stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rtdetr_edge import __version__
from rtdetr_edge.errors import RtdetrEdgeError
from rtdetr_edge.predictor.settings import BACKENDS, DEVICES, PRECISIONS, PredictorSettings
from rtdetr_edge.api.spec import ARCHES

log = logging.getLogger("rtdetr_edge")


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"RTDETR_{name}", default)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return env("CACHE_DIR") or str(Path(base) / "rtdetr-edge")


def add_predictor_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("predictor")
    group.add_argument("--device", choices=DEVICES, default=env("DEVICE", "cpu"), help="gpu = TensorRT (default: cpu)")
    group.add_argument("--precision", choices=PRECISIONS, default=env("PRECISION", "fp32"))
    group.add_argument("--backend", choices=BACKENDS, default=env("BACKEND", "paddle"))
    group.add_argument("--max-batch-size", type=int, default=int(env("MAX_BATCH_SIZE", "4") or 4))
    group.add_argument("--cpu-threads", type=int, default=int(env("CPU_THREADS", "2") or 2))
    group.add_argument("--gpu-device-id", type=int, default=int(env("GPU_DEVICE_ID", "0") or 0))
    group.add_argument(
        "--cpu-int8", choices=("simulated", "onednn"), default=env("CPU_INT8", "simulated"),
        help="INT8 models on CPU: the QDQ graph in FP32 kernels (default, the quantized model's accuracy) "
        "or oneDNN INT8 kernels (measured -12 mAP on RT-DETR-shaped models here; validate with the gate)",
    )  # fmt: skip
    group.add_argument("--cache-dir", type=Path, default=Path(default_cache_dir()), help="engine cache root")


def predictor_settings(args: argparse.Namespace) -> PredictorSettings:
    try:
        return PredictorSettings(
            device=args.device,
            precision=args.precision,
            backend=args.backend,
            max_batch_size=args.max_batch_size,
            cpu_threads=args.cpu_threads,
            gpu_device_id=args.gpu_device_id,
            cpu_int8=args.cpu_int8,
        )
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", default=env("MODEL_NAME", "rtdetr"), help="name in the OIP v2 API")
    parser.add_argument("--host", default=env("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env("PORT", "8080") or 8080))
    parser.add_argument("--labels", type=Path, default=env("LABELS"), help="label file (default: COCO's 80)")
    parser.add_argument("--score-threshold", type=float, default=float(env("SCORE_THRESHOLD", "0.5") or 0.5))
    parser.add_argument("--max-detections", type=int, default=int(env("MAX_DETECTIONS", "100") or 100))
    parser.add_argument("--batch-window-micros", type=int, default=int(env("BATCH_WINDOW_MICROS", "2000") or 2000))
    parser.add_argument("--max-body-bytes", type=int, default=int(env("MAX_BODY_BYTES", str(16 << 20)) or 0))
    parser.add_argument("--max-image-pixels", type=int, default=int(env("MAX_IMAGE_PIXELS", "40000000") or 0))
    parser.add_argument("--drain-seconds", type=float, default=float(env("DRAIN_SECONDS", "30") or 30))
    parser.add_argument(
        "--shutdown-delay-seconds", type=float, default=float(env("SHUTDOWN_DELAY_SECONDS", "0") or 0),
        help="on SIGTERM, report not-ready and keep serving this long before draining (pods the operator creates: 10)",
    )  # fmt: skip
    parser.add_argument(
        "--shape-ranges", type=Path, default=env("SHAPE_RANGES"),
        help="shape-range file collected by the quantize Job for this model (skips collection)",
    )  # fmt: skip


def serve_options(args: argparse.Namespace, model_dir: Path):  # type: ignore[no-untyped-def]
    from rtdetr_edge.server.model_service import ServeOptions

    settings = predictor_settings(args)
    return ServeOptions(
        model_dir=model_dir,
        cache_dir=args.cache_dir,
        predictor=settings,
        model_name=args.model_name,
        labels_file=args.labels,
        score_threshold=args.score_threshold,
        max_detections=args.max_detections,
        batch_window_seconds=args.batch_window_micros / 1e6,
        max_body_bytes=args.max_body_bytes,
        max_image_pixels=args.max_image_pixels,
        preprocess_threads=settings.cpu_threads,
        shape_seed=args.shape_ranges,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from rtdetr_edge.server.run import run_server

    return run_server(serve_options(args, args.model), args.host, args.port, args.drain_seconds,
                      shutdown_delay=args.shutdown_delay_seconds)  # fmt: skip


def cmd_warmup(args: argparse.Namespace) -> int:
    from rtdetr_edge.warmup import warm_up

    warmed = warm_up(args.model, predictor_settings(args), args.cache_dir)
    warmed.predictor.close()
    print(json.dumps(warmed.report.to_dict(), indent=2))
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from rtdetr_edge.tiny_model import TinyModelSpec, export_tiny_model

    spec = TinyModelSpec(num_classes=args.num_classes, hidden_dim=args.hidden_dim, seed=args.seed)
    export_tiny_model(args.out, spec)
    print(f"wrote {args.out}/model.pdmodel and model.pdiparams ({spec})")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from rtdetr_edge.client import DetectClient

    client = DetectClient(args.url, timeout=args.timeout)
    for image in args.images:
        result = client.detect_file(image, args.score_threshold, args.max_detections)
        if args.json:
            print(json.dumps(result))
            continue
        timing = result["timing_ms"]
        print(f"{image}: {len(result['detections'])} detections ({timing['total']:.1f} ms in the server)")
        for detection in result["detections"]:
            x1, y1, x2, y2 = detection["box"]
            print(f"  {detection['label']:<16} {detection['score']:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rtdetr_edge.bench import BenchOptions, run_bench

    options = BenchOptions(
        model_dir=args.model,
        images=[Path(p) for p in args.images],
        cpu_threads=args.cpu_threads,
        max_batch_size=args.max_batch_size,
        requests=args.requests,
        concurrency=tuple(args.concurrency),
        work_dir=args.work_dir,
    )
    report = run_bench(options)
    print(report.to_markdown())
    if args.json_out:
        args.json_out.write_text(json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from rtdetr_edge.coco import list_images
    from rtdetr_edge.quantize import QuantizeSettings, quantize_model

    settings = QuantizeSettings(
        arch=args.arch,
        method=args.method,
        train_iter=args.train_iter,
        eval_iter=args.eval_iter,
        learning_rate=args.learning_rate,
        quantize_op_types=tuple(args.quantize_op_types) if args.quantize_op_types else None,
        batch_size=args.batch_size,
        calibration_batches=args.calibration_batches,
        device=args.device,
    )
    report = quantize_model(args.model, list_images(args.train_images), args.out, settings, args.progress_file)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rtdetr_edge.coco import class_to_category_ids, load_ground_truth
    from rtdetr_edge.evaluate import evaluate_model
    from rtdetr_edge.pipeline import num_model_classes

    ground_truth = load_ground_truth(args.annotations, args.images, args.max_images)
    num_classes = args.num_classes or num_model_classes(args.model)
    mapping = class_to_category_ids(ground_truth, num_classes, args.category_ids)
    result = evaluate_model(args.model, predictor_settings(args), args.cache_dir, ground_truth, mapping, args.batch_size)
    document = json.dumps(result.to_dict(), indent=2)
    if args.out:
        args.out.write_text(document)
    print(document)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from rtdetr_edge.pipeline import run_pipeline
    from rtdetr_edge.resource import SpecError, load_resource
    from rtdetr_edge.storage import StorageResolver

    try:
        model = load_resource(args.resource)
    except SpecError as error:
        print(f"error: invalid spec: {error}", file=sys.stderr)
        return 2
    plan = None
    if args.plan is not None:
        from pydantic import ValidationError

        from rtdetr_edge.api.job import PipelinePlan

        try:
            plan = PipelinePlan.model_validate_json(args.plan.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as error:
            print(f"error: --plan {args.plan}: {error}", file=sys.stderr)
            return 2
    resolver = StorageResolver(pvc_root=args.pvc_root, download_dir=args.download_dir)
    result = run_pipeline(model, resolver, args.cache_dir, args.device, args.termination_log, plan)
    print(json.dumps({k: result[k] for k in ("status", "pipelineDigest", "model", "accuracy", "message")}, indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rtdetr_edge.local_run import RunOptions, run_local

    return run_local(
        RunOptions(
            resource_file=args.resource,
            root=args.root,
            device=args.device,
            host=args.host,
            port=args.port,
            serve=not args.no_serve,
            sample_images=args.sample_images,
        )
    )


def cmd_make_dataset(args: argparse.Namespace) -> int:
    from rtdetr_edge.synthetic import write_coco_dataset

    write_coco_dataset(args.out, train=args.train, val=args.val, seed=args.seed)
    print(f"wrote a COCO-layout dataset to {args.out} ({args.train} train, {args.val} val images)")
    return 0


def cmd_train_tiny(args: argparse.Namespace) -> int:
    from rtdetr_edge.train_tiny import TrainSettings, train_tiny_model

    settings = TrainSettings(iterations=args.iterations, batch_size=args.batch_size, seed=args.seed)
    train_tiny_model(args.out, settings)
    print(f"wrote the trained tiny model to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rtdetr_edge.demo import run_demo

    return run_demo(args.work_dir, args.host, args.port, serve=not args.no_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtdetr-edge", description="RT-DETR quantization and serving: every pipeline stage as a subcommand.")
    parser.add_argument("--version", action="version", version=f"rtdetr-edge {__version__}")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    serve = command("serve", cmd_serve, "warm up a model and serve detection over HTTP")
    serve.add_argument("--model", type=Path, default=env("MODEL_DIR"), required=env("MODEL_DIR") is None)
    add_predictor_arguments(serve)
    add_serve_arguments(serve)

    warmup = command("warmup", cmd_warmup, "collect shape ranges and build the engine cache entry, then exit")
    warmup.add_argument("--model", type=Path, default=env("MODEL_DIR"), required=env("MODEL_DIR") is None)
    add_predictor_arguments(warmup)

    detect = command("detect", cmd_detect, "send images to a running server and print the detections")
    detect.add_argument("images", nargs="+", type=Path)
    detect.add_argument("--url", default=env("URL", "http://127.0.0.1:8080"))
    detect.add_argument("--score-threshold", type=float, default=None)
    detect.add_argument("--max-detections", type=int, default=None)
    detect.add_argument("--timeout", type=float, default=30.0)
    detect.add_argument("--json", action="store_true", help="print the server's JSON, one line per image")

    bench = command("bench", cmd_bench, "measure predictor, HTTP server and backends side by side")
    bench.add_argument("--model", type=Path, default=None, help="an RT-DETR export (default: the tiny model)")
    bench.add_argument("--images", nargs="*", default=[], help="JPEGs to send (default: generated scenes)")
    bench.add_argument("--cpu-threads", type=int, default=2)
    bench.add_argument("--max-batch-size", type=int, default=4)
    bench.add_argument("--requests", type=int, default=200, help="requests per HTTP measurement")
    bench.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    bench.add_argument("--work-dir", type=Path, default=Path(".rtdetr-edge/bench"))
    bench.add_argument("--json-out", type=Path, default=None)

    tiny = command("tiny-model", cmd_tiny_model, "export the small RT-DETR-shaped model used by tests and demos")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--num-classes", type=int, default=80)
    tiny.add_argument("--hidden-dim", type=int, default=64)

    quantize = command("quantize", cmd_quantize, "quantize an FP32 export with PaddleSlim (ACT QAT + distillation, or PTQ)")
    quantize.add_argument("--model", type=Path, required=True, help="FP32 export (left untouched)")
    quantize.add_argument("--train-images", type=Path, required=True, help="folder of training images (no labels)")
    quantize.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    quantize.add_argument("--arch", choices=ARCHES, default="r50vd", help="selects the ACT defaults in configs/act/")
    quantize.add_argument("--method", choices=("qat", "ptq"), default="qat")
    quantize.add_argument("--train-iter", type=int)
    quantize.add_argument("--eval-iter", type=int)
    quantize.add_argument("--learning-rate", type=float)
    quantize.add_argument("--quantize-op-types", nargs="+")
    quantize.add_argument("--batch-size", type=int, default=1)
    quantize.add_argument("--calibration-batches", type=int, default=32, help="ptq only")
    quantize.add_argument("--device", choices=DEVICES, default=env("DEVICE", "cpu"))
    quantize.add_argument("--progress-file", type=Path, help="JSON progress (iteration, loss, ETA)")

    evaluate = command("evaluate", cmd_evaluate, "COCO mAP of a model through the serving predictor")
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--images", type=Path, required=True, help="validation image folder")
    evaluate.add_argument("--annotations", type=Path, required=True, help="COCO instances_*.json")
    evaluate.add_argument("--max-images", type=int)
    evaluate.add_argument("--num-classes", type=int, help="default: the export's infer_cfg.yml label_list, else 80")
    evaluate.add_argument("--category-ids", type=int, nargs="+", help="class index -> category id (default: sorted ids)")
    evaluate.add_argument("--batch-size", type=int, default=1)
    evaluate.add_argument("--out", type=Path, help="also write the JSON result here")
    add_predictor_arguments(evaluate)

    pipeline = command("pipeline", cmd_pipeline, "the quantize Job: quantize, evaluate FP32 and INT8, gate, shapes")
    pipeline.add_argument("resource", type=Path, help="an RTDETRModel YAML")
    pipeline.add_argument("--pvc-root", type=Path, default=Path(env("PVC_ROOT", "/mnt/pvc") or "/mnt/pvc"))
    pipeline.add_argument("--download-dir", type=Path, default=Path(env("DOWNLOAD_DIR", "/tmp/rtdetr-downloads") or ""))
    pipeline.add_argument("--cache-dir", type=Path, default=Path(default_cache_dir()))
    pipeline.add_argument("--device", choices=DEVICES, default=env("DEVICE", "cpu"))
    pipeline.add_argument("--termination-log", type=Path, default=None, help="default: /dev/termination-log if present")
    pipeline.add_argument(
        "--plan", type=Path, default=None, metavar="PLAN.json",
        help="the operator's plan for this run: digest, ACT settings, tool versions (default: made from the resource)",
    )  # fmt: skip

    run = command("run", cmd_run, "run an RTDETRModel locally: quantize, evaluate, gate, warm up, serve")
    run.add_argument("resource", type=Path)
    run.add_argument("--root", type=Path, default=Path(".rtdetr-edge/run"), help="pvc:// maps to ROOT/pvc/")
    run.add_argument("--device", choices=DEVICES, default=None, help="override spec.serving.device")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=int(env("PORT", "8080") or 8080))
    run.add_argument("--no-serve", action="store_true", help="stop after the pipeline and the summary")
    run.add_argument("--sample-images", type=Path, nargs="*", default=[], help="sent once the server is ready")

    dataset = command("make-dataset", cmd_make_dataset, "write a deterministic synthetic COCO-layout dataset")
    dataset.add_argument("out", type=Path)
    dataset.add_argument("--train", type=int, default=64)
    dataset.add_argument("--val", type=int, default=64)
    dataset.add_argument("--seed", type=int, default=0)

    train = command("train-tiny", cmd_train_tiny, "train the tiny model on synthetic shapes (the demo's weights)")
    train.add_argument("out", type=Path)
    train.add_argument("--iterations", type=int, default=2000)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--seed", type=int, default=0)

    demo = command("demo", cmd_demo, "the embedded default: run the sample resource on synthetic data and serve it")
    demo.add_argument("--work-dir", type=Path, default=Path(".rtdetr-edge/demo"))
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=int(env("PORT", "8080") or 8080))
    demo.add_argument("--no-serve", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args))
    except RtdetrEdgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
