"""``rtdetr-edge bench-cpu``: CPU INT8 against every FP32 path, side by side in one run, on this CPU.

Speed (a real RT-DETR export, the shipped R18 graph by default): Paddle oneDNN FP32, ONNX Runtime
FP32, ONNX Runtime INT8 with the shipped recipe (7-bit weights) and with 8-bit weights (the earlier
recipe), and OpenVINO FP32 / NNCF INT8 as the peer to beat when it is installed (``make bench-cpu``
installs it). Repetitions interleave the runtimes; min and median of the repetitions' medians.

Accuracy (the trained shapes model, generated validation images): COCO mAP of the same variants,
plus the 8-bit model with exact integer arithmetic — what a VNNI CPU computes — measured here by
running its QDQ graph with ONNX Runtime's graph optimizations off (float kernels on dequantized
values: no int16 saturation on any CPU), so one machine shows both ISA classes.

The CPU line (model, ISA level, flags) is printed beside every table: INT8 numbers and speed
differ between AVX2-only and AVX-512 VNNI machines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtdetr_edge.api.job import OnnxRuntimeInt8
from rtdetr_edge.coco import class_to_category_ids, list_images, load_ground_truth, read_image
from rtdetr_edge.dev.bench import cpu_description, spread
from rtdetr_edge.evaluate import coco_map, coco_predictions
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.postprocess import ModelOutputs
from rtdetr_edge.preprocess import ModelInputs, stack_batch

Feed = dict[str, np.ndarray]
Runner = Callable[[Feed], list[np.ndarray]]

RECIPE_7_BIT = "onnxruntime int8, 7-bit weights (shipped)"
RECIPE_8_BIT = "onnxruntime int8, 8-bit weights"
EXACT = ", exact arithmetic (VNNI's numbers)"


@dataclass(frozen=True)
class CpuBenchOptions:
    model_dir: Path | None
    """An RT-DETR export to time (default: the shipped R18 graph with seeded weights)."""
    images: list[Path]
    work_dir: Path
    cpu_threads: int = 2
    repetitions: int = 3
    runs: int = 8
    calibration_images: int = 8
    accuracy: bool = True


def onnxruntime_runner(onnx_file: Path, threads: int, optimized: bool = True) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    if not optimized:  # float kernels on dequantized values: exact integer products on any CPU
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    names = {item.name for item in session.get_inputs()}
    return lambda feed: session.run(None, {k: v for k, v in feed.items() if k in names})


def openvino_runner(model: Any, threads: int) -> Runner:
    import openvino

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    compiled = openvino.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    names = {port.get_any_name() for port in compiled.inputs}

    def run(feed: Feed) -> list[np.ndarray]:
        outputs = request.infer({k: v for k, v in feed.items() if k in names})
        return [outputs[port] for port in compiled.outputs]

    return run


def openvino_available() -> bool:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def nncf_int8(fp32_onnx: Path, feeds: list[Feed], out: Path) -> Path:
    """OpenVINO's own post-training INT8 (NNCF, transformer preset) of the FP32 ONNX model."""
    if out.is_file():
        return out
    import nncf
    import openvino

    model = openvino.Core().read_model(str(fp32_onnx))
    names = {port.get_any_name() for port in model.inputs}
    data = [{k: v for k, v in feed.items() if k in names} for feed in feeds]
    quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), model_type=nncf.ModelType.TRANSFORMER)
    openvino.save_model(quantized, str(out))
    return out


@dataclass(frozen=True)
class OnnxModels:
    fp32: Path
    int8_7_bit: Path
    int8_8_bit: Path


def make_onnx_models(model_dir: Path, calibration: list[Path], work: Path) -> OnnxModels:
    """The FP32 ONNX conversion and the two INT8 recipes, made once per model (cached in ``work``)."""
    from rtdetr_edge.predictor.onnx_backend import convert_to_onnx
    from rtdetr_edge.predictor.plan import ONNX_OPSET
    from rtdetr_edge.quantize import feed_at
    from rtdetr_edge.quantize_onnx import quantize_for_onnxruntime

    model = ModelFiles.locate(model_dir)
    key = model.digest()[7:23]
    work.mkdir(parents=True, exist_ok=True)
    models = OnnxModels(work / f"{key}-fp32.onnx", work / f"{key}-int8-7bit.onnx", work / f"{key}-int8-8bit.onnx")
    if not models.fp32.is_file():
        convert_to_onnx(model, models.fp32, ONNX_OPSET)
    for bits, out in ((7, models.int8_7_bit), (8, models.int8_8_bit)):
        if not out.is_file():
            recipe = OnnxRuntimeInt8(op_types=["Conv", "MatMul"], weight_bits=bits)  # type: ignore[arg-type]
            quantize_for_onnxruntime(
                model, lambda i: feed_at(calibration, 1, i), len(calibration), out, recipe, ONNX_OPSET
            )  # fmt: skip
    return models


