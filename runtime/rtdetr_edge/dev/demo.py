"""``rtdetr-edge demo``: the no-cluster first run.

Puts the shipped shapes model and a generated COCO-layout dataset where the sample
resources' ``pvc://`` URIs point, then runs two samples exactly as ``rtdetr-edge run`` would:
``configs/samples/demo-shapes.yaml`` (ACT quantization for TensorRT: FP32 vs INT8 mAP and the
accuracy gate, the GPU path's accuracy measured on this CPU), then
``configs/samples/demo-shapes-cpu.yaml`` (ONNX Runtime's INT8 model, what a CPU site serves:
mAP and latency on this machine's CPU), warmed up and served to real requests.
"""

from __future__ import annotations

import logging
import shutil
from importlib import resources
from pathlib import Path

from rtdetr_edge.local_run import RunOptions, run_local
from rtdetr_edge.model_files import PROGRAM_NAME
from rtdetr_edge.resource import configs_dir

log = logging.getLogger(__name__)

DEMO_RESOURCE = "samples/demo-shapes.yaml"
DEMO_CPU_RESOURCE = "samples/demo-shapes-cpu.yaml"
DEMO_WEIGHTS = "shapes-tiny"  # package data: exported by `rtdetr-edge train-tiny`
DEMO_TRAIN_IMAGES = 64
DEMO_VAL_IMAGES = 64


def ensure_tiny_model(model_dir: Path, seed: int = 0) -> Path:
    """Export the seeded (untrained) tiny model into ``model_dir`` unless it is already there."""
    if (model_dir / PROGRAM_NAME).is_file():
        return model_dir
    from rtdetr_edge.dev.tiny_model import TinyModelSpec, export_tiny_model

    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    export_tiny_model(staging, TinyModelSpec(seed=seed))
    staging.rename(model_dir)
    log.info("exported the tiny RT-DETR-shaped model to %s", model_dir)
    return model_dir


def shipped_demo_weights() -> Path:
    path = Path(str(resources.files("rtdetr_edge.dev").joinpath(DEMO_WEIGHTS)))
    if not (path / PROGRAM_NAME).is_file():
        raise FileNotFoundError(f"the demo model is missing from {path}; reinstall rtdetr-edge")
    return path


def prepare_demo_inputs(root: Path) -> None:
    """Model and dataset under ``root/pvc`` where the sample resource expects them."""
    from rtdetr_edge.dev.synthetic import write_coco_dataset

    model_dir = root / "pvc" / "models" / "shapes-tiny"
    if not (model_dir / PROGRAM_NAME).is_file():
        staging = model_dir.with_name(".shapes-tiny.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(shipped_demo_weights(), staging)
        staging.rename(model_dir)
    dataset = root / "pvc" / "datasets" / "shapes"
    if not (dataset / "annotations" / "instances_val2017.json").is_file():
        log.info("generating the synthetic COCO-layout dataset in %s", dataset)
        write_coco_dataset(dataset, train=DEMO_TRAIN_IMAGES, val=DEMO_VAL_IMAGES, seed=2026)


def run_demo(work_dir: Path, host: str, port: int, serve: bool = True) -> int:
    prepare_demo_inputs(work_dir)
    val_images = sorted((work_dir / "pvc" / "datasets" / "shapes" / "val2017").glob("*.jpg"))
    tensorrt_path = run_local(RunOptions(resource_file=configs_dir() / DEMO_RESOURCE, root=work_dir, serve=False))
    if tensorrt_path != 0:
        return tensorrt_path
    cpu_path = RunOptions(configs_dir() / DEMO_CPU_RESOURCE, work_dir, host=host, port=port, serve=serve,
                          sample_images=val_images[:3])  # fmt: skip
    return run_local(cpu_path)
