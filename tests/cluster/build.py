"""Build the real control plane's binaries from their Go modules, once per machine.

Each component is a small Go module of ours under ``tests/cluster/go/<component>/`` whose
go.mod pins the upstream version exactly (the one source of truth for versions). The built
binaries land in a cache outside the repository, in a directory named by a hash of
everything that determines them (go.mod, go.sum, our Go files, link flags, Go version), so a
machine that built them once reuses them, and a pin change rebuilds. Go's own module and
build caches (``go env GOMODCACHE GOCACHE``) make a rebuild after a pin bump incremental.

    python -m tests.cluster.build        # build what is missing, print the binaries
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

GO_MODULES = Path(__file__).resolve().parent / "go"


def cache_root() -> Path:
    """``$RTDETR_CLUSTER_CACHE``, else ``~/.cache/rtdetr-edge/cluster`` (never inside the repo)."""
    configured = os.environ.get("RTDETR_CLUSTER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "rtdetr-edge" / "cluster"


@dataclass(frozen=True)
class Component:
    name: str
    """Directory under tests/cluster/go/."""
    module: str
    """The upstream module whose pinned version names the build (read from go.mod)."""
    binaries: dict[str, str]
    """Binary name → Go package to build."""
    cgo_tags: tuple[str, ...] | None = None
    """Built with cgo and these build tags (C libraries from Debian's packages, see the Makefile);
    None: a static Go binary (CGO_ENABLED=0)."""

    @property
    def directory(self) -> Path:
        return GO_MODULES / self.name

    def version(self) -> str:
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)}\s+(v\S+)", (self.directory / "go.mod").read_text(), re.M)
        if match is None:
            raise RuntimeError(f"{self.directory}/go.mod does not require {self.module}")
        return match.group(1)

    def ldflags(self) -> str:
        flags = ["-s", "-w"]
        if self.module == "k8s.io/kubernetes":
            # What Kubernetes' own build stamps: servers report their real version (Helm's
            # kubeVersion checks and kubectl's skew warning read it).
            version = self.version()
            major, minor = version.lstrip("v").split(".")[:2]
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
                flags += [f"-X {package}.gitVersion={version}", f"-X {package}.gitMajor={major}",
                          f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean"]  # fmt: skip
        if self.module == "helm.sh/helm/v4":
            flags.append(f"-X helm.sh/helm/v4/internal/version.version={self.version()}")
        if self.module == "github.com/anchore/syft":  # the SBOM names the tool that wrote it
            flags.append(f"-X main.version={self.version()}")
        if self.module == "github.com/prometheus/prometheus":  # its Go module v0.316.0 is Prometheus 3.16.0
            _, minor, patch = self.version().lstrip("v").split(".")
            flags.append(f"-X github.com/prometheus/common/version.Version={int(minor) // 100}.{int(minor) % 100}.{patch}")
        if self.module == "k8s.io/kube-state-metrics/v2":
            flags.append(f"-X github.com/prometheus/common/version.Version={self.version()}")
        if self.module == "sigs.k8s.io/metrics-server":  # what its /version and logs report
            flags.append(f"-X k8s.io/client-go/pkg/version.gitVersion={self.version()}")
        if self.module == "github.com/sigstore/cosign/v2":
            flags.append(f"-X sigs.k8s.io/release-utils/version.gitVersion={self.version()}")
        return " ".join(flags)


COMPONENTS = (
    Component("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "."}),
    Component(
        "kubernetes",
        "k8s.io/kubernetes",
        {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
            "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        },
    ),
    # The real node: containerd 2 (CRI) with its runc shim, runc, the CNI plugins of its pod network,
    # CoreDNS for the cluster's DNS, crictl to debug. runc is built (cgo, seccomp) because Debian
    # bookworm's 1.1.5 cannot start containerd 2.4's containers ("can't get final child's PID from
    # pipe"); containerd 2.4 is tested with runc 1.5.
    Component("runc", "github.com/opencontainers/runc", {"runc": "github.com/opencontainers/runc"}, cgo_tags=("seccomp",)),
    Component(
        "containerd",
        "github.com/containerd/containerd/v2",
        {"containerd": "github.com/containerd/containerd/v2/cmd/containerd",
         "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
         "ctr": "github.com/containerd/containerd/v2/cmd/ctr"},
    ),
    Component(
        "cni",
        "github.com/containernetworking/plugins",
        {"bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
         "host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
         "loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
         "portmap": "github.com/containernetworking/plugins/plugins/meta/portmap"},
    ),
    Component("coredns", "github.com/coredns/coredns", {"coredns": "github.com/coredns/coredns"}),
    Component("cri-tools", "sigs.k8s.io/cri-tools", {"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"}),
    # The resource metrics API (metrics.k8s.io) the HorizontalPodAutoscaler reads CPU utilization from.
    Component("metrics-server", "sigs.k8s.io/metrics-server", {"metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server"}),
    Component("kwok", "sigs.k8s.io/kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"}),
    Component("helm", "helm.sh/helm/v4", {"helm": "helm.sh/helm/v4/cmd/helm"}),
    # Flux, for the GitOps loop: it clones from a local git server and applies through the API server.
    Component(
        "flux",
        "github.com/fluxcd/source-controller",
        {"source-controller": "github.com/fluxcd/source-controller",
         "kustomize-controller": "github.com/fluxcd/kustomize-controller"},
    ),
    # Argo CD's health-script engine (gopher-lua with the globals Argo CD's controller sets up).
    Component("argocd-lua", "github.com/yuin/gopher-lua", {"argocd-lua": "."}),
    # The images: BuildKit builds the Dockerfile (runc worker), a real OCI registry serves them and
    # the chart on loopback, crane makes the Debian base image from its root filesystem.
    Component(
        "buildkit",
        "github.com/moby/buildkit",
        {"buildkitd": "github.com/moby/buildkit/cmd/buildkitd", "buildctl": "github.com/moby/buildkit/cmd/buildctl"},
    ),
    Component(
        "registry",
        "github.com/distribution/distribution/v3",
        {"registry": "github.com/distribution/distribution/v3/cmd/registry",
         "crane": "github.com/google/go-containerregistry/cmd/crane"},
    ),
    # The release's supply chain: an SBOM per image (syft), signatures made and verified by digest
    # (cosign), and the release workflow, which cannot run here, linted (actionlint).
    Component("syft", "github.com/anchore/syft", {"syft": "github.com/anchore/syft/cmd/syft"}),
    Component("cosign", "github.com/sigstore/cosign/v2", {"cosign": "github.com/sigstore/cosign/v2/cmd/cosign"}),
    Component("actionlint", "github.com/rhysd/actionlint", {"actionlint": "github.com/rhysd/actionlint/cmd/actionlint"}),
    # The chart's alert rules (promtool check/test rules) and dashboard queries (a real Prometheus
    # scraping a real server).
    Component(
        "prometheus",
        "github.com/prometheus/prometheus",
        {"prometheus": "github.com/prometheus/prometheus/cmd/prometheus",
         "promtool": "github.com/prometheus/prometheus/cmd/promtool"},
    ),
    # RTDETRModel conditions as metrics (the chart's custom-resource-state config), for the model alerts.
    Component("kube-state-metrics", "k8s.io/kube-state-metrics/v2", {"kube-state-metrics": "k8s.io/kube-state-metrics/v2"}),
)


def go_version() -> str:
    try:
        return subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout.strip()
    except FileNotFoundError:
        raise RuntimeError(
            "Go is not on the PATH: the real-cluster test tier builds kube-apiserver, etcd and kwok "
            "from their Go modules (Go >= 1.26; see README 'Development')"
        ) from None


def build_key(component: Component, go: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(component.directory.iterdir()):
        if path.suffix in (".mod", ".sum", ".go"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(component.ldflags().encode() + b"\0" + go.encode())
    if component.cgo_tags is not None:
        digest.update(b"\0cgo " + ",".join(component.cgo_tags).encode())
    return digest.hexdigest()[:12]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One build at a time per machine (two test runs must not build the same thing twice)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_component(component: Component, go: str, log: bool = True) -> Path:
    """The directory holding ``component``'s binaries, built now if missing."""
    target = cache_root() / f"{component.name}-{component.version()}-{build_key(component, go)}"
    if all((target / binary).is_file() for binary in component.binaries):
        return target
    with _locked(cache_root() / ".build.lock"):
        if all((target / binary).is_file() for binary in component.binaries):
            return target  # another process built it while we waited
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        started = time.monotonic()
        if log:
            print(f"building {', '.join(component.binaries)} {component.version()} (first time on this machine: "
                  f"several minutes on 2 cores) -> {target}", file=sys.stderr, flush=True)  # fmt: skip
        command = ["go", "build", "-trimpath", f"-ldflags={component.ldflags()}", "-o", str(partial) + "/"]
        if component.cgo_tags:
            command[2:2] = ["-tags", ",".join(component.cgo_tags)]
        if len(component.binaries) == 1:
            (binary, package), = component.binaries.items()
            command[-1] = str(partial / binary)
            command.append(package)
        else:
            command += list(component.binaries.values())
        cgo = "1" if component.cgo_tags is not None else "0"
        env = {**os.environ, "CGO_ENABLED": cgo, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"}
        result = subprocess.run(command, cwd=component.directory, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"go build of {component.module} {component.version()} failed:\n{result.stderr[-4000:]}")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # published whole: a killed build never leaves half a directory
        if log:
            print(f"built {component.name} in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return target


def ensure_binaries(log: bool = True) -> dict[str, Path]:
    """Binary name → path for every control-plane component (building what is missing)."""
    go = go_version()
    paths: dict[str, Path] = {}
    for component in COMPONENTS:
        directory = ensure_component(component, go, log)
        paths.update({binary: directory / binary for binary in component.binaries})
    return paths


def binary(name: str) -> Path:
    """One binary (building only its component if missing), e.g. ``binary("helm")``."""
    component = next(c for c in COMPONENTS if name in c.binaries)
    return ensure_component(component, go_version()) / name


def downloaded_module(module: str, version: str) -> Path:
    """Where Go unpacked ``module@version``, downloaded from the module proxy (for data files it
    ships, e.g. CRDs of a project whose code does not build here)."""
    result = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True,
                            cwd=GO_MODULES, env={**os.environ, "GOTOOLCHAIN": "local"})  # fmt: skip
    found = re.search(r'"Dir":\s*"([^"]+)"', result.stdout)
    if found is None:
        raise RuntimeError(f"go mod download {module}@{version}: {result.stdout[-1000:]} {result.stderr[-1000:]}")
    return Path(found.group(1))


def module_dir(component: str, module: str) -> Path:
    """Where Go unpacked ``module`` (as pinned by our ``component`` go.mod): for data files it ships.
    Downloaded again when Go's module cache was cleaned after the binaries were built."""
    result = subprocess.run(["go", "mod", "download", "-json", module], cwd=GO_MODULES / component, capture_output=True,
                            text=True, env={**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"})  # fmt: skip
    found = re.search(r'"Dir":\s*"([^"]+)"', result.stdout)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"go mod download {module} (pinned in {component}/go.mod): {result.stdout[-1000:]} {result.stderr[-1000:]}")
    return Path(found.group(1))


def versions() -> dict[str, str]:
    return {component.module: component.version() for component in COMPONENTS}


if __name__ == "__main__":
    for name, path in ensure_binaries().items():
        print(f"{name}\t{path}")
