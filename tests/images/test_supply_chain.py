"""A release's supply chain, as a site that mirrors it checks it: each image's SBOM (syft) lists
what the image really holds, at the versions the project locks; every image and the chart are
signed by digest (cosign, a key pair made here) and verify with that key only; the SBOM travels
as a signed attestation."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtdetr_edge import __version__
from tests.cluster.images import REPO, BuiltImages, push_chart
from tests.cluster.supply_chain import (
    KeyPair,
    clean,
    generate_key_pair,
    locked_requirements,
    normalized,
    sbom_packages,
    sign_release,
    verified_sbom,
    verify,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # SBOMs of every image: ~100 s here

LOCKS = {"operator": "operator.txt", "runtime-cpu": "runtime-cpu.txt", "runtime-gpu": "runtime-gpu.txt"}
"""The lock each image installs (the Dockerfile's --requirement)."""


@dataclass(frozen=True)
class Release:
    refs: dict[str, str]
    """Target (and ``chart``) -> reference by digest."""
    keys: KeyPair
    sboms: dict[str, Path]


@pytest.fixture(scope="module")
def release(images: BuiltImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    work = tmp_path_factory.mktemp("release")
    refs = {**images.refs, "chart": push_chart(images.registry.host, work, plain_http=True)}
    for ref in refs.values():
        clean(ref.removeprefix("oci://"), plain_http=True)
    keys = generate_key_pair(work / "keys", password="release-test")
    yield Release(refs, keys, sign_release(refs, keys, work, plain_http=True))


def test_each_sbom_lists_every_locked_package_at_its_version_and_no_test_tools(release: Release) -> None:
    test_only = {normalized(r.split(">")[0].split("=")[0].split("[")[0].strip())
                 for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]}  # fmt: skip
    for target, lock in LOCKS.items():
        packages = sbom_packages(json.loads(release.sboms[target].read_text()))
        python = packages.get("pypi", {})
        wanted = locked_requirements(REPO / "requirements" / lock)
        wrong = {name: (version, python.get(name)) for name, version in wanted.items() if python.get(name) != version}
        assert not wrong, f"{target}: locked (wanted, in SBOM): {wrong}"
        assert python.get("rtdetr-edge") == __version__, (target, python.get("rtdetr-edge"))
        assert not test_only & set(python), f"{target} holds test tools: {test_only & set(python)}"
        debian = packages.get("deb", {})
        assert "python3.11" in debian, f"{target}: the Debian base's packages are listed"
        assert ("libgomp1" in debian) == target.startswith("runtime"), (target, "libgomp1")
        print(f"{target}: {len(python)} Python and {len(debian)} Debian packages in its SBOM")
    operator_python = sbom_packages(json.loads(release.sboms["operator"].read_text()))["pypi"]
    assert "kopf" in operator_python and "paddlepaddle" not in operator_python
    gpu = sbom_packages(json.loads(release.sboms["runtime-gpu"].read_text()))["pypi"]
    assert (gpu.get("paddlepaddle-gpu"), gpu.get("nvidia-cudnn-cu11")) == ("2.6.2", "8.6.0.163"), gpu


def test_every_image_and_the_chart_verify_with_the_release_key_and_with_no_other(
    release: Release, images: BuiltImages, tmp_path: Path
) -> None:
    other = generate_key_pair(tmp_path / "other", password="someone-else")
    for name, ref in release.refs.items():
        ref = ref.removeprefix("oci://")
        verified = verify(ref, release.keys.public, plain_http=True)
        assert verified.returncode == 0, f"{name}: {verified.stderr[-2000:]}"
        refused = verify(ref, other.public, plain_http=True)
        assert refused.returncode != 0 and "no matching signatures" in refused.stderr, f"{name}: {refused.stderr[-2000:]}"
    unsigned = verify(images.base, release.keys.public, plain_http=True)
    assert unsigned.returncode != 0 and "no signatures found" in unsigned.stderr, unsigned.stderr[-2000:]


def test_the_sbom_travels_with_the_image_as_a_signed_attestation(release: Release) -> None:
    for target, path in release.sboms.items():
        attested = verified_sbom(release.refs[target], release.keys.public, plain_http=True)
        assert attested["documentNamespace"] == json.loads(path.read_text())["documentNamespace"], target
