"""The project's images, built as users build them: BuildKit from the Dockerfile, a real OCI
registry on loopback, a Debian base image made from Debian's packages, containers run by runc.

Docker Hub is out of reach here, so the Dockerfile's ``PYTHON_IMAGE`` is made by mmdebstrap
from Debian bookworm's own Python 3.11 (``debian_python_base``); the Dockerfile builds on it and
on the official ``python:3.11-slim`` alike (the user guide says what differs). Everything
lives in ``~/.cache/rtdetr-edge/images`` (outside the repository): BuildKit's layer cache, the
base image's root filesystem and the registry's storage, so a source-only change rebuilds one
layer.

    python -m tests.cluster.images     # build the images, push them, print their digests
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rtdetr_edge.dev.ports import free_port
from tests.cluster.build import binary, cache_root

REPO = Path(__file__).resolve().parents[2]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRRORS = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
BASE_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
"""What python:3.11-slim offers the Dockerfile: python, pip, CA certificates (Debian's Python
3.11 is 3.11.2; the official image builds 3.11.x from source)."""
BASE_REPOSITORY = "rtdetr-edge/python"
BASE_TAG = f"3.11-{DEBIAN_SUITE}"
IMAGE_REPOSITORY = "rtdetr-edge/rtdetr-edge"
BUILT_TARGETS = ("operator", "runtime-cpu", "runtime-gpu")
"""The Dockerfile targets built here (the exporter fetches PaddleDetection from GitHub)."""
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
"""This machine's CA bundle, handed to the build as the ``ca-bundle`` secret: package downloads
here pass a TLS-intercepting proxy, as at many user sites."""


def images_cache() -> Path:
    return cache_root().parent / "images"


def missing_prerequisites() -> list[str]:
    """Why containers cannot be built or run here (empty: they can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("building and running containers needs root (runc, overlayfs mounts)")
    for tool in ("runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed (Debian package {tool}; `make cluster-tools` installs it)")
    return problems


def wait_until(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not up within {seconds:.0f} s")


def run(command: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {' '.join(command[:4])} …\n{result.stderr[-4000:]}")
    return result  # type: ignore[no-any-return]


def rootfs_dir(ref: str) -> Path:
    return images_cache() / "rootfs" / ref.rsplit("@", 1)[-1].removeprefix("sha256:")[:16]


def prune_unpacked(keep: list[str]) -> None:
    """Delete the unpacked root filesystems of images other than ``keep`` (a source change makes
    a new digest; each unpacked runtime image is ~1.5 GB)."""
    kept = {rootfs_dir(ref) for ref in keep}
    for directory in (images_cache() / "rootfs").glob("*"):
        if directory not in kept:
            shutil.rmtree(directory, ignore_errors=True)


# --- the registry -----------------------------------------------------------------------------


@dataclass
class Registry:
    """distribution's registry on loopback, its storage kept between runs."""

    port: int
    process: subprocess.Popen[bytes]
    address: str = "127.0.0.1"

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def ref(self, repository: str, tag_or_digest: str) -> str:
        separator = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.host}/{repository}{separator}{tag_or_digest}"

    def digest(self, repository: str, tag: str) -> str:
        """The manifest digest the registry serves for ``repository:tag`` (what pulls resolve)."""
        return crane("digest", self.ref(repository, tag)).strip()

    def tags(self, repository: str) -> list[str]:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/{repository}/tags/list", timeout=10) as response:
                return list(json.load(response).get("tags") or [])
        except urllib.error.HTTPError as error:
            if error.code == 404:  # NAME_UNKNOWN: nothing pushed to it yet
                return []
            raise


@contextmanager
def registry(storage: Path | None = None, address: str = "127.0.0.1") -> Iterator[Registry]:
    """``address``: where it listens (loopback; the pod network's gateway for pods to reach it)."""
    storage = storage or images_cache() / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rtdetr-registry-") as scratch:
        config = Path(scratch) / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {address}:{port}\n"
        )
        # What no tag names any more (the images of earlier builds) is deleted before serving: the
        # storage holds one build of each image, not every build this machine ever made.
        # (An empty storage has nothing to collect, and the registry refuses to walk it.)
        if (storage / "docker" / "registry" / "v2" / "repositories").is_dir():
            run([str(binary("registry")), "garbage-collect", "--delete-untagged", str(config)], "registry garbage-collect")
        log = (Path(scratch) / "registry.log").open("wb")
        process = subprocess.Popen([str(binary("registry")), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: urllib.request.urlopen(f"http://{address}:{port}/v2/", timeout=2).status == 200, 30,
                       "the registry")  # fmt: skip
            yield Registry(port, process, address)
        finally:
            process.terminate()
            process.wait(10)
            log.close()


def crane(*args: str) -> str:
    return run([str(binary("crane")), *args, "--insecure"], f"crane {args[0]}").stdout


# --- the base image ---------------------------------------------------------------------------


def mmdebstrap_arguments() -> list[str]:
    """mmdebstrap's arguments but the output: the base image's whole recipe (its cache key).
    pip may install into this interpreter, as into python:3.11-slim's: the image is made for
    that, so Debian's externally-managed marker is removed."""
    return [
        "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        '--customize-hook=rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED',
        *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")),
        '--aptopt=Acquire::Retries "3"',
    ]  # fmt: skip


def debian_python_rootfs() -> Path:
    """Debian's Python 3.11 in a minimal bookworm root filesystem (a tar), made once per recipe."""
    recipe = json.dumps([mmdebstrap_arguments(), DEBIAN_SUITE, DEBIAN_MIRRORS])
    target = images_cache() / f"debian-python-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".partial-{os.getpid()}-{target.name}")  # mmdebstrap writes a tar for a .tar name
    started = time.monotonic()
    print(f"making the Debian base root filesystem ({DEBIAN_SUITE}: {', '.join(BASE_PACKAGES)})", file=sys.stderr)
    command = ["mmdebstrap", *mmdebstrap_arguments(), DEBIAN_SUITE, str(partial), *DEBIAN_MIRRORS]
    run(command, "mmdebstrap", env={**os.environ, "SOURCE_DATE_EPOCH": "1733356800"}, timeout=1200)
    partial.rename(target)
    print(f"made {target.name} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return target


def push_base(to: Registry) -> str:
    """The base image in ``to`` (by digest): the root filesystem as one layer, with the config
    python:3.11-slim has (PATH, LANG, python3)."""
    rootfs = debian_python_rootfs()
    tag = f"{BASE_TAG}-{rootfs.stem.rsplit('-', 1)[-1]}"  # the recipe's hash: a new recipe, a new tag
    if tag not in to.tags(BASE_REPOSITORY):
        layer = to.ref(BASE_REPOSITORY, f"{tag}-rootfs")
        crane("append", "-f", str(rootfs), "-t", layer, "--platform", "linux/amd64")
        crane("mutate", layer, "--set-platform", "linux/amd64", "-t", to.ref(BASE_REPOSITORY, tag), "--cmd", "python3",
              "-e", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "-e", "LANG=C.UTF-8")  # fmt: skip
    return to.ref(BASE_REPOSITORY, to.digest(BASE_REPOSITORY, tag))


# --- BuildKit -------------------------------------------------------------------------------


@dataclass
class BuildKit:
    address: str
    builds: dict[str, float] = field(default_factory=dict)
    """Tag -> seconds its build took (printed by the tests, recorded in BENCHMARKS.md)."""

    def build(self, target: str, to: Registry, base: str, tag: str, context: Path = REPO) -> str:
        """Build ``target`` from ``context``'s Dockerfile on ``base``, push it; its digest ref."""
        with tempfile.TemporaryDirectory(prefix="rtdetr-build-") as scratch:
            metadata = Path(scratch) / "metadata.json"
            command = [
                str(binary("buildctl")), "--addr", self.address, "build", "--frontend", "dockerfile.v0",
                "--local", f"context={context}", "--local", f"dockerfile={context}", "--opt", f"target={target}",
                "--opt", f"build-arg:PYTHON_IMAGE={base}", "--secret", f"id=ca-bundle,src={CA_BUNDLE}",
                "--output", f"type=image,name={to.ref(IMAGE_REPOSITORY, tag)},push=true,registry.insecure=true",
                "--metadata-file", str(metadata),
            ]  # fmt: skip
            started = time.monotonic()
            run(command, f"building the Dockerfile's {target} target", timeout=3600)
            self.builds[tag] = time.monotonic() - started
            digest = json.loads(metadata.read_text())["containerimage.digest"]
        return to.ref(IMAGE_REPOSITORY, digest)


@contextmanager
def buildkit(to: Registry) -> Iterator[BuildKit]:
    root = images_cache() / "buildkit"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtdetr-buildkit-") as scratch:
        socket_path = Path(scratch) / "buildkitd.sock"
        config = Path(scratch) / "buildkitd.toml"
        config.write_text(
            f'root = "{root}"\n'
            f'[grpc]\n  address = ["unix://{socket_path}"]\n'
            '[worker.oci]\n  enabled = true\n  snapshotter = "overlayfs"\n  networkMode = "host"\n'
            # The GPU image's layers alone are ~9 GB: 25 GB keeps both images' layers of a build or
            # two; past that (or with under 5 GB free on the disk) the oldest go. At 40 GB the cache
            # left too little room on a 250 GB disk for the Go builds and a test run beside it; a
            # larger minFreeSpace pruned the GPU image's pip layers at every build (5 minutes each).
            '  gc = true\n  reservedSpace = "2GB"\n  maxUsedSpace = "25GB"\n  minFreeSpace = "5GB"\n'
            "[worker.containerd]\n  enabled = false\n"
            f'[registry."{to.host}"]\n  http = true\n  insecure = true\n'
        )
        log = (Path(scratch) / "buildkitd.log").open("wb")
        process = subprocess.Popen([str(binary("buildkitd")), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        address = f"unix://{socket_path}"
        try:
            wait_until(lambda: subprocess.run([str(binary("buildctl")), "--addr", address, "debug", "workers"],
                                              capture_output=True).returncode == 0, 60, "buildkitd")  # fmt: skip
            yield BuildKit(address)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


CHART = REPO / "charts" / "rtdetr-edge"
CHART_REPOSITORY = "charts"


def push_chart(destination: str, work: Path, plain_http: bool = False) -> str:
    """``helm package`` + ``helm push`` of the chart as an OCI artifact to ``destination``
    (``host[:port]/path``), as a release does; its ``oci://`` reference by the digest Helm pushed."""
    helm = str(binary("helm"))
    run([helm, "package", str(CHART), "--destination", str(work)], "helm package")
    (package,) = work.glob("rtdetr-edge-*.tgz")
    pushed = run([helm, "push", str(package), f"oci://{destination}/{CHART_REPOSITORY}", *(["--plain-http"] * plain_http)],
                 "helm push")  # fmt: skip
    digest = next(line.split()[-1] for line in (pushed.stdout + pushed.stderr).splitlines() if line.startswith("Digest:"))
    return f"oci://{destination}/{CHART_REPOSITORY}/rtdetr-edge@{digest}"


def image_values(ref: str) -> dict[str, str]:
    """The chart's image values (registry, repository, digest) naming ``ref``."""
    name, digest = ref.split("@", 1)
    registry_host, repository = name.split("/", 1)
    return {"registry": registry_host, "repository": repository, "digest": digest}


@dataclass(frozen=True)
class BuiltImages:
    registry: Registry
    base: str
    refs: dict[str, str]
    """Target -> image reference by digest."""
    seconds: dict[str, float]
    """Tag -> seconds its build took."""
    buildkit: BuildKit


@contextmanager
def built_images(targets: tuple[str, ...] = BUILT_TARGETS) -> Iterator[BuiltImages]:
    """A registry holding the base and ``targets`` built from this checkout (for one test session)."""
    with registry() as serving:
        base = push_base(serving)
        with buildkit(serving) as kit:
            refs = {target: kit.build(target, serving, base, f"dev-{target}") for target in targets}
            prune_unpacked(list(refs.values()))
            yield BuiltImages(serving, base, refs, kit.builds, kit)


def release_tag(target: str) -> str:
    """The tag the chart's defaults pull: ``<appVersion>-<target>``."""
    from rtdetr_edge import __version__

    return f"{__version__}-{target}"


def mirror(images: BuiltImages, destination: str, work: Path, insecure: bool = False) -> dict[str, str]:
    """Copy the images (same digests: ``crane copy``) and the chart into ``destination``
    (``host[:port]/path``) under the tags the chart defaults to; target -> reference by digest,
    and ``chart`` -> its ``oci://`` reference by digest."""
    flags = ["--insecure"] if insecure else []
    copied = {}
    for target, ref in images.refs.items():
        tagged = f"{destination}/rtdetr-edge:{release_tag(target)}"
        run([str(binary("crane")), "copy", ref, tagged, *flags], f"crane copy {target}")
        copied[target] = f"{destination}/rtdetr-edge@{ref.rsplit('@', 1)[1]}"
    copied["chart"] = push_chart(destination, work, plain_http=insecure)
    return copied


def main(argv: list[str]) -> int:
    """``make images`` / ``make push REGISTRY=host/path [INSECURE=1]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.cluster.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--push", metavar="HOST/PATH", help="copy the images and the chart there (same digests)")
    parser.add_argument("--insecure", action="store_true", help="the registry speaks plain HTTP")
    parser.add_argument("--sign-key", metavar="KEY", type=Path,
                        help="cosign private key: sign what was pushed and attest each image's SBOM "
                             "(the key's password in COSIGN_PASSWORD)")  # fmt: skip
    options = parser.parse_args(argv)
    if options.sign_key and not options.push:
        parser.error("--sign-key signs what --push pushed: give --push too")
    problems = missing_prerequisites()
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 1
    with built_images() as images, tempfile.TemporaryDirectory() as work:
        for target, ref in images.refs.items():
            print(f"{target}\t{ref}\tbuilt in {images.seconds[f'dev-{target}']:.0f} s")
        if options.push:
            pushed = mirror(images, options.push.rstrip("/"), Path(work), options.insecure)
            for name, ref in pushed.items():
                print(f"pushed {name}\t{ref}")
            if options.sign_key:
                from tests.cluster.supply_chain import KeyPair, sign_release

                keys = KeyPair(options.sign_key, options.sign_key.with_suffix(".pub"), os.environ.get("COSIGN_PASSWORD", ""))
                for name in sign_release(pushed, keys, Path(work), options.insecure):
                    print(f"signed {name} and attested its SBOM")
                print("signed chart")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
