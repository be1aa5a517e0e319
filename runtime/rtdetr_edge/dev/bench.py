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
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import requests

from rtdetr_edge.cpu_isa import ISA_FLAGS, int8_arithmetic, parse_cpuinfo
from rtdetr_edge.dev.ports import free_port
from rtdetr_edge.dev.synthetic import encode_jpeg, render_scene
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import preprocess_bytes, stack_batch
from rtdetr_edge.warmup import warm_up

PREDICTOR_WARMUP_RUNS = 3
LOADGEN_WARMUP_REQUESTS = 10


BACKENDS = ("paddle", "onnxruntime")


def cpu_description(cpuinfo: str) -> str:
    """``model name, N CPUs, ISA level; flags: …`` from /proc/cpuinfo text: the ISA flags that
    decide oneDNN's and ONNX Runtime's kernels (INT8: VNNI/AMX), printed beside every table (pure)."""
    cpu = parse_cpuinfo(cpuinfo)
    flags = " ".join(cpu.isa_flags()) or "none of " + " ".join(ISA_FLAGS)
    level = f"ISA level {cpu.level} (INT8 {int8_arithmetic(cpu.level)})"
    return f"{cpu.product}, {os.cpu_count()} CPUs, {level}; flags: {flags}"


def spread(values: list[float]) -> str:
    """``min / median`` of repeated measurements."""
    return f"{min(values):.2f} / {statistics.median(values):.2f}"


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
    repetitions: int = 3


@dataclass
class BenchReport:
    model: str
    model_digest: str
    cpu_threads: int
    cpu: str = ""
    """CPU model and ISA flags (printed with every table: speeds differ by CPU kind)."""
    repetitions: int = 0
    predictor_ms: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    """backend → batch size → median ms per call, one per repetition."""
    http_p50_ms_c1: dict[str, list[float]] = field(default_factory=dict)
    http_throughput: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    """backend → concurrency → images/s, one per repetition."""
    start_to_ready_s: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """backend → cold | warm → seconds."""
    preprocess_ms: float = 0.0
    predictor_cpu_ms_per_image: dict[str, dict[int, float]] = field(default_factory=dict)
    """CPU time (all threads) per image: on a CPU-only box the server competes for the same cores."""
    server_cpu_ms_per_request: dict[str, dict[int, float]] = field(default_factory=dict)
    loadgen_cpu_ms_per_request: dict[str, dict[int, float]] = field(default_factory=dict)

    def median_ms(self, backend: str, batch: int) -> float:
        return statistics.median(self.predictor_ms[backend][batch])

    def derived(self) -> dict[str, float]:
        """Ratios of medians, each measured side by side in this run."""
        values: dict[str, float] = {}
        for backend in self.predictor_ms:
            best = max(b * 1000.0 / self.median_ms(backend, b) for b in self.predictor_ms[backend])
            top = max(self.http_throughput[backend])
            values[f"{backend}_server_overhead_ms"] = statistics.median(self.http_p50_ms_c1[backend]) - self.median_ms(backend, 1)
            values[f"{backend}_http_vs_predictor_at_c{top}"] = statistics.median(self.http_throughput[backend][top]) / best
            starts = self.start_to_ready_s[backend]
            values[f"{backend}_cold_vs_warm_start"] = statistics.median(starts["cold"]) / statistics.median(starts["warm"])
        if set(BACKENDS) <= set(self.predictor_ms):
            values["onnxruntime_speedup_b1"] = self.median_ms("paddle", 1) / self.median_ms("onnxruntime", 1)
        return values

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "derived": self.derived()}

    def to_markdown(self) -> str:
        header = f"CPU: {self.cpu}; {self.cpu_threads} threads; min / median of {self.repetitions} repetitions"
        batches = list(next(iter(self.predictor_ms.values())))
        lines = [
            f"model: {self.model} ({self.model_digest[:19]}…)",
            "",
            header,
            "",
            "| predictor fp32 (ms per call) | " + " | ".join(f"batch {b}" for b in batches) + " |",
            "| --- | " + " | ".join("---" for _ in batches) + " |",
        ]
        for backend, by_batch in self.predictor_ms.items():
            lines.append(f"| {backend} | " + " | ".join(spread(v) for v in by_batch.values()) + " |")
        concurrencies = list(next(iter(self.http_throughput.values())))
        lines += [
            "",
            header,
            "",
            "| HTTP /v1/detect | p50 at c=1 (ms) | "
            + " | ".join(f"images/s c={c}" for c in concurrencies) + " | cold start (s) | warm start (s) |",
            "| --- | --- | " + " | ".join("---" for _ in concurrencies) + " | --- | --- |",
        ]
        for backend, by_concurrency in self.http_throughput.items():
            starts = self.start_to_ready_s[backend]
            lines.append(
                f"| {backend} | {spread(self.http_p50_ms_c1[backend])} | "
                + " | ".join(spread(v) for v in by_concurrency.values())
                + f" | {spread(starts['cold'])} | {spread(starts['warm'])} |"
            )
        lines += ["", f"preprocessing (decode + resize + normalize, 1 thread): {self.preprocess_ms:.2f} ms/image"]
        for backend in self.predictor_ms:
            lines.append(
                f"CPU per image ({backend}): predictor "
                + ", ".join(f"b{b}: {ms:.1f} ms" for b, ms in self.predictor_cpu_ms_per_image[backend].items())
                + "; server process "
                + ", ".join(f"c={c}: {ms:.1f} ms" for c, ms in self.server_cpu_ms_per_request[backend].items())
                + "; load generator "
                + ", ".join(f"c={c}: {ms:.1f} ms" for c, ms in self.loadgen_cpu_ms_per_request[backend].items())
            )
        lines.append("")
        lines += [f"{name}: {value:.2f}" for name, value in self.derived().items()]
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


