"""The CUDA, cuDNN and TensorRT libraries Paddle loads for GPU serving, and whether they resolve.

Paddle Inference opens every GPU library with ``dlopen`` at run time, by an unversioned name
(``libcudnn.so``, ``libnvinfer.so``: ``paddle/phi/backends/dynload/dynamic_loader.cc``, for a
wheel built without WITH_PIP_CUDA_LIBRARIES, as PyPI's cu118 ``paddlepaddle-gpu`` 2.6.2 is).
The runtime-gpu image installs NVIDIA's libraries as PyPI wheels, which ship versioned files
(``libcudnn.so.8``); :func:`library_links` names the links that make both names resolve from one
directory on ``LD_LIBRARY_PATH``, and ``rtdetr-edge gpu-libraries`` checks, without a GPU, that
each library Paddle asks for loads and is the version Paddle was built against.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

LIBRARY_DIR = Path("/opt/cuda/lib")
"""Where the runtime-gpu image links every GPU library (its LD_LIBRARY_PATH)."""

PADDLE_LOADS = (
    "libcudart.so",  # the CUDA runtime's version check
    "libcublas.so",
    "libcublasLt.so",
    "libcudnn.so",
    "libcurand.so",
    "libcusolver.so",
    "libcusparse.so",
    "libcufft.so",
    "libnvinfer.so",
    "libnvinfer_plugin.so",
)
"""What Paddle dlopens for GPU inference with TensorRT, by the names it asks for. The driver's
``libcuda.so`` comes from the node (the NVIDIA container toolkit mounts it), NCCL only serves
multi-GPU training, CUPTI only profiling."""

VERSIONED = re.compile(r"^(?P<stem>lib[\w+-]+\.so)\.\d+(\.\d+)*$")


def library_links(files: Iterable[Path]) -> dict[str, Path]:
    """Link name -> library file: every file by its own name, and the unversioned name Paddle
    asks for (``libcudnn.so`` -> ``libcudnn.so.8``) when exactly one file carries that stem. Pure."""
    links: dict[str, Path] = {}
    stems: dict[str, list[Path]] = {}
    for path in files:
        links[path.name] = path
        match = VERSIONED.match(path.name)
        if match:
            stems.setdefault(match.group("stem"), []).append(path)
    for stem, candidates in stems.items():
        if stem not in links and len(candidates) == 1:
            links[stem] = candidates[0]
    return links


def wheel_libraries(roots: Iterable[Path]) -> list[Path]:
    """The shared libraries NVIDIA's wheels installed under ``roots`` (``nvidia/*/lib``,
    ``tensorrt_libs``/``tensorrt`` directories)."""
    found: list[Path] = []
    for root in roots:
        for pattern in ("nvidia/*/lib/lib*.so*", "tensorrt*/lib*.so*"):
            found += sorted(p for p in root.glob(pattern) if p.is_file())
    return found


def link_libraries(roots: Iterable[Path], target: Path = LIBRARY_DIR) -> dict[str, Path]:
    """Make :func:`library_links` under ``target`` (the image build runs this once)."""
    links = library_links(wheel_libraries(roots))
    target.mkdir(parents=True, exist_ok=True)
    for name, path in links.items():
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path)
    return links


@dataclass
class LibraryReport:
    loaded: dict[str, str] = field(default_factory=dict)
    """Name Paddle asks for -> the file it resolved to."""
    versions: dict[str, str] = field(default_factory=dict)
    """What each library reports, and what Paddle was built against."""
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _version(library: ctypes.CDLL, function: str) -> int:
    """A library's version function (``cudnnGetVersion``, ``getInferLibVersion``): needs no GPU."""
    call = getattr(library, function)
    call.restype = ctypes.c_size_t if function == "cudnnGetVersion" else ctypes.c_int
    return int(call())


def distribution_version(path: str) -> str | None:
    """The version of the installed distribution (an NVIDIA wheel) that holds the file ``path``."""
    from importlib import metadata

    target = os.path.realpath(path)
    for distribution in metadata.distributions():
        if not (distribution.metadata["Name"] or "").lower().startswith("nvidia-"):
            continue
        for file in distribution.files or ():
            if os.path.realpath(str(distribution.locate_file(file))) == target:
                return str(distribution.version)
    return None


