"""Operator scale benchmark (not a test): N resources created at once → time until all N
quantize Jobs exist, and the operator process's peak RSS.

    .venv/bin/python -m tests.operator.bench_scale --resources 100
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml

from .conftest import CRD_FILE, MODELS, load_sample
from .emulator import KubernetesApiEmulator


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=100)
    parser.add_argument("--resync-seconds", type=float, default=10.0)
    args = parser.parse_args()

    emulator = KubernetesApiEmulator()
    emulator.register_crd_file(CRD_FILE)
    url = emulator.start()
    work = Path(tempfile.mkdtemp(prefix="rtdetr-bench-"))
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "e",
        "clusters": [{"name": "e", "cluster": {"server": url}}], "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u"}}],
    }))  # fmt: skip
    log_file = work / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    with log_file.open("w") as stream:
        operator = subprocess.Popen(
            [sys.executable, "-m", "rtdetr_operator.main", "--standalone", "--liveness", "", "--log-level", "WARNING",
             "--resync-seconds", str(args.resync_seconds)],
            stdout=stream, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    time.sleep(3)  # operator start-up
    base = load_sample("rtdetr-r50.yaml")
    session = requests.Session()

    def create(index: int) -> None:
        document = copy.deepcopy(base)
        document["metadata"] = {"name": f"model-{index:03d}", "namespace": "bench"}
        response = session.post(f"{url}{MODELS}/namespaces/bench/rtdetrmodels", json=document, timeout=30)
        assert response.status_code == 201, response.text

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(args.resources)))
    created = time.perf_counter() - started
    jobs = 0
    while time.perf_counter() - started < 120:
        jobs = len(emulator.list_objects("batch", "v1", "jobs", "bench"))
        if jobs >= args.resources:
            break
        time.sleep(0.1)
    all_jobs = time.perf_counter() - started
    time.sleep(2)  # let status patches and events settle, then read the peak
    rss = peak_rss_mb(operator.pid)
    duplicates = len(emulator.list_objects("batch", "v1", "jobs", "bench")) - args.resources
    operator.send_signal(signal.SIGTERM)
    operator.wait(30)
    emulator.stop()
    print(f"resources: {args.resources} (created in {created:.2f} s)")
    print(f"all {jobs} quantize Jobs exist after {all_jobs:.2f} s (target: <= 30 s); duplicate Jobs: {duplicates}")
    print(f"operator peak RSS: {rss:.1f} MB (target: <= 150 MB)")
    return 0 if jobs >= args.resources and all_jobs <= 30 and rss <= 150 and duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
