"""The JSON Schemas (Draft 2020-12) of the CDS Hooks documents this service reads and writes."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from jsonschema import Draft202012Validator

SCHEMA_NAMES = ("discovery", "request", "response", "feedback")


@lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    """A compiled validator for ``cds_service/hooks/schemas/{name}.schema.json``."""
    text = resources.files("cds_service.hooks").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(name: str, document: object, limit: int = 10) -> list[str]:
    """Readable validation problems, e.g. ``context.selections: [] should be non-empty``.

    At most ``limit`` of them, then one ``... and N more problems`` line. Callers bound the
    document first (``hooks.limits``): jsonschema builds every error, so the number of errors
    and the cost of this call follow the size of the document.
    """
    if validator(name).is_valid(document):  # the common case, several times cheaper than iter_errors
        return []
    errors = sorted(validator(name).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    found = []
    for error in errors[:limit]:
        where = ".".join(str(p) for p in error.absolute_path) or "(body)"
        found.append(f"{where}: {_short(error.message)}")
    if len(errors) > limit:
        found.append(f"... and {len(errors) - limit} more problems")
    return found


def _short(message: str, limit: int = 200) -> str:
    # jsonschema quotes the offending instance, which may be large (or carry PHI): keep it short.
    return message if len(message) <= limit else message[: limit - 1] + "…"
