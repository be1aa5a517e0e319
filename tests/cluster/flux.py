"""Flux's source-controller and kustomize-controller, built from their Go modules
(``tests/cluster/go/flux``), running against the real control plane as processes with the
cluster-admin kubeconfig (what Flux's own bootstrap grants them).

The source-controller clones Git repositories and serves their contents as artifacts over HTTP
on loopback; the kustomize-controller downloads them, applies them with server-side apply and,
with ``wait: true``, holds the Kustomization at Ready=False until kstatus reads every applied
object as Current.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rtdetr_edge.dev.ports import free_port
from tests.cluster.build import binary, module_dir

CONTROLLER_MODULES = ("github.com/fluxcd/source-controller", "github.com/fluxcd/kustomize-controller")


def crd_files() -> list[Path]:
    """The CRDs each controller ships (config/crd/bases in its module): all of them, since each
    controller starts a reconciler, and so needs the API, for every kind it serves."""
    return [path for module in CONTROLLER_MODULES
            for path in sorted((module_dir("flux", module) / "config" / "crd" / "bases").glob("*.yaml"))]  # fmt: skip


class FluxControllers:
    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "artifacts").mkdir(parents=True, exist_ok=True)
        storage_port = free_port("127.0.0.1")
        common = ["--enable-leader-election=false", "--log-level=info", "--log-encoding=console"]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        commands = {
            "source-controller": [
                str(binary("source-controller")), *common, *self._ports(),
                f"--storage-path={workdir / 'artifacts'}", f"--storage-addr=127.0.0.1:{storage_port}",
                f"--storage-adv-addr=127.0.0.1:{storage_port}",
            ],
            "kustomize-controller": [
                str(binary("kustomize-controller")), *common, *self._ports(),
                "--no-remote-bases=true",
            ],
        }  # fmt: skip
        for name, command in commands.items():
            with (workdir / f"{name}.log").open("wb") as log:
                self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    @staticmethod
    def _ports() -> list[str]:
        return [f"--metrics-addr=127.0.0.1:{free_port('127.0.0.1')}", f"--health-addr=127.0.0.1:{free_port('127.0.0.1')}"]

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}")

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
