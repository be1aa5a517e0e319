"""The typed API is the one definition: the CRD in crds/ and in the chart is exactly what
``python -m rtdetr_edge.api.crd`` generates from it, and the generator maps each Python
construct to the structural schema Kubernetes requires."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import yaml
from pydantic import Field

from rtdetr_edge.api import crd
from rtdetr_edge.api.spec import ApiModel, RTDETRModelSpec, Rule
from rtdetr_edge.api.status import PHASES

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_are_the_generated_ones() -> None:
    assert crd.main(["--check", "--root", str(REPO)]) == 0, "run `make crd` and commit crds/ and the chart's copy"


def test_check_names_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in crd.OUTPUTS:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    assert crd.main(["--root", str(tmp_path)]) == 0 and crd.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / crd.OUTPUTS[1]).write_text(crd.render().replace("maximum: 64", "maximum: 65"))
    assert crd.main(["--check", "--root", str(tmp_path)]) == 1
    assert f"{crd.OUTPUTS[1]} is out of date" in capsys.readouterr().err


class Inner(ApiModel):
    """Wrapped
    docstring."""

    rules: ClassVar[tuple[Rule, ...]] = (Rule("has(self.a)", "a is needed", lambda m: m.a is None),)
    a: int | None = Field(None, gt=0)


class Outer(ApiModel):
    kind: Literal["x", "y"] = "x"
    inner: Inner | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    free: dict[str, Any] = Field(default_factory=dict)
    items: list[dict[str, Any]] = Field(default_factory=list)


def test_python_types_map_to_a_structural_schema() -> None:
    raw = Outer.model_json_schema(by_alias=True)
    schema = crd.structural(raw, raw["$defs"])
    props = schema["properties"]
    assert props["kind"] == {"type": "string", "enum": ["x", "y"], "default": "x"}
    assert props["inner"] == {
        "type": "object", "description": "Wrapped docstring.",
        "x-kubernetes-validations": [{"rule": "has(self.a)", "message": "a is needed"}],
        "properties": {"a": {"type": "integer", "minimum": 0, "exclusiveMinimum": True}},
    }  # fmt: skip
    assert props["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert props["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert props["items"]["items"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert "additionalProperties" not in schema, "extra=forbid is pruning's job on the server"
    with pytest.raises(ValueError, match="a is needed"):
        Outer(inner=Inner())


def test_unions_other_than_optional_are_refused() -> None:
    with pytest.raises(ValueError, match="only Optional"):
        crd.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})


def test_the_crd_carries_the_api_definitions() -> None:
    schema = yaml.safe_load(crd.render())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    assert status["properties"]["phase"]["enum"] == list(PHASES)
    assert [r["message"] for r in spec["x-kubernetes-validations"]] == [r.message for r in RTDETRModelSpec.rules]
    assert set(spec["required"]) == {"arch", "source", "dataset", "storage"}
    for section in ("quantization", "compression", "serving"):
        assert spec["properties"][section]["default"] == {}
    for column in crd.PRINTER_COLUMNS:  # every printer column points at a field that exists
        node = schema
        for part in column["jsonPath"].split("[")[0].strip(".").split("."):
            node = node.get("properties", {}).get(part) if part != "metadata" else {"properties": {"creationTimestamp": {}}}
            assert node is not None, column


def test_a_job_summary_survives_the_termination_message() -> None:
    from rtdetr_edge.api.job import TERMINATION_LIMIT, JobSummary

    long = JobSummary(ok=False, reason="PipelineFailed", message="é" * 5000)
    line = long.line()
    assert len(line.encode()) <= TERMINATION_LIMIT and "\n" not in line
    read = JobSummary.from_termination_message("some log line\n" + line + "\n")
    assert read is not None and read.reason == "PipelineFailed" and read.message.endswith("...")
    assert JobSummary.from_termination_message("Traceback (most recent call last):\n  boom") is None
    assert JobSummary.from_termination_message('{"schema":"rtdetr.io/quantize-result/v0","ok":true}') is None
    with pytest.raises(ValueError, match="cannot be served"):
        JobSummary(ok=True, pipeline_digest="sha256:" + "0" * 64).record()


def test_every_spec_field_explains_itself() -> None:
    """`kubectl explain rtdetrmodel.spec...` shows these descriptions: none may be missing."""
    schema = yaml.safe_load(crd.render())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        missing = [] if node.get("description") else [path]
        return missing + [m for name, child in node.get("properties", {}).items() for m in undocumented(child, f"{path}.{name}")]

    assert undocumented(schema["properties"]["spec"], "spec") == []
