"""The RTDETRModel CRD, generated from the typed API (``spec.py``, ``status.py``).

``python -m rtdetr_edge.api.crd`` (``make crd``) writes ``crds/`` and the chart's copy;
``--check`` fails when either differs (the tests run the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from rtdetr_edge.api.spec import GROUP, KIND, NAME_MESSAGE, NAME_PATTERN, PLURAL, VERSION, RTDETRModelSpec, ServingSpec
from rtdetr_edge.api.status import PHASES, RTDETRModelStatus, ServingStatus
from rtdetr_edge.files import write_text_atomic

CRD_NAME = f"{PLURAL}.{GROUP}"
FILE_NAME = f"{CRD_NAME}.yaml"
OUTPUTS = (Path("crds") / FILE_NAME, Path("charts") / "rtdetr-edge" / "files" / FILE_NAME)
HEADER = (
    "# Generated from runtime/rtdetr_edge/api/ by `python -m rtdetr_edge.api.crd` (make crd): do not edit.\n"
    "# The Helm chart ships these exact bytes (charts/rtdetr-edge/files/, rendered by templates/crd.yaml).\n"
)


def _wire(model: type[BaseModel], field: str) -> str:
    """A field's name on the wire (its camelCase alias)."""
    return model.model_fields[field].alias or field


SCALE = {
    "specReplicasPath": f".spec.{_wire(RTDETRModelSpec, 'serving')}.{_wire(ServingSpec, 'replicas')}",
    "statusReplicasPath": f".status.{_wire(RTDETRModelStatus, 'serving')}.{_wire(ServingStatus, 'replicas')}",
    "labelSelectorPath": f".status.{_wire(RTDETRModelStatus, 'serving')}.{_wire(ServingStatus, 'selector')}",
}
"""The scale subresource: `kubectl scale rtdetr/NAME --replicas=N` sets serving.replicas, and an
HPA may target the resource itself (it reads the pods' selector from status)."""

PRINTER_COLUMNS = [
    {"name": "Arch", "type": "string", "jsonPath": ".spec.arch"},
    {"name": "Precision", "type": "string", "jsonPath": ".spec.serving.precision"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "mAP", "type": "number", "jsonPath": ".status.accuracy.quantizedMap",
     "description": "COCO mAP (.50:.95) of the served model"},
    {"name": "Drop", "type": "number", "jsonPath": ".status.accuracy.mapDrop", "description": "mAP points lost to quantization"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]  # fmt: skip
KEY_ORDER = ("type", "description", "required", "x-kubernetes-validations", "enum", "default", "format", "pattern")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and drop ``Optional``'s null branch; the field's own keys win."""
    while True:
        if "$ref" in node:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node = {**defs[node["$ref"].rsplit("/", 1)[1]], **rest}
        elif "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"only Optional[X] unions map to a structural schema, got {node['anyOf']}")
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**options[0], **rest}
        else:
            return node


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema node as a Kubernetes structural schema (OpenAPI v3.0)."""
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs") or (key == "default" and value is None):
            continue
        if key == "exclusiveMinimum":  # JSON Schema 2020 → OpenAPI 3.0
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "x-kubernetes-validations":
            out[key] = [{"rule": r["rule"], "message": r["message"]} for r in value]
        elif key == "description":  # docstrings wrap; kubectl explain re-wraps
            out[key] = " ".join(value.split())
        elif key == "properties":
            out[key] = {name: structural(child, defs) for name, child in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = structural(value, defs)
            # False (extra="forbid"): structural schemas prune unknown fields already
        else:
            out[key] = value
    first = {k: out.pop(k) for k in KEY_ORDER if k in out}
    return {**first, **out}


def _schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)  # type: ignore[attr-defined]
    return structural(raw, raw.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    spec = _schema(RTDETRModelSpec)
    for section in ("quantization", "compression", "serving"):  # absent → every default applies
        spec["properties"][section]["default"] = {}
    status = _schema(RTDETRModelStatus)
    assert status["properties"]["phase"]["enum"] == list(PHASES)
    # Until the operator has written a status, a new object reads as "generation 1, observed 0":
    # kstatus (Flux's wait, kubectl wait --for=jsonpath, Argo CD) reports it in progress instead of
    # Current, which a status-less custom resource otherwise is (Flux declared a model Ready 0.1 s
    # after applying it, before quantization had started: tests/operator/test_gitops.py).
    status["default"] = {"observedGeneration": 0}
    root = {
        "type": "object",
        "description": "An RT-DETR detector quantized to INT8 with PaddleSlim ACT, checked against its FP32 COCO mAP, "
        "and served by TensorRT runtime pods.",
        "required": ["spec"],
        # The name also names the model's Service (a DNS-1035 label): refuse at admission what
        # would otherwise fail after hours of quantization.
        "x-kubernetes-validations": [{"rule": f"self.metadata.name.matches('{NAME_PATTERN}')", "message": NAME_MESSAGE}],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "rtdetr-edge", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": KIND.lower(),
                "shortNames": ["rtdetr"], "categories": ["all", "rtdetr-edge"],
            },  # fmt: skip
            "versions": [
                {
                    "name": VERSION, "served": True, "storage": True, "subresources": {"status": {}, "scale": SCALE},
                    "additionalPrinterColumns": PRINTER_COLUMNS, "schema": {"openAPIV3Schema": root},
                }  # fmt: skip
            ],
        },
    }


def render() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=110, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtdetr_edge.api.crd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository checkout (default: .)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    text = render()
    stale = [path for path in OUTPUTS if not (args.root / path).is_file() or (args.root / path).read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run `make crd`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        write_text_atomic(args.root / path, text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
