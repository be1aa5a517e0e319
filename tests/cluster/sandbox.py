"""Start one container of a pod: run as root inside the pod's network and mount namespaces
(``ip netns exec <pod> unshare --uts python sandbox.py PLAN.json``), arrange the container's
filesystem view the way a kubelet + container runtime would, drop to the pod's user and
exec the container's command. The process then *is* the container (same pid).

The "image" is this machine's Python environment: the interpreter, the project's virtualenv
and sources stay visible (read-only when ``readOnlyRootFilesystem``); private directories
above them (``/root``, 0700) are replaced by empty tmpfs so the pod's user can reach them
without seeing anything else there. Volumes are bind-mounted at their ``mountPath``; mount
points that do not exist are created in a tmpfs or an overlay, never on the host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

STAGE = Path("/mnt/.rtdetr-sandbox")


def die_with_parent() -> None:
    """SIGKILL this process when the thread that started it dies: a killed test run leaves no
    control plane or pod processes behind. (Also re-armed after setuid, which clears it.)"""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# linux/capability.h numbers of the capabilities pod specs name (without the CAP_ prefix).
CAPABILITIES = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
    "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13,
    "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19,
    "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30, "SETFCAP": 31,
    "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36, "AUDIT_READ": 37,
    "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38


def limit_privileges(keep: list[str], no_new_privileges: bool) -> None:
    """What a container runtime does before exec: a bounding set of only ``keep`` (a root
    process then holds just those), and no_new_privs for allowPrivilegeEscalation: false."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for name, number in CAPABILITIES.items():
        if name not in keep and libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            raise OSError(ctypes.get_errno(), f"dropping CAP_{name}")
    if no_new_privileges and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "setting no_new_privs")


def mount(*args: str) -> None:
    # --no-canonicalize: a /proc/<pid>/fd/<n> source must not be resolved back to a covered path.
    result = subprocess.run(["mount", "--no-canonicalize", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"mount {' '.join(args)}: {result.stderr.strip()}")


def handle(path: Path) -> str:
    """A path that keeps naming ``path``'s current file even after mounts cover ``path`` (an
    O_PATH descriptor of this process, reachable by the ``mount`` command as root)."""
    descriptor = os.open(path, os.O_PATH)
    return f"/proc/{os.getpid()}/fd/{descriptor}"


def submounts(directory: Path) -> list[Path]:
    """Mount points strictly below ``directory`` (from this namespace's mountinfo)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].replace("\\040", " "))
        if point != directory and directory in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts))


class Filesystem:
    def __init__(self) -> None:
        self.counter = 0
        self.writable_layers: list[Path] = []  # tmpfs/overlays of ours: made read-only with the root

    def _stage(self) -> Path:
        self.counter += 1
        path = STAGE / str(self.counter)
        path.mkdir(parents=True)
        return path

    def start(self) -> None:
        # /mnt becomes a private tmpfs: the staging area, and where /mnt/pvc/<claim> mount points go.
        mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/mnt")
        self.writable_layers.append(Path("/mnt"))

    def expose(self, paths: list[Path]) -> None:
        """Keep ``paths`` reachable by any user, hiding the private directories above them."""
        hidden: dict[Path, list[tuple[Path, str]]] = {}
        for path in paths:
            for ancestor in reversed(path.parents):
                if ancestor != Path("/") and not os.stat(ancestor).st_mode & stat.S_IXOTH:
                    hidden.setdefault(ancestor, []).append((path, handle(path)))
                    break
        for private, needed in hidden.items():
            mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(private))
            self.writable_layers.append(private)
            for path, source in needed:
                path.mkdir(parents=True, exist_ok=True)
                mount("--rbind", source, str(path))

    def _make_writable(self, directory: Path) -> None:
        """Overlay ``directory`` with a tmpfs upper layer, keeping the mounts below it."""
        keep = [(point, handle(point)) for point in submounts(directory)]
        layer = self._stage()
        (layer / "upper").mkdir()
        (layer / "work").mkdir()
        mount("-t", "overlay", "overlay", "-o", f"lowerdir={directory},upperdir={layer}/upper,workdir={layer}/work",
              str(directory))  # fmt: skip
        self.writable_layers.append(directory)
        for point, source in keep:
            if point.exists():
                mount("--rbind", source, str(point))

    def _mount_point(self, target: Path, is_file: bool) -> None:
        if target.exists():
            return
        existing = next(p for p in target.parents if p.exists())
        if existing == Path("/"):
            raise RuntimeError(f"mountPath {target}: a new top-level directory is not supported by the test pod runner")
        if existing not in self.writable_layers and not any(layer in existing.parents for layer in self.writable_layers):
            self._make_writable(existing)
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_file:
            target.touch()
        else:
            target.mkdir()

    def bind(self, source: str, is_file: bool, target: Path, read_only: bool) -> None:
        self._mount_point(target, is_file)
        mount("--bind", source, str(target))
        if read_only:
            mount("-o", "remount,bind,ro", str(target))

    def keep_image_visible(self, image: list[tuple[Path, str]], targets: list[Path]) -> None:
        """The "image" (this machine's Python and the checkout) stays where it is when a volume
        covers it (a checkout under /tmp with an emptyDir at /tmp): in a real image it would not
        live under the volume's path. Mounted read-only on a mount point made in the volume."""
        for path, source in image:
            if any(target == path or target in path.parents for target in targets):
                path.mkdir(parents=True, exist_ok=True)
                mount("--rbind", source, str(path))
                mount("-o", "remount,bind,ro", str(path))

    def seal_root(self) -> None:
        """readOnlyRootFilesystem: everything but the volumes becomes read-only."""
        for layer in [Path("/"), *self.writable_layers]:
            mount("-o", "remount,bind,ro", str(layer))


def main() -> None:
    plan: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    # Volume sources are held open first: a volume mounted at /tmp must not hide the
    # source of another one that lives under /tmp on this machine.
    sources = [(handle(Path(v["source"])), Path(v["source"]).is_file()) for v in plan["mounts"]]
    image = [(Path(p), handle(Path(p))) for p in plan["image_paths"]]
    filesystem = Filesystem()
    filesystem.start()
    filesystem.expose([path for path, _ in image])
    for volume, (source, is_file) in zip(plan["mounts"], sources):
        filesystem.bind(source, is_file, Path(volume["target"]), bool(volume["readOnly"]))
    filesystem.keep_image_visible(image, [Path(v["target"]) for v in plan["mounts"]])
    if plan["read_only_root"]:
        filesystem.seal_root()
    socket.sethostname(plan["hostname"])  # its own UTS namespace: the pod's name, as in a container
    limit_privileges(plan["capabilities"], plan["no_new_privileges"])
    if plan["gid"] is not None:
        os.setgroups(plan["groups"])
        os.setgid(plan["gid"])
    if plan["uid"] is not None:
        os.setuid(plan["uid"])  # from root to the pod's user: every capability is dropped here
    die_with_parent()
    os.chdir(plan["cwd"])
    argv = plan["argv"]
    try:
        os.execvpe(argv[0], argv, plan["env"])
    except OSError as error:
        # What a container runtime reports for a missing or unusable entrypoint (exit 127/126).
        print(f"exec {argv[0]!r}: {error.strerror}", file=sys.stderr, flush=True)
        os._exit(127 if isinstance(error, FileNotFoundError) else 126)


if __name__ == "__main__":
    main()
