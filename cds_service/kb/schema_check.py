"""JSON Schema validation of knowledge files, with problems phrased for knowledge authors."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from cds_service.kb.grammar import OPERATOR_NAMES

PACKAGE = "cds_service.knowledge_data"


SCHEMA_FILE = ("schema", "knowledge.schema.json")


#: Top-level files and the schema kind each is validated against.
FILE_KINDS = {
    "manifest.json": "manifest",
    "sources.json": "sources",
    "procedures.json": "procedures",
    "valuesets.json": "valuesets",
    "definitions.json": "definitions",
    "contraindications.json": "contraindications",
    "override_reasons.json": "override_reasons",
}


SCENARIO_KIND = "scenario"


_schema_cache: dict[str, Draft202012Validator] = {}


def _schema_node():
    node = resources.files(PACKAGE)
    for part in SCHEMA_FILE:
        node = node.joinpath(part)
    return node


def schema_digest() -> str:
    """Identifies the schema a file was validated against (its bytes and the validator's version)."""
    from importlib.metadata import version

    return hashlib.sha256(_schema_node().read_bytes() + version("jsonschema").encode()).hexdigest()


def validators() -> dict[str, Draft202012Validator]:
    """One validator per file kind, built once per process from the packaged schema."""
    if not _schema_cache:
        schema = json.loads(_schema_node().read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        root = {key: value for key, value in schema.items() if key not in ("anyOf",)}
        for kind in (*FILE_KINDS.values(), SCENARIO_KIND):
            _schema_cache[kind] = Draft202012Validator({**root, "$ref": f"#/$defs/{kind}"})
    return _schema_cache


def _describe(error: ValidationError) -> str:
    """A schema error in words an author can act on."""
    if isinstance(error.instance, dict) and (
        (error.validator == "anyOf" and _is_criterion_schema(error.schema))
        or (error.validator == "additionalProperties" and _is_operator_schema(error.schema))
    ):
        present = sorted(k for k in error.instance if k in OPERATOR_NAMES)
        if not present:
            return f"a criterion needs exactly one operator key ({', '.join(OPERATOR_NAMES)}); found none"
        if len(present) > 1:
            return f"a criterion needs exactly one operator key; found {len(present)}: {', '.join(present)}"
    if error.validator == "anyOf" and isinstance(error.instance, dict) and "codes" in error.instance:
        return "a value set needs at least one code or prefix"
    if error.validator in ("oneOf", "anyOf") and error.context:
        return best_match(error.context).message
    return error.message


def _is_operator_schema(schema: Any) -> bool:
    """The schema of one operator's criterion (required: [operator], closed)."""
    required = schema.get("required", []) if isinstance(schema, dict) else []
    return len(required) == 1 and required[0] in OPERATOR_NAMES and schema.get("additionalProperties") is False


def _is_criterion_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and str(schema.get("description", "")).startswith("Exactly one operator key")



def schema_problems(kind: str, document: Any, label: str) -> list[str]:
    validator = validators()[kind]
    problems: list[str] = []
    for error in sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        if error.validator == "enum" and "propertyNames" in error.schema_path:
            # The operator's schema reports the same key as "Additional properties…"; keep that one.
            continue
        line = f"{label}: {error.json_path}: {_describe(error)}"
        if line not in problems:
            problems.append(line)
    return problems
