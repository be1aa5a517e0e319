"""Packaging facts that must stay true: pins agree everywhere, the Dockerfile lints clean with
the real hadolint, the README's two commands are the ones CI runs."""

from __future__ import annotations

import re
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
    assert "libnvinfer8=${TENSORRT_VERSION}" in DOCKERFILE and dockerfile_args("TENSORRT_VERSION") == {"8.5.3-1+cuda11.8"}
    assert dockerfile_args("CUDNN_VERSION") == {"8.6.0.163-1+cuda11.8"}


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


def test_operator_imports_without_runtime_dependencies() -> None:
    """The operator image installs only `.[operator]`: no Paddle, NumPy, OpenCV, filelock, server stack."""
    blocked = ["paddle", "numpy", "cv2", "filelock", "starlette", "uvicorn", "simplejpeg", "onnxruntime", "paddleslim"]
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
        + "import rtdetr_operator.main, rtdetr_operator.handlers, rtdetr_operator.reconcile\n"
        + "from rtdetr_operator.handlers import register\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
