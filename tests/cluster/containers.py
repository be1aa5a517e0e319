"""Run an image from the registry as a container with runc, the OCI runtime a kubelet's
containerd uses: the image's own root filesystem (read-only if asked), its user, environment
and entrypoint, its own pid/mount/ipc/uts namespaces and a cgroup. The network namespace is the
host's, so a test reaches a server in the container on loopback.

``runtime_spec`` is pure (the OCI runtime configuration, as a kubelet would ask containerd
for a pod that sets runAsUser, readOnlyRootFilesystem and drops every capability).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.images import crane, images_cache, rootfs_dir, run

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Mount:
    source: Path
    destination: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    args: list[str]
    """The whole command (an entrypoint override is spelled out here)."""
    user: tuple[int, int]
    env: list[str]
    cwd: str = "/"
    read_only_root: bool = True
    mounts: list[Mount] = field(default_factory=list)
    memory_limit_bytes: int | None = None
    writable_tmp: bool = True
    """A tmpfs at /tmp (what an emptyDir gives a pod with a read-only root)."""


def runtime_spec(spec: ContainerSpec, rootfs: Path, cgroup: str) -> dict[str, object]:
    """The OCI runtime configuration (config.json) for ``spec`` over ``rootfs``."""
    uid, gid = spec.user
    mounts: list[dict[str, object]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=268435456"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]  # fmt: skip
    if spec.writable_tmp:
        mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]})
    for mount in spec.mounts:
        options = ["rbind", "ro" if mount.read_only else "rw"]
        mounts.append({"destination": mount.destination, "type": "bind", "source": str(mount.source), "options": options})
    resources: dict[str, object] = {"devices": [{"allow": False, "access": "rwm"}]}
    if spec.memory_limit_bytes is not None:
        resources["memory"] = {"limit": spec.memory_limit_bytes, "swap": spec.memory_limit_bytes}
    no_capabilities: dict[str, list[str]] = {key: [] for key in ("bounding", "effective", "permitted", "ambient")}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": no_capabilities,
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": spec.read_only_root},
        "hostname": "rtdetr-test",
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroup,
            "resources": resources,
            "namespaces": [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    user: tuple[int, int]
    workdir: str

    def command(self, args: list[str] | None, entrypoint: list[str] | None = None) -> list[str]:
        """What the container runs: the entrypoint with ``args`` (the image's CMD when None), as a
        pod's ``command`` (entrypoint) and ``args`` override them."""
        return [*(self.entrypoint if entrypoint is None else entrypoint), *(self.cmd if args is None else args)]


def image_config(ref: str) -> ImageConfig:
    config = json.loads(crane("config", ref)).get("config") or {}
    user = str(config.get("User") or "0:0")
    uid, _, gid = user.partition(":")
    env = list(config.get("Env") or [f"PATH={DEFAULT_PATH}"])
    return ImageConfig(list(config.get("Entrypoint") or []), list(config.get("Cmd") or []), env,
                       (int(uid), int(gid or uid)), str(config.get("WorkingDir") or "/"))  # fmt: skip


def unpacked(ref: str) -> Path:
    """The image's flattened root filesystem (``crane export``), unpacked once per digest."""
    target = rootfs_dir(ref)
    if (target / ".complete").is_file():
        return target
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    exported = partial.with_suffix(".tar")
    crane("export", ref, str(exported))
    with tarfile.open(exported) as archive:
        archive.extractall(partial, filter="fully_trusted")  # our own image: every owner, mode and sticky bit as it is
    exported.unlink()
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def merged_env(image: list[str], overrides: dict[str, str]) -> list[str]:
    """The image's environment with ``overrides`` replacing its values (as a pod's env does: a
    process reads the first of duplicated names, so none may stay)."""
    values = dict(item.split("=", 1) for item in image)
    return [f"{name}={value}" for name, value in {**values, **overrides}.items()]


@dataclass
class Container:
    id: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def container(ref: str, args: list[str] | None = None, *, env: dict[str, str] | None = None,
              mounts: list[Mount] | None = None, memory_limit_bytes: int | None = None,
              read_only_root: bool = True, user: tuple[int, int] | None = None,
              entrypoint: list[str] | None = None) -> Iterator[Container]:  # fmt: skip
    """``ref`` running in the background as its own user (or ``user``); stopped on exit."""
    config = image_config(ref)
    spec = ContainerSpec(
        args=config.command(args, entrypoint), user=user or config.user, env=merged_env(config.env, env or {}),
        cwd=config.workdir, read_only_root=read_only_root, mounts=mounts or [], memory_limit_bytes=memory_limit_bytes,
    )  # fmt: skip
    name = f"rtdetr-test-{uuid.uuid4().hex[:8]}"
    bundle = images_cache() / "bundles" / name
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(runtime_spec(spec, unpacked(ref), f"/rtdetr-test/{name}"), indent=1))
    log = bundle / "output.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(["runc", "run", "--bundle", str(bundle), name], stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        yield Container(name, process, log)
    finally:
        subprocess.run(["runc", "kill", name, "KILL"], capture_output=True)
        try:
            process.wait(30)
        finally:
            subprocess.run(["runc", "delete", "--force", name], capture_output=True)
            shutil.rmtree(bundle, ignore_errors=True)


def run_to_completion(ref: str, args: list[str] | None = None, timeout: float = 120, **kwargs: object) -> tuple[int, str]:
    """Run ``ref`` in the foreground: (exit code, output)."""
    with container(ref, args, **kwargs) as running:  # type: ignore[arg-type]
        code = running.process.wait(timeout)
        return code, running.output()


__all__ = ["Container", "ContainerSpec", "Mount", "container", "image_config", "run", "run_to_completion", "runtime_spec", "unpacked"]
