"""gRPC vs HTTP for the Open Inference Protocol, side by side in one run: one server per model
(the tiny model, and the real RT-DETR-R18 graph with seeded weights) answering both protocols;
the same preprocessed tensors sent by tritonclient.http (binary tensors) and tritonclient.grpc,
interleaved repetition by repetition: p50 latency at concurrency 1, images/s at concurrency 8.

    .venv/bin/python tests/server/bench_grpc.py [--skip-r18]
"""

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rtdetr_edge.dev.bench import cpu_description, spread  # noqa: E402
from rtdetr_edge.dev.demo import ensure_tiny_model  # noqa: E402
from rtdetr_edge.dev.ports import free_port  # noqa: E402
from rtdetr_edge.dev.real_graph import R18_GRAPH, seeded_export  # noqa: E402
from tests.conftest import FIXTURE_IMAGES, start_server  # noqa: E402
from tests.server.test_grpc_api import model_inputs, triton_inputs  # noqa: E402

REPETITIONS = 3


def caller(protocol: str, port: int, model: str, arrays: dict) -> Callable[[], None]:
    """One client (per thread) sending the tensors by ``protocol``; checks the answer."""
    if protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    client = client_module.InferenceServerClient(url=f"127.0.0.1:{port}")
    inputs = triton_inputs(client_module, arrays)

    def call() -> None:
        assert client.infer(model, inputs).as_numpy("bbox_num").shape == (1,)

    return call


def p50_ms(call: Callable[[], None], count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def images_per_second(callers: list[Callable[[], None]], count: int) -> float:
    per_thread = count // len(callers)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(callers)) as pool:
        list(pool.map(lambda call: [call() for _ in range(per_thread)], callers))
    return per_thread * len(callers) / (time.perf_counter() - started)


def measure(name: str, model_dir: Path, work: Path, sequential: int, concurrent: int) -> None:
    grpc_port = free_port()
    server = start_server(model_dir, work / "cache", work, "--grpc-port", str(grpc_port), "--backend", "onnxruntime",
                          "--max-queue-millis", "600000")  # fmt: skip
    try:
        server.wait_ready(900)
        arrays = model_inputs(FIXTURE_IMAGES[0].read_bytes())
        ports = {"http": server.port, "grpc": grpc_port}
        p50: dict[str, list[float]] = {"http": [], "grpc": []}
        rate: dict[str, list[float]] = {"http": [], "grpc": []}
        for protocol, port in ports.items():  # warm both paths (connections, the batcher's estimate)
            p50_ms(caller(protocol, port, server.model_name, arrays), 3)
        for _ in range(REPETITIONS):
            for protocol, port in ports.items():
                p50[protocol].append(p50_ms(caller(protocol, port, server.model_name, arrays), sequential))
                callers = [caller(protocol, port, server.model_name, arrays) for _ in range(8)]
                rate[protocol].append(images_per_second(callers, concurrent))
    finally:
        server.stop()
    print(f"\n{name} (ONNX Runtime FP32, max batch 4; min / median of {REPETITIONS} repetitions)\n")
    print("| OIP infer | p50 at c=1 (ms) | images/s at c=8 |")
    print("| --- | --- | --- |")
    for protocol in ports:
        print(f"| {protocol} | {spread(p50[protocol])} | {spread(rate[protocol])} |")
    grpc_vs_http = statistics.median(p50["grpc"]) - statistics.median(p50["http"])
    print(f"\ngrpc_minus_http_p50_ms: {grpc_vs_http:+.2f}")
    print(f"grpc_vs_http_throughput_c8: {statistics.median(rate['grpc']) / statistics.median(rate['http']):.3f}")


def main() -> None:
    print("CPU:", cpu_description(Path("/proc/cpuinfo").read_text()))
    work = Path(tempfile.mkdtemp())
    measure("tiny model", ensure_tiny_model(work / "tiny", seed=0), work, sequential=100, concurrent=200)
    if "--skip-r18" not in sys.argv:
        measure("real RT-DETR-R18 graph", seeded_export(R18_GRAPH, work / "r18"), work, sequential=15, concurrent=32)


if __name__ == "__main__":
    main()