class _Server:
    def __init__(self, model_dir: Path, cache: Path, options: BenchOptions, log_file: Path, backend: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "rtdetr_edge.cli", "serve", "--model", str(model_dir),
            "--cache-dir", str(cache), "--host", "127.0.0.1", "--port", str(self.port),
            "--cpu-threads", str(options.cpu_threads), "--max-batch-size", str(options.max_batch_size),
            "--backend", backend,
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
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or busy (Paddle's predictor creation holds the GIL)
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

    from rtdetr_edge.model_files import ModelFiles

    report = BenchReport(
        model=str(model_dir), model_digest=ModelFiles.locate(model_dir).digest(), cpu_threads=options.cpu_threads,
        cpu=cpu_description(Path("/proc/cpuinfo").read_text()), repetitions=options.repetitions,
    )  # fmt: skip
    timings = []
    for _ in range(50):
        for data in image_bytes:
            started = time.perf_counter()
            preprocess_bytes(data)
            timings.append(time.perf_counter() - started)
    report.preprocess_ms = statistics.median(timings) * 1000

    # Repetitions interleave the backends, so a slow phase of the machine hits both alike.
    for _ in range(options.repetitions):
        for backend in BACKENDS:
            settings = PredictorSettings(
                backend=backend, cpu_threads=options.cpu_threads, max_batch_size=options.max_batch_size  # type: ignore[arg-type]
            )
            wall, cpu = measure_predictor(model_dir, settings, work / "predictor-cache", image_bytes, options.predictor_runs)
            for batch, ms in wall.items():
                report.predictor_ms.setdefault(backend, {}).setdefault(batch, []).append(ms)
            report.predictor_cpu_ms_per_image[backend] = cpu
            _measure_server(model_dir, image_paths, options, backend, report)
    return report


def _measure_server(model_dir: Path, image_paths: list[Path], options: BenchOptions, backend: str, report: BenchReport) -> None:
    """Cold start (empty cache), warm start, then the load at each concurrency, over HTTP."""
    work = options.work_dir
    cache = work / f"cache-{backend}"
    shutil.rmtree(cache, ignore_errors=True)
    starts = report.start_to_ready_s.setdefault(backend, {"cold": [], "warm": []})
    cold = _Server(model_dir, cache, options, work / f"server-{backend}-cold.log", backend)
    starts["cold"].append(cold.wait_ready())
    cold.stop()
    server = _Server(model_dir, cache, options, work / f"server-{backend}-warm.log", backend)
    starts["warm"].append(server.wait_ready())
    try:
        for concurrency in options.concurrency:
            server_cpu = process_cpu_seconds(server.process.pid)
            children_cpu = _children_cpu_seconds()
            result = run_load(server.url, image_paths, concurrency, options.requests)
            requests_done = len(result["latencies"])  # type: ignore[arg-type]
            report.server_cpu_ms_per_request.setdefault(backend, {})[concurrency] = (
                (process_cpu_seconds(server.process.pid) - server_cpu) * 1000 / requests_done
            )
            # The load generator also warms up with a few requests; count them in.
            report.loadgen_cpu_ms_per_request.setdefault(backend, {})[concurrency] = (
                (_children_cpu_seconds() - children_cpu) * 1000 / (requests_done + LOADGEN_WARMUP_REQUESTS)
            )
            latencies = sorted(result["latencies"])  # type: ignore[arg-type]
            throughput = len(latencies) / float(result["wall_seconds"])  # type: ignore[arg-type]
            report.http_throughput.setdefault(backend, {}).setdefault(concurrency, []).append(throughput)
            if concurrency == 1:
                report.http_p50_ms_c1.setdefault(backend, []).append(latencies[len(latencies) // 2] * 1000)
    finally:
        server.stop()
