"""The images tier: the Dockerfile's images built by BuildKit, pushed to a real registry and run
by runc (tests/cluster/images.py, tests/cluster/containers.py). Skipped, with the reason, where
containers cannot run (not root, no runc or mmdebstrap)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.cluster.images import BuiltImages, built_images, missing_prerequisites


@pytest.fixture(scope="session")
def images() -> Iterator[BuiltImages]:
    problems = missing_prerequisites()
    if problems:
        pytest.skip("containers cannot be built here: " + "; ".join(problems))
    with built_images() as built:
        for target, ref in built.refs.items():
            print(f"built {target} in {built.seconds[f'dev-{target}']:.0f} s: {ref}", file=sys.stderr)
        yield built
