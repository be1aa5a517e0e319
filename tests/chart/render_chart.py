"""Render the Helm chart with the real Helm library (helm-sdkpy) by installing it into the API
emulator; prints the release manifest, or `ERROR: <cause>` and exits 1.

Run as a subprocess: helm-sdkpy's Go runtime reads HELM_DRIVER only from the environment the
process started with (memory = nothing persisted).

    HELM_DRIVER=memory python -m tests.chart.render_chart CHART_DIR VALUES_JSON
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from tests.operator.emulator import KubernetesApiEmulator


def main() -> int:
    chart, values = Path(sys.argv[1]), json.loads(sys.argv[2])
    # Helm validates crds/ against the server's protobuf OpenAPI, which the emulator does not
    # serve; the CRD files are validated on their own (kubernetes-validate), so render without them.
    work = Path(tempfile.mkdtemp(prefix="chart-"))
    copy = work / chart.name
    shutil.copytree(chart, copy, ignore=shutil.ignore_patterns("crds"))
    emulator = KubernetesApiEmulator()
    for crd_file in sorted((chart / "crds").glob("*.yaml")):  # what Helm installs from crds/ first
        for crd in yaml.safe_load_all(crd_file.read_text()):
            emulator.register_crd(crd)
    url = emulator.start()
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "e",
        "clusters": [{"name": "e", "cluster": {"server": url}}], "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u", "namespace": "rtdetr-system"}}],
    }))  # fmt: skip
    import helm_sdkpy

    config = helm_sdkpy.Configuration(namespace="rtdetr-system", kubeconfig=str(kubeconfig))
    try:
        release = asyncio.run(helm_sdkpy.Install(config).run("rtdetr", str(copy), values=values, wait=False))
    except helm_sdkpy.HelmError as error:
        print(f"ERROR: {error}")
        return 1
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(release["manifest"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
