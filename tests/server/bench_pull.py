"""Pushing and pulling a model through a registry (distribution's, on loopback, plain HTTP), side
by side in one run: the real RT-DETR-R18 graph with seeded weights (its FP32 export) and the tiny
model. Pull = manifest, blobs, every
sha256, unpacking and the model's own digest; a cached pull only re-checks the model's digest.

    .venv/bin/python tests/server/bench_pull.py [--int8 DIR]

``--int8 DIR``: also an INT8 model folder, e.g. R18's ONNX Runtime INT8 model (the CPU artifact a
quantize Job makes: the FP32 export plus model.int8.onnx), made with
``rtdetr-edge quantize --model R18 --train-images tests/fixtures/images --out DIR --arch r18vd
--method ptq --for onnxruntime --batch-size 1 --calibration-batches 3``.
"""

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rtdetr_edge.dev.bench import cpu_description  # noqa: E402
from rtdetr_edge.dev.demo import ensure_tiny_model  # noqa: E402
from rtdetr_edge.dev.real_graph import R18_GRAPH, seeded_export  # noqa: E402
from rtdetr_edge.model_files import ModelFiles  # noqa: E402
from rtdetr_edge.oci import Reference, RegistryAccess, pull_model, push_model  # noqa: E402
from tests.cluster.images import registry  # noqa: E402

REPETITIONS = 3
LOCAL = RegistryAccess(plain_http=True)


def seconds(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    print("CPU:", cpu_description(Path("/proc/cpuinfo").read_text()))
    with tempfile.TemporaryDirectory() as directory, registry(Path(directory) / "registry") as running:
        work = Path(directory)
        models = {"tiny model": ensure_tiny_model(work / "tiny", seed=0),
                  "real RT-DETR-R18 graph": seeded_export(R18_GRAPH, work / "r18", seed=0)}  # fmt: skip
        if "--int8" in sys.argv:
            models["R18 INT8 (ONNX Runtime) artifact"] = Path(sys.argv[sys.argv.index("--int8") + 1])
        for name, model_dir in models.items():
            size = ModelFiles.locate(model_dir).size_bytes() / 1e6
            base = Reference.parse(f"oci://{running.host}/bench/{name.split()[0].lower()}:v1")
            pushed: list[Reference] = []
            push = seconds(lambda: pushed.append(push_model(model_dir, base, LOCAL)))
            again = seconds(lambda: push_model(model_dir, base, LOCAL))
            cold, cached = [], []
            for repetition in range(REPETITIONS):
                cache = work / f"cache-{name[:4]}-{repetition}"
                cold.append(seconds(lambda: pull_model(pushed[0], cache, LOCAL)))
                cached.append(seconds(lambda: pull_model(pushed[0], cache, LOCAL)))
                shutil.rmtree(cache)
            copy = seconds(lambda: shutil.copytree(model_dir, work / f"copy-{name[:4]}"))
            print(f"{name} ({size:.1f} MB): push {push:.2f} s (again, nothing new: {again:.2f} s); pull "
                  f"{statistics.median(cold):.2f} s (median of {REPETITIONS}), cached {statistics.median(cached):.2f} s; "
                  f"a plain copy of the folder {copy:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