def speed_table(options: CpuBenchOptions, cpu: str) -> str:
    from rtdetr_edge.dev.real_graph import R18_GRAPH, seeded_export
    from rtdetr_edge.predictor.settings import PredictorSettings
    from rtdetr_edge.warmup import warm_up

    work = options.work_dir
    model_dir = options.model_dir or seeded_export(R18_GRAPH, work / "r18-seed0")
    images = options.images
    models = make_onnx_models(model_dir, images[: options.calibration_images], work / "onnx")
    inputs = stack_batch([read_image(images[0])])
    feed = inputs.as_feed()
    threads = options.cpu_threads
    warmed = warm_up(model_dir, PredictorSettings(max_batch_size=1, cpu_threads=threads), work / "paddle-cache")
    runners: dict[str, Runner] = {
        "paddle oneDNN fp32": lambda _: [warmed.predictor.predict(inputs).bbox],
        "onnxruntime fp32": onnxruntime_runner(models.fp32, threads),
        RECIPE_7_BIT: onnxruntime_runner(models.int8_7_bit, threads),
        RECIPE_8_BIT: onnxruntime_runner(models.int8_8_bit, threads),
    }
    if openvino_available():
        calibration = [stack_batch([read_image(p)]).as_feed() for p in images[: options.calibration_images]]
        runners["openvino fp32"] = openvino_runner(str(models.fp32), threads)
        nncf_model = nncf_int8(models.fp32, calibration, work / "onnx" / "nncf.xml")
        runners["openvino nncf int8"] = openvino_runner(str(nncf_model), threads)
    medians: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run(feed)
    for _ in range(options.repetitions):  # interleaved: a slow phase of the machine hits every runtime
        for name, run in runners.items():
            timings = []
            for _ in range(options.runs):
                started = time.perf_counter()
                run(feed)
                timings.append((time.perf_counter() - started) * 1000)
            medians[name].append(statistics.median(timings))
    warmed.predictor.close()
    best_fp32 = min(statistics.median(v) for name, v in medians.items() if "fp32" in name)
    lines = [
        f"CPU: {cpu}; {threads} threads; model {model_dir.name}, batch 1; min / median of {options.repetitions} "
        f"repetitions of {options.runs} calls",
        "",
        "| runtime (ms/image) | min / median | vs best FP32 |",
        "| --- | --- | --- |",
    ]
    for name, values in medians.items():
        lines.append(f"| {name} | {spread(values)} | {best_fp32 / statistics.median(values):.2f}x |")
    if not openvino_available():
        lines.append("\n(OpenVINO not installed: `make bench-cpu` installs the bench extra)")
    return "\n".join(lines)


def accuracy_table(options: CpuBenchOptions, cpu: str) -> str:
    from rtdetr_edge.dev.demo import shipped_demo_weights
    from rtdetr_edge.dev.synthetic import write_coco_dataset

    dataset = options.work_dir / "shapes-dataset"
    if not (dataset / "annotations" / "instances_val2017.json").is_file():
        write_coco_dataset(dataset, train=64, val=320, seed=11)
    truth = load_ground_truth(dataset / "annotations" / "instances_val2017.json", dataset / "val2017", None)
    model_dir = shipped_demo_weights()
    categories = class_to_category_ids(truth, len(ModelFiles.locate(model_dir).label_list() or []) or 3, None)
    calibration = list_images(dataset / "train2017")[:32]
    models = make_onnx_models(model_dir, calibration, options.work_dir / "onnx")
    threads = options.cpu_threads
    runners: dict[str, Runner] = {
        "onnxruntime fp32": onnxruntime_runner(models.fp32, threads),
        RECIPE_7_BIT: onnxruntime_runner(models.int8_7_bit, threads),
        RECIPE_7_BIT + EXACT: onnxruntime_runner(models.int8_7_bit, threads, optimized=False),
        RECIPE_8_BIT: onnxruntime_runner(models.int8_8_bit, threads),
        RECIPE_8_BIT + EXACT: onnxruntime_runner(models.int8_8_bit, threads, optimized=False),
    }
    if openvino_available():
        feeds = [stack_batch([read_image(p)]).as_feed() for p in calibration]
        nncf_model = nncf_int8(models.fp32, feeds, options.work_dir / "onnx" / "shapes-nncf.xml")
        runners["openvino nncf int8"] = openvino_runner(str(nncf_model), threads)
    scores = {name: mean_average_precision(run, truth, categories) for name, run in runners.items()}
    lines = [
        f"CPU: {cpu}; the shapes demo model, {len(truth.images)} generated validation images, calibrated on "
        f"{len(calibration)} training images",
        "",
        "| runtime | mAP .50:.95 | drop vs FP32 |",
        "| --- | --- | --- |",
    ]
    for name, score in scores.items():
        lines.append(f"| {name} | {score:.2f} | {scores['onnxruntime fp32'] - score:+.2f} |")
    return "\n".join(lines)


def mean_average_precision(run: Runner, truth: Any, categories: list[int]) -> float:
    def predict(inputs: ModelInputs) -> ModelOutputs:
        bbox, bbox_num = run(inputs.as_feed())[:2]
        return ModelOutputs(bbox=bbox, bbox_num=bbox_num)

    return coco_map(truth.document, coco_predictions(predict, truth, categories)[0])[0]


def run_cpu_bench(options: CpuBenchOptions) -> str:
    cpu = cpu_description(Path("/proc/cpuinfo").read_text())
    sections = [speed_table(options, cpu)]
    if options.accuracy:
        sections.append(accuracy_table(options, cpu))
    return "\n\n".join(sections)
