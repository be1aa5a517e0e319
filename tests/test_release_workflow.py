"""The release workflow cannot run here (no GitHub, no Docker engine): it is linted by the real
actionlint, and what it must agree with is compared with the project's own sources of truth —
the Dockerfile's targets, the chart's image tags, the tool versions the tests build."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster.build import COMPONENTS, binary

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def workflow() -> dict[str, object]:
    return yaml.safe_load(WORKFLOW.read_text())


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary("actionlint")), "-no-color", str(path)], capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
def test_actionlint_accepts_the_release_workflow_and_refuses_a_broken_one(tmp_path: Path) -> None:
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same workflow with an output that does not exist: actionlint must say so (it checks).
    broken = tmp_path / ".github" / "workflows" / "release.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("steps.build.outputs.digest", "steps.bulid.outputs.digest"))
    refused = subprocess.run([str(binary("actionlint")), "-no-color", str(broken)], capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 1 and 'property "bulid" is not defined' in refused.stdout, refused.stdout + refused.stderr


def test_every_dockerfile_target_the_chart_pulls_is_released() -> None:
    dockerfile_targets = set(re.findall(r"^FROM \S+ AS (\S+)$", (REPO / "Dockerfile").read_text(), re.M))
    values = yaml.safe_load((REPO / "charts" / "rtdetr-edge" / "values.yaml").read_text())
    pulled = {"operator"} | {re.sub(r"(?<!^)([A-Z])", r"-\1", key).lower()
                             for key, image in values["images"].items() if isinstance(image, dict) and "repository" in image}  # fmt: skip
    matrix = workflow()["jobs"]["images"]["strategy"]["matrix"]["include"]  # type: ignore[index]
    released = {entry["target"] for entry in matrix}
    assert pulled <= dockerfile_targets, pulled - dockerfile_targets
    assert released == pulled, f"released {sorted(released)}, the chart pulls {sorted(pulled)}"


def test_the_workflow_uses_the_tool_versions_the_tests_build() -> None:
    env = workflow()["env"]
    pinned = {component.module: component.version() for component in COMPONENTS}
    assert env == {  # type: ignore[comparison-overlap]
        "IMAGE": "ghcr.io/${{ github.repository_owner }}/rtdetr-edge",
        "SYFT_VERSION": pinned["github.com/anchore/syft"],
        "COSIGN_VERSION": pinned["github.com/sigstore/cosign/v2"],
        "HELM_VERSION": pinned["helm.sh/helm/v4"],
    }
