"""Operator scale and API-load benchmark on the real control plane (not a test).

1. N RTDETRModels applied at once → time until all N quantize Jobs exist, and the operator
   process's peak RSS (its container's init process, found through CRI on the real node).
2. Steady-state API load of an idle operator holding N resources: the API server's own
   ``apiserver_request_total``, counted over a window with the operator running minus the
   same window with it scaled to zero (the rest of the cluster's traffic, side by side).

    .venv/bin/python -m tests.operator.bench_scale --resources 100 --window 60
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from tests.cluster.controlplane import ControlPlane
from tests.cluster.images import built_images
from tests.cluster.node import Node
from tests.cluster.nodes import create_nodes
from tests.operator.conftest import TEST_VALUES, Cluster, OperatorRelease, load_sample

SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')


def request_total(cluster: Cluster) -> float:
    text = cluster.request("GET", "/metrics").text
    return sum(float(m.group("value")) for line in text.splitlines() if (m := SAMPLE.match(line)))


def requests_per_second(cluster: Cluster, window: float) -> float:
    before = request_total(cluster)
    time.sleep(window)
    return (request_total(cluster) - before - 1) / window  # the /metrics scrape itself counts once


def operator_pid(node: Node, release: OperatorRelease) -> int:
    pod = release.pod()
    assert pod is not None
    return node.container_pid(release.namespace, pod["metadata"]["name"], "operator")


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100)
    parser.add_argument("--resync-seconds", type=float, default=10.0, help="the chart's default")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per API-load window")
    parser.add_argument("--operator-cpu-request", default="", help="operator.resources.requests.cpu (default: the chart's)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rtdetr-bench-scale-"))
    plane = ControlPlane(workdir / "control-plane")
    node = None
    with built_images(("operator", "runtime-cpu", "runtime-gpu")) as images:
        try:
            plane.start()
            create_nodes(plane)
            node = Node(plane, images.registry, workdir / "node").start()
            cluster = Cluster(plane, node, workdir, images)
            operator = {**TEST_VALUES["operator"], "resyncSeconds": args.resync_seconds, "logLevel": "INFO"}
            if args.operator_cpu_request:
                operator["resources"] = {"requests": {"cpu": args.operator_cpu_request}}
            values = {**TEST_VALUES, "operator": operator}
            release = OperatorRelease(cluster).install(values)
            namespace = cluster.namespace(pod_security="baseline")
            # The API server's admission learns a new CRD's kind only when its RESTMapper resets
            # (every 10 s): until then OwnerReferencesPermissionEnforcement refuses the operator's
            # children (403) and the operator retries on its resync. Not what is measured here: one
            # resource first, in its own namespace, until its Job exists.
            warm_up = load_sample("rtdetr-r50.yaml")
            warm_up["metadata"].update(name="warm-up", namespace=cluster.namespace(pod_security="baseline"))
            cluster.apply(warm_up)
            cluster.wait(lambda: cluster.jobs(warm_up["metadata"]["namespace"], "quantize"), 60, "the warm-up resource's Job")
            documents = []
            for index in range(args.resources):
                document = load_sample("rtdetr-r50.yaml")
                document["metadata"].update(name=f"model-{index:03d}", namespace=namespace)
                documents.append(document)
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(cluster.apply, documents))
            applied = time.monotonic() - started
            cluster.wait(lambda: len(cluster.jobs(namespace, "quantize")) >= args.resources, 600, f"{args.resources} Jobs", 0.25)
            all_jobs = time.monotonic() - started
            qos = (release.pod() or {}).get("status", {}).get("qosClass")
            created = sorted(datetime.fromisoformat(j["metadata"]["creationTimestamp"]) for j in cluster.jobs(namespace, "quantize"))
            spread = (created[-1] - created[0]).total_seconds()  # the operator's own pace (1 s resolution)
            pid = operator_pid(node, release)
            time.sleep(2 * args.resync_seconds)  # settle: every resource reconciled at least once more
            duplicates = len(cluster.jobs(namespace, "quantize")) - args.resources
            busy = requests_per_second(cluster, args.window)
            rss_now, rss_peak = rss_mb(pid, "VmRSS"), rss_mb(pid, "VmHWM")
            cluster.kubectl("scale", "deployment", "-n", release.namespace, "rtdetr-rtdetr-edge", "--replicas=0")
            cluster.wait(lambda: release.pod() is None, 60, "the operator scaled to zero")
            baseline = requests_per_second(cluster, args.window)
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
            model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
            flags = next((line.split(":", 1)[1].split() for line in lscpu.splitlines() if line.startswith("Flags")), [])
            shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
            print(f"CPU: {model} ({' '.join(shown)}); {args.resources} RTDETRModels, resync {args.resync_seconds:.0f} s, kube-apiserver "
                  f"{cluster.get('/version')['gitVersion']}")  # type: ignore[index]  # fmt: skip
            print(f"operator pod QoS {qos}; applied in {applied:.1f} s; all {args.resources} Jobs "
                  f"after {all_jobs:.1f} s ({args.resources / all_jobs:.1f} Jobs/s; first to last Job {spread:.0f} s); duplicates: {duplicates}")  # fmt: skip
            print(f"operator RSS {rss_now:.0f} MB now, {rss_peak:.0f} MB peak")
            print(f"API requests/s over {args.window:.0f} s: cluster with the idle operator {busy:.1f}, without it {baseline:.1f} "
                  f"-> operator {busy - baseline:.1f}/s ({(busy - baseline) / args.resources:.2f}/s per resource)")  # fmt: skip
        finally:
            if node is not None:
                node.stop()
            plane.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
