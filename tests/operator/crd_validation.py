"""What kube-apiserver does with a CRD's structural schema: defaulting, OpenAPI v3 validation
and ``x-kubernetes-validations`` (CEL, evaluated with cel-python). Used by the API emulator
and by the tests that check every sample resource against the CRD."""

from __future__ import annotations

import copy
from typing import Any

import celpy
from openapi_schema_validator import OAS30Validator


class CrdValidator:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._cel = celpy.Environment()
        self._programs: dict[str, Any] = {}

    def apply_defaults(self, obj: dict[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(obj)
        self._default(self.schema, result)
        return result

    def _default(self, schema: dict[str, Any], value: Any) -> None:
        if isinstance(value, dict):
            for name, sub in (schema.get("properties") or {}).items():
                if name not in value and "default" in sub:
                    value[name] = copy.deepcopy(sub["default"])
                if name in value:
                    self._default(sub, value[name])
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for item in value:
                self._default(schema["items"], item)

    def validate(self, obj: dict[str, Any]) -> list[dict[str, str]]:
        """Causes in kube-apiserver's shape: ``{"field", "message", "reason"}``; empty when valid."""
        document = {k: v for k, v in obj.items() if k != "metadata"}
        schema = {**self.schema, "properties": {k: v for k, v in (self.schema.get("properties") or {}).items() if k != "metadata"}}
        causes = []
        for error in sorted(OAS30Validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "<root>"
            causes.append({"field": path, "message": error.message, "reason": "FieldValueInvalid"})
        if not causes:
            self._cel_rules(self.schema, document, "", causes)
        return causes

    def _cel_rules(self, schema: dict[str, Any], value: Any, path: str, causes: list[dict[str, str]]) -> None:
        for rule in schema.get("x-kubernetes-validations") or []:
            program = self._programs.get(rule["rule"])
            if program is None:
                program = self._cel.program(self._cel.compile(rule["rule"]))
                self._programs[rule["rule"]] = program
            try:
                ok = bool(program.evaluate({"self": celpy.json_to_cel(value)}))
            except Exception as error:  # a rule that cannot evaluate rejects, like the API server
                ok = False
                message = f"{rule.get('message', rule['rule'])} ({error})"
            else:
                message = rule.get("message", f"failed rule: {rule['rule']}")
            if not ok:
                causes.append({"field": path or "<root>", "message": message, "reason": "FieldValueInvalid"})
        if isinstance(value, dict):
            for name, sub in (schema.get("properties") or {}).items():
                if name in value:
                    self._cel_rules(sub, value[name], f"{path}.{name}" if path else name, causes)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                self._cel_rules(schema["items"], item, f"{path}[{index}]", causes)
