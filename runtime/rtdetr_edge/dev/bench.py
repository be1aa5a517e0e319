"""``rtdetr-edge bench``: predictor, HTTP server and backends measured side by side, in one run.

Everything runs on the same model with the same thread count, so the ratios
(server overhead, HTTP throughput vs raw predictor, ONNX Runtime vs Paddle) are
meaningful on whatever machine runs it. ``--model`` accepts any RT-DETR export.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import requests

from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import preprocess_bytes, stack_batch
from rtdetr_edge.dev.synthetic import encode_jpeg, render_scene
from rtdetr_edge.warmup import warm_up

PREDICTOR_WARMUP_RUNS = 3
LOADGEN_WARMUP_REQUESTS = 10


@dataclass(frozen=True)
class BenchOptions:
    model_dir: Path | None
    images: list[Path]
    cpu_threads: int = 2
    max_batch_size: int = 4
    requests: int = 200
    concurrency: tuple[int, ...] = (1, 4, 8)
    work_dir: Path = Path(".rtdetr-edge/bench")
    predictor_runs: int = 20


@dataclass
class BenchReport:
    model: str
    model_digest: str
    cpu_threads: int
    predictor_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    """backend → batch size → median ms per call."""
    http_p50_ms_c1: float = 0.0
    http_p90_ms_c1: float = 0.0
    http_throughput: dict[int, float] = field(default_factory=dict)
    start_to_ready_s: dict[str, float] = field(default_factory=dict)
    preprocess_ms: float = 0.0
    predictor_cpu_ms_per_image: dict[str, dict[int, float]] = field(default_factory=dict)
    """CPU time (all threads) per image: on a CPU-only box the server competes for the same cores."""
    server_cpu_ms_per_request: dict[int, float] = field(default_factory=dict)
    loadgen_cpu_ms_per_request: dict[int, float] = field(default_factory=dict)

    def predictor_throughput(self, backend: str) -> dict[int, float]:
        return {b: b * 1000.0 / ms for b, ms in self.predictor_ms[backend].items()}

    def derived(self) -> dict[str, float]:
        paddle_b1 = self.predictor_ms["paddle"][1]
        best = max(self.predictor_throughput("paddle").values())
        top_concurrency = max(self.http_throughput)
        values = {
            "server_overhead_ms": self.http_p50_ms_c1 - paddle_b1,
            "best_predictor_images_per_s": best,
            "http_vs_predictor_at_top_concurrency": self.http_throughput[top_concurrency] / best,
            "cold_vs_warm_start": self.start_to_ready_s["cold"] / self.start_to_ready_s["warm"],
        }
        if "onnxruntime" in self.predictor_ms:
            values["onnxruntime_speedup_b1"] = paddle_b1 / self.predictor_ms["onnxruntime"][1]
        return values

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "derived": self.derived()}

    def to_markdown(self) -> str:
        derived = self.derived()
        lines = [
            f"model: {self.model} ({self.model_digest[:19]}…), {self.cpu_threads} CPU threads",
            "",
            "| predictor (median ms per call) | " + " | ".join(f"batch {b}" for b in self.predictor_ms["paddle"]) + " |",
            "| --- | " + " | ".join("---" for _ in self.predictor_ms["paddle"]) + " |",
        ]
        for backend, by_batch in self.predictor_ms.items():
            lines.append(f"| {backend} fp32 | " + " | ".join(f"{ms:.2f}" for ms in by_batch.values()) + " |")
        lines += [
            "",
            f"preprocessing (decode + resize + normalize, 1 thread): {self.preprocess_ms:.2f} ms/image",
            f"HTTP /v1/detect at concurrency 1: p50 {self.http_p50_ms_c1:.2f} ms, p90 {self.http_p90_ms_c1:.2f} ms",
            "HTTP throughput (images/s): "
            + ", ".join(f"c={c}: {rate:.1f}" for c, rate in self.http_throughput.items()),
            f"start-to-ready: cold (empty cache) {self.start_to_ready_s['cold']:.2f} s, "
            f"warm {self.start_to_ready_s['warm']:.2f} s",
            "CPU per image: predictor (paddle) "
            + ", ".join(f"b{b}: {ms:.1f} ms" for b, ms in self.predictor_cpu_ms_per_image["paddle"].items())
            + "; whole server process "
            + ", ".join(f"c={c}: {ms:.1f} ms" for c, ms in self.server_cpu_ms_per_request.items())
            + "; load generator "
            + ", ".join(f"c={c}: {ms:.1f} ms" for c, ms in self.loadgen_cpu_ms_per_request.items()),
            "",
            f"server overhead (HTTP p50 - predictor p50, decode included): {derived['server_overhead_ms']:.2f} ms",
            f"HTTP throughput at c={max(self.http_throughput)} / best batched predictor throughput "
            f"({derived['best_predictor_images_per_s']:.1f}/s): {derived['http_vs_predictor_at_top_concurrency']:.2f}",
        ]
        if "onnxruntime_speedup_b1" in derived:
            lines.append(f"ONNX Runtime vs Paddle oneDNN, batch 1: {derived['onnxruntime_speedup_b1']:.2f}x faster")
        return "\n".join(lines)


def default_images(work_dir: Path, count: int = 3) -> list[Path]:
    paths = []
    for index in range(count):
        path = work_dir / f"scene-{index}.jpg"
        if not path.exists():
            rgb, _ = render_scene(np.random.default_rng(100 + index))
            path.write_bytes(encode_jpeg(rgb))
        paths.append(path)
    return paths


def measure_predictor(
    model_dir: Path, settings: PredictorSettings, cache: Path, images: list[bytes], runs: int
) -> tuple[dict[int, float], dict[int, float]]:
    """Median wall ms per call, and process CPU ms per image, for each batch size."""
    warmed = warm_up(model_dir, settings, cache)
    try:
        prepared = [preprocess_bytes(images[i % len(images)]) for i in range(settings.max_batch_size)]
        wall, cpu = {}, {}
        for batch_size in range(1, settings.max_batch_size + 1):
            batch = stack_batch(prepared[:batch_size])
            for _ in range(PREDICTOR_WARMUP_RUNS):
                warmed.predictor.predict(batch)
            timings = []
            cpu_started = time.process_time()
            for _ in range(runs):
                started = time.perf_counter()
                warmed.predictor.predict(batch)
                timings.append(time.perf_counter() - started)
            cpu[batch_size] = (time.process_time() - cpu_started) * 1000 / (runs * batch_size)
            wall[batch_size] = statistics.median(timings) * 1000
        return wall, cpu
    finally:
        warmed.predictor.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """An unused loopback port (the bench's server; also the tests')."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    def __init__(self, model_dir: Path, cache: Path, options: BenchOptions, log_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "rtdetr_edge.cli", "serve", "--model", str(model_dir),
            "--cache-dir", str(cache), "--host", "127.0.0.1", "--port", str(self.port),
            "--cpu-threads", str(options.cpu_threads), "--max-batch-size", str(options.max_batch_size),
        ]  # fmt: skip
        self.started = time.perf_counter()
        with log_file.open("w") as stream:
            self.process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
        self.log_file = log_file

    def wait_ready(self, timeout: float = 600) -> float:
        while time.perf_counter() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_file.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except requests.ConnectionError:
                pass
            time.sleep(0.02)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(url: str, images: list[Path], concurrency: int, count: int) -> dict[str, object]:
    command = [
        sys.executable, "-m", "rtdetr_edge.dev.loadgen", f"{url}/v1/detect", *map(str, images),
        "--concurrency", str(concurrency), "--requests", str(count),
        "--warmup-requests", str(LOADGEN_WARMUP_REQUESTS),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(output)
    if result["errors"]:
        raise RuntimeError(f"{len(result['errors'])} requests failed: {result['errors'][:5]}")
    return dict(result)


def run_bench(options: BenchOptions) -> BenchReport:
    work = options.work_dir
    work.mkdir(parents=True, exist_ok=True)
    if options.model_dir is None:
        from rtdetr_edge.dev.demo import ensure_tiny_model

        model_dir = ensure_tiny_model(work / "tiny-model")
    else:
        model_dir = options.model_dir
    image_paths = options.images or default_images(work)
    image_bytes = [path.read_bytes() for path in image_paths]
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)

    from rtdetr_edge.model_files import ModelFiles

    report = BenchReport(
        model=str(model_dir), model_digest=ModelFiles.locate(model_dir).digest(), cpu_threads=options.cpu_threads
    )
    timings = []
    for _ in range(50):
        for data in image_bytes:
            started = time.perf_counter()
            preprocess_bytes(data)
            timings.append(time.perf_counter() - started)
    report.preprocess_ms = statistics.median(timings) * 1000

    for backend in ("paddle", "onnxruntime"):
        settings = PredictorSettings(
            backend=backend, cpu_threads=options.cpu_threads, max_batch_size=options.max_batch_size  # type: ignore[arg-type]
        )
        report.predictor_ms[backend], report.predictor_cpu_ms_per_image[backend] = measure_predictor(
            model_dir, settings, work / "predictor-cache", image_bytes, options.predictor_runs
        )

    cold = _Server(model_dir, cache, options, work / "server-cold.log")
    report.start_to_ready_s["cold"] = cold.wait_ready()
    cold.stop()
    server = _Server(model_dir, cache, options, work / "server-warm.log")
    report.start_to_ready_s["warm"] = server.wait_ready()
    try:
        for concurrency in options.concurrency:
            server_cpu = process_cpu_seconds(server.process.pid)
            children_cpu = _children_cpu_seconds()
            result = run_load(server.url, image_paths, concurrency, options.requests)
            requests_done = len(result["latencies"])  # type: ignore[arg-type]
            report.server_cpu_ms_per_request[concurrency] = (
                (process_cpu_seconds(server.process.pid) - server_cpu) * 1000 / requests_done
            )
            # The load generator also warms up with a few requests; count them in.
            report.loadgen_cpu_ms_per_request[concurrency] = (
                (_children_cpu_seconds() - children_cpu) * 1000 / (requests_done + LOADGEN_WARMUP_REQUESTS)
            )
            latencies = sorted(result["latencies"])  # type: ignore[arg-type]
            report.http_throughput[concurrency] = len(latencies) / float(result["wall_seconds"])  # type: ignore[arg-type]
            if concurrency == 1:
                report.http_p50_ms_c1 = latencies[len(latencies) // 2] * 1000
                report.http_p90_ms_c1 = latencies[int(len(latencies) * 0.9)] * 1000
    finally:
        server.stop()
    return report


