"""Packaging facts that must stay true: pins agree everywhere, the Dockerfile lints clean with
the real hadolint, the README's two commands are the ones CI runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def dockerfile_args(name: str) -> set[str]:
    return set(re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M))


def pin(requirements: list[str], name: str) -> str:
    for requirement in requirements:
        match = re.fullmatch(rf"{re.escape(name)}==(\S+)", requirement.split(";")[0].strip())
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned with == in {requirements}")


def test_paddle_versions_agree() -> None:
    paddle = pin(PYPROJECT["project"]["optional-dependencies"]["cpu"], "paddlepaddle")
    assert dockerfile_args("PADDLE_VERSION") == {paddle} == {"2.6.2"}
    makefile = (REPO / "Makefile").read_text()
    slim = re.search(r"^PADDLESLIM_VERSION := (\S+)$", makefile, re.M)
    assert slim is not None and dockerfile_args("PADDLESLIM_VERSION") == {slim.group(1)} == {"2.6.0"}
    assert pin(PYPROJECT["project"]["optional-dependencies"]["act"], "paddleslim") == slim.group(1), "the digest's pin"
    lock = (REPO / "requirements" / "runtime-cpu.txt").read_text().splitlines()
    assert f"paddlepaddle=={paddle}" in lock
    assert "numpy>=1.26,<2" in PYPROJECT["project"]["optional-dependencies"]["runtime"]
    numpy = [line for line in lock if line.startswith("numpy==")][0]
    assert numpy.split("==")[1].startswith("1."), "NumPy 2 crashes paddle 2.6.2"


def test_lock_files_cover_every_declared_dependency() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    base = PYPROJECT["project"]["dependencies"]
    for lock, groups in (("operator.txt", ["operator"]), ("runtime-cpu.txt", ["runtime", "cpu"]), ("runtime-gpu.txt", ["runtime"])):
        pinned = {line.split("==")[0].lower().replace("_", "-") for line in (REPO / "requirements" / lock).read_text().splitlines()
                  if "==" in line}  # fmt: skip
        declared = [*base, *[r for g in groups for r in extras[g]]]
        for requirement in declared:
            name = re.split(r"[<>=\[;! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            assert name in pinned, f"{name} ({requirement}) missing from requirements/{lock}: run `make lock`"
    assert "paddlepaddle" not in (REPO / "requirements" / "runtime-gpu.txt").read_text(), "the GPU image uses paddlepaddle-gpu"


def test_dockerfile_targets_and_users() -> None:
    targets = re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, re.M)
    assert {"operator", "runtime-cpu", "runtime-gpu", "exporter"} <= set(targets)
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] == "10001:10001", "the last USER of every stage is non-root"
    # What paddlepaddle-gpu 2.6.2 (PyPI, cp311) was built against: CUDA 11.8, cuDNN 8.6, TensorRT 8.5.
    assert '"tensorrt==${TENSORRT_VERSION}"' in DOCKERFILE and dockerfile_args("TENSORRT_VERSION") == {"8.5.3.1"}
    assert '"nvidia-cudnn-cu11==${CUDNN_VERSION}"' in DOCKERFILE and dockerfile_args("CUDNN_VERSION") == {"8.6.0.163"}
    assert '"nvidia-cuda-runtime-cu11==${CUDA_RUNTIME_VERSION}"' in DOCKERFILE
    assert dockerfile_args("CUDA_RUNTIME_VERSION") == {"11.8.89"}


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_problem(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    assert subprocess.run([str(hadolint), str(bad)], capture_output=True, timeout=60).returncode != 0


def test_readme_commands_are_what_ci_runs() -> None:
    first_lines = (REPO / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in first_lines)
    assert any(line.startswith("make test") for line in first_lines)
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


RUNTIME_ONLY = ["paddle", "numpy", "cv2", "filelock", "starlette", "uvicorn", "simplejpeg", "onnxruntime", "paddleslim"]


def image_tree(stage: str, tmp_path: Path) -> Path:
    """The project tree as the Dockerfile's ``source-<stage>`` leaves it: its RUN line, run here."""
    match = re.search(rf"^FROM \S+ AS source-{stage}\n(?:.*\n)*?RUN (.+)$", DOCKERFILE, re.M)
    assert match is not None, f"no source-{stage} stage with a RUN line"
    tree = tmp_path / "src"
    for part in ("runtime", "operator", "configs"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(["bash", "-euc", match.group(1)], cwd=tree, check=True)
    return tree


def run_in(tree: Path, code: str, blocked: list[str] = ()) -> subprocess.CompletedProcess[str]:  # type: ignore[assignment]
    """Python with only ``tree``'s sources importable (the editable install is bypassed)."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    # setuptools' editable finder would serve what the tree lacks from this checkout
    prelude += "sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith('__editable__')]\n"
    prelude += f"import rtdetr_edge\nassert rtdetr_edge.__file__.startswith({str(tree)!r}), rtdetr_edge.__file__\n"
    env = {**os.environ, "PYTHONPATH": f"{tree / 'runtime'}:{tree / 'operator'}", "RTDETR_CONFIG_DIR": str(tree / "configs")}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120, env=env, cwd=tree)


def test_the_operator_image_runs_without_the_data_plane(tmp_path: Path) -> None:
    """The operator image: `.[operator]` and the API, no Paddle, NumPy, OpenCV, filelock, server
    stack, and none of the data plane's modules; it still reads resources and plans Jobs."""
    tree = image_tree("operator", tmp_path)
    kept = sorted(p.name for p in (tree / "runtime" / "rtdetr_edge").iterdir())
    assert "server" not in kept and "pipeline.py" not in kept and "dev" not in kept and "api" in kept, kept
    code = (
        "import rtdetr_operator.main, rtdetr_operator.handlers, rtdetr_operator.reconcile\n"
        "from rtdetr_operator.handlers import register\n"
        "from rtdetr_edge.resource import load_resource, pipeline_plan\n"
        "print(pipeline_plan(load_resource(__import__('pathlib').Path('configs/samples/rtdetr-r50.yaml')).spec).pipeline_digest)\n"
    )
    result = run_in(tree, code, RUNTIME_ONLY)
    assert result.returncode == 0 and result.stdout.startswith("sha256:"), result.stderr


def test_the_runtime_images_run_everything_but_the_development_tools(tmp_path: Path) -> None:
    tree = image_tree("runtime", tmp_path)
    assert not (tree / "runtime" / "rtdetr_edge" / "dev").exists()
    imported = run_in(tree, "import rtdetr_edge.server.app, rtdetr_edge.pipeline, rtdetr_edge.warmup, rtdetr_edge.local_run\n")
    assert imported.returncode == 0, imported.stderr
    serve = run_in(tree, "from rtdetr_edge.cli import main\nraise SystemExit(main(['serve', '--help']))\n")
    assert serve.returncode == 0 and "RTDETR_MAX_BATCH_SIZE" in serve.stdout, serve.stderr
    demo = run_in(tree, "from rtdetr_edge.cli import main\nraise SystemExit(main(['demo', '--no-serve']))\n")
    assert demo.returncode == 2 and "error: this is a development tool, not part of this image" in demo.stderr, demo.stderr
