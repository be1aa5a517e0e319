"""Shared fixtures: the tiny model, fixture images, and a real `rtdetr-edge serve` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from rtdetr_edge.dev.ports import free_port
from tests.cluster.images import BuiltImages, built_images, missing_prerequisites

REPO = Path(__file__).resolve().parents[1]
FIXTURE_IMAGES = sorted((REPO / "tests" / "fixtures" / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def fixture_images() -> list[Path]:
    assert len(FIXTURE_IMAGES) == 3, "tests/fixtures/images must hold the three COCO photos"
    return FIXTURE_IMAGES


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed-0 tiny RT-DETR-shaped export (built once per test session)."""
    from rtdetr_edge.dev.demo import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-seed0", seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same graph, different weights (seed 1): a "re-quantized" model for cache-key tests."""
    from rtdetr_edge.dev.demo import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-seed1", seed=1)


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str
    port: int
    log_file: Path
    model_name: str

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            # Not listening yet, or busy: health answers late while warm-up holds the GIL in a C
            # extension (paddle2onnx on the real R18 graph; issue 10 keeps that open).
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_server(model_dir: Path | None, cache_dir: Path, log_dir: Path, *extra: str, model_name: str = "rtdetr") -> ServerProcess:
    """``model_dir`` None: ``extra`` names the model (--model-config)."""
    port = free_port()
    log_file = log_dir / f"server-{port}.log"
    command = [
        sys.executable, "-m", "rtdetr_edge.cli", "serve",
        *(["--model", str(model_dir)] if model_dir is not None else []), "--cache-dir", str(cache_dir),
        "--host", "127.0.0.1", "--port", str(port), "--model-name", model_name,
        "--max-batch-size", "4", *extra,
    ]  # fmt: skip
    if "--backend" not in extra:
        command += ["--backend", "paddle"]  # the server tiers test Paddle unless told (CLI default: auto)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_file.open("w") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, text=True, env=env)
    return ServerProcess(process, f"http://127.0.0.1:{port}", port, log_file, model_name)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `rtdetr-edge serve` process on the tiny model (CPU, Paddle oneDNN, fp32)."""
    work = tmp_path_factory.mktemp("server")
    process = start_server(tiny_model_dir, work / "cache", work)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def images() -> Iterator[BuiltImages]:
    """The Dockerfile's images built by BuildKit from this checkout and pushed to a registry on
    loopback (tests/cluster/images.py), for one session; skipped, with the reason, where
    containers cannot be built (not root, no runc or mmdebstrap)."""
    problems = missing_prerequisites()
    if problems:
        pytest.skip("containers cannot be built here: " + "; ".join(problems))
    with built_images() as built:
        for target, ref in built.refs.items():
            print(f"built {target} in {built.seconds[f'dev-{target}']:.0f} s: {ref}", file=sys.stderr)
        yield built
