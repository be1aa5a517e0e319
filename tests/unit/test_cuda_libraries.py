"""The GPU libraries Paddle dlopens, linked by the names it asks for (pure), and the check that
runs in the runtime-gpu image (its CPU-side logic here; the image test runs it for real)."""

from __future__ import annotations

import ctypes
from pathlib import Path

from rtdetr_edge.cuda_libraries import PADDLE_LOADS, check_libraries, library_links, same_release, wheel_libraries


def test_every_library_is_linked_by_its_own_name_and_the_unversioned_one_paddle_asks_for() -> None:
    files = [Path("/w/nvidia/cudnn/lib/libcudnn.so.8"), Path("/w/nvidia/cudnn/lib/libcudnn_ops_infer.so.8"),
             Path("/w/nvidia/cublas/lib/libcublasLt.so.11"), Path("/w/nvidia/cuda_runtime/lib/libcudart.so.11.0"),
             Path("/o/tensorrt/libnvinfer_builder_resource.so.8.5.3"), Path("/o/tensorrt/libnvinfer.so.8")]  # fmt: skip
    links = library_links(files)
    assert links["libcudnn.so"] == links["libcudnn.so.8"] == files[0]
    assert links["libcudnn_ops_infer.so.8"] == files[1], "cuDNN opens its sub-libraries by their versioned names"
    assert links["libcublasLt.so"] == files[2] and links["libcudart.so"] == files[3]
    assert links["libnvinfer.so"] == files[5]


def test_an_ambiguous_stem_gets_no_unversioned_link() -> None:
    files = [Path("/a/libfoo.so.1"), Path("/b/libfoo.so.2")]
    assert "libfoo.so" not in library_links(files), "two versions: never guess which one Paddle would get"


def test_wheel_libraries_are_found_where_nvidias_wheels_and_tensorrt_put_them(tmp_path: Path) -> None:
    for name in ("nvidia/cudnn/lib/libcudnn.so.8", "nvidia/cublas/lib/libcublas.so.11", "nvidia/cublas/include/x.h"):
        (tmp_path / "site" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / name).write_bytes(b"")
    (tmp_path / "opt" / "tensorrt").mkdir(parents=True)
    (tmp_path / "opt" / "tensorrt" / "libnvinfer.so.8").write_bytes(b"")
    found = {p.name for p in wheel_libraries([tmp_path / "site", tmp_path / "opt"])}
    assert found == {"libcudnn.so.8", "libcublas.so.11", "libnvinfer.so.8"}


def test_versions_agree_on_major_and_minor() -> None:
    assert same_release("8.5.1", "8.5.3") and same_release("11.8", "11.8") and same_release("8.6.0", "8.6.0")
    assert not same_release("8.6.0", "8.9.1") and not same_release("11.8", "12.0")


def test_a_missing_library_is_a_problem_named_by_what_paddle_asks_for() -> None:
    """Each name Paddle asks for either loads or is a problem that names it: none is skipped."""
    report = check_libraries({"cuda": "11.8", "cudnn": "8.6.0"})
    unresolved = {problem.split()[0] for problem in report.problems if "does not load" in problem}
    assert set(report.loaded) | unresolved == set(PADDLE_LOADS) and not set(report.loaded) & unresolved


def test_a_library_that_loads_is_reported_with_the_file_it_came_from() -> None:
    report = check_libraries({}, names=("libz.so.1",))
    assert report.problems == [] and report.loaded["libz.so.1"].startswith("/") and "libz.so" in report.loaded["libz.so.1"]
    assert ctypes.CDLL("libz.so.1")
