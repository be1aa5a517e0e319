"""What a model change costs a serving pod, side by side in one run, for the tiny model and the
real RT-DETR-R18 graph (seeded weights; two seeds = two models):

- InPlace (serving.rollout default): one client sends detections back to back while the served-
  model file changes; measured: file change → first answer of the new model, requests answered
  and failed during the swap, their p50 and max latency against the same client before it.
- Replace (and every restart): a fresh server started on the new model, start → ready: the time
  a one-replica Deployment has no pod to answer.

    .venv/bin/python tests/server/bench_swap.py [--skip-r18]
"""

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rtdetr_edge.dev.bench import cpu_description  # noqa: E402
from rtdetr_edge.dev.demo import ensure_tiny_model  # noqa: E402
from rtdetr_edge.dev.real_graph import R18_GRAPH, seeded_export  # noqa: E402
from rtdetr_edge.model_files import ModelFiles  # noqa: E402
from tests.conftest import FIXTURE_IMAGES, start_server  # noqa: E402
from tests.server.test_model_swap import write_model_file  # noqa: E402


def in_place(name: str, old: Path, new: Path, work: Path, image: bytes) -> None:
    new_digest = ModelFiles.locate(new).digest()
    model_file = work / f"{name}.json"
    write_model_file(model_file, old)
    server = start_server(None, work / "cache", work, "--model-config", str(model_file), "--cpu-threads", "2")
    try:
        server.wait_ready(600)
        session = requests.Session()
        samples: list[tuple[float, float, int, str]] = []  # (sent at, seconds, status, digest)
        stop = threading.Event()

        def send() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                response = session.post(f"{server.url}/v1/detect", data=image, headers={"Content-Type": "image/jpeg"}, timeout=120)
                digest = response.json().get("digest", "") if response.status_code == 200 else ""
                samples.append((started, time.perf_counter() - started, response.status_code, digest))

        client = threading.Thread(target=send, daemon=True)
        client.start()
        time.sleep(5)
        changed = time.perf_counter()
        write_model_file(model_file, new)
        while not any(d == new_digest for _, _, _, d in samples):
            time.sleep(0.05)
            assert time.perf_counter() - changed < 900, server.log()
        swapped = next(t + s for t, s, _, d in samples if d == new_digest) - changed
        time.sleep(3)
        stop.set()
        client.join(120)
        before = [s for t, s, _, _ in samples if t < changed]
        during = [(s, status) for t, s, status, _ in samples if changed <= t < changed + swapped]
        failed = sum(1 for _, status in during if status != 200)
        print(f"{name}: InPlace swap {swapped:.1f} s (file change → first answer of the new model); "
              f"{len(during)} requests during it, {failed} failed; p50 {statistics.median(before) * 1000:.0f} ms before, "
              f"{statistics.median([s for s, _ in during]) * 1000:.0f} ms during (max {max(s for s, _ in during) * 1000:.0f} ms)")  # fmt: skip
    finally:
        server.stop()


def restart(name: str, new: Path, work: Path) -> None:
    started = time.perf_counter()
    server = start_server(new, work / "cache-restart", work, "--cpu-threads", "2")
    try:
        server.wait_ready(900)
        print(f"{name}: a fresh pod's start → ready on the new model {time.perf_counter() - started:.1f} s "
              "(Replace with one replica: no pod answers meanwhile)")
    finally:
        server.stop()


def main() -> None:
    print("CPU:", cpu_description(Path("/proc/cpuinfo").read_text()))
    image = FIXTURE_IMAGES[0].read_bytes()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        models = {"tiny model": (ensure_tiny_model(work / "tiny0", seed=0), ensure_tiny_model(work / "tiny1", seed=1))}
        if "--skip-r18" not in sys.argv:
            models["real RT-DETR-R18 graph"] = (seeded_export(R18_GRAPH, work / "r18-0", seed=0), seeded_export(R18_GRAPH, work / "r18-1", seed=1))
        for name, (old, new) in models.items():
            in_place(name, old, new, work, image)
            restart(name, new, work)


if __name__ == "__main__":
    main()
