"""Reading SBOMs and locks (pure): what the image tests compare."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.supply_chain import locked_requirements, normalized, sbom_packages


def spdx_package(name: str, version: str, purl: str | None) -> dict[str, object]:
    refs = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}] if purl else []
    return {"name": name, "versionInfo": version, "externalRefs": refs}


def test_packages_are_grouped_by_their_purl_type_and_python_names_normalized() -> None:
    document = {
        "packages": [
            spdx_package("PyYAML", "6.0.2", "pkg:pypi/pyyaml@6.0.2"),
            spdx_package("opencv_python_headless", "4.6.0.66", "pkg:pypi/opencv-python-headless@4.6.0.66"),
            spdx_package("libgomp1", "12.2.0-14+deb12u1", "pkg:deb/debian/libgomp1@12.2.0-14%2Bdeb12u1?arch=amd64"),
            spdx_package("/usr/local/lib/python3.11", "", None),  # a file-system entry: no purl, not a package
        ]
    }
    assert sbom_packages(document) == {
        "pypi": {"pyyaml": "6.0.2", "opencv-python-headless": "4.6.0.66"},
        "deb": {"libgomp1": "12.2.0-14+deb12u1"},
    }


def test_a_lock_is_read_with_markers_comments_and_extras_left_out(tmp_path: Path) -> None:
    lock = tmp_path / "runtime.txt"
    lock.write_text("# Generated; do not edit.\nPyYAML==6.0.2\nuvicorn[standard]==0.32.0 ; python_version >= '3.8'\n\nnumpy==1.26.4  # pinned: Paddle 2.6\n")
    assert locked_requirements(lock) == {"pyyaml": "6.0.2", "uvicorn": "0.32.0", "numpy": "1.26.4"}
    assert normalized("Typing_Extensions") == normalized("typing-extensions") == "typing-extensions"