def resolved_path(library: ctypes.CDLL) -> str:
    """The file a loaded library came from (``/proc/self/maps``), or its name."""
    name = getattr(library, "_name", "")
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return str(name)
    stem = Path(str(name)).name.split(".so")[0] + ".so"
    for line in maps.splitlines():
        path = line.split()[-1] if "/" in line else ""
        if Path(path).name.startswith(stem):
            return os.path.realpath(path)
    return str(name)


def check_libraries(paddle_built: dict[str, str], names: Iterable[str] = PADDLE_LOADS) -> LibraryReport:
    """Load each library as Paddle would and compare the versions they report with
    ``paddle_built`` (``cuda`` 11.8, ``cudnn`` 8.6.0, ``tensorrt`` 8.5.3). Needs no GPU."""
    report = LibraryReport(versions={f"paddle built with {k}": v for k, v in paddle_built.items()})
    loaded: dict[str, ctypes.CDLL] = {}
    for name in names:
        try:
            loaded[name] = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            report.problems.append(f"{name} does not load: {error}")
            continue
        report.loaded[name] = resolved_path(loaded[name])
    if "libcudart.so" in report.loaded:  # cudaRuntimeGetVersion needs a driver: the wheel that installed it says
        version = distribution_version(report.loaded["libcudart.so"])
        if version is None:
            report.problems.append(f"libcudart.so ({report.loaded['libcudart.so']}) belongs to no installed distribution")
        else:
            report.versions["cuda"] = version
            if "cuda" in paddle_built and not same_release(paddle_built["cuda"], version):
                report.problems.append(f"libcudart.so is cuda {version}, Paddle was built with {paddle_built['cuda']}")
    # Both encode major * 1000 + minor * 100 + patch (cuDNN 8600 = 8.6.0, TensorRT 8503 = 8.5.3).
    checks = (("libcudnn.so", "cudnnGetVersion", "cudnn"), ("libnvinfer.so", "getInferLibVersion", "tensorrt"))
    for name, function, key in checks:
        if name not in loaded:
            continue
        try:
            number = _version(loaded[name], function)
            version = f"{number // 1000}.{number % 1000 // 100}.{number % 100}"
        except (OSError, AttributeError) as error:
            report.problems.append(f"{name}: {function} failed: {error}")
            continue
        report.versions[key] = version
        built = paddle_built.get(key)
        if built is not None and not same_release(built, version):
            report.problems.append(f"{name} is {key} {version}, Paddle was built with {built}")
    return report


def same_release(built: str, found: str) -> bool:
    """The versions agree on major.minor (a patch release is compatible), e.g. TensorRT 8.5.1
    (compile) and 8.5.3 (runtime); cuDNN 8.6.0 and 8.6.0."""
    return built.split(".")[:2] == found.split(".")[:2]


def paddle_build_versions() -> dict[str, str]:
    """What the installed Paddle was built against (no GPU needed)."""
    from rtdetr_edge.paddle_import import import_paddle

    paddle = import_paddle()
    versions = {"cuda": str(paddle.version.cuda()), "cudnn": str(paddle.version.cudnn())}
    trt = paddle.inference.get_trt_compile_version()
    if any(trt):
        versions["tensorrt"] = ".".join(str(part) for part in trt)
    return versions


def main(argv: list[str]) -> int:
    """``python -m rtdetr_edge.cuda_libraries [ROOT…]``: link the wheels' libraries under
    LIBRARY_DIR (the runtime-gpu image's build step); ROOTs default to site-packages and /opt."""
    import site

    roots = [Path(a) for a in argv] or [*(Path(p) for p in site.getsitepackages()), Path("/opt")]
    links = link_libraries(roots)
    missing = [name for name in PADDLE_LOADS if name not in links]
    if missing:
        print(f"error: no library for {', '.join(missing)} under {', '.join(map(str, roots))}")
        return 1
    print(f"linked {len(links)} libraries under {LIBRARY_DIR}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
