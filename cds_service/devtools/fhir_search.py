"""FHIR search over fixture resources, as the fixture server answers it: patient, _id and token
parameters, paging links, and reading fixture files (Bundles are flattened).

Supported parameters: ``patient`` / ``subject`` (``X``, ``Patient/X`` or an absolute reference),
``_id``, and the token parameters ``code``, ``status``, ``clinical-status``, ``category``
(``code`` or ``system|code``, comma = OR). ``_count`` pages the result with absolute
``link[next]`` URLs (``_offset``); ``_include=Type:medication`` / ``Type:device`` add the
referenced Medication / Device of the page's resources (``search.mode`` "include"); other
parameters (dates, ``_sort``…) are ignored.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlencode

log = logging.getLogger(__name__)

#: Search parameter → element holding a reference to the patient.
PATIENT_ELEMENTS = ("subject", "patient")


#: Token search parameter → element (CodeableConcept, list of them, or a code string).
TOKEN_ELEMENTS = {"code": "code", "status": "status", "clinical-status": "clinicalStatus", "category": "category"}


def operation_outcome(code: str, diagnostics: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def flatten(items: Iterable[Mapping]) -> list[dict]:
    """Resources from resources and Bundles (entries' resources, recursively); others skipped."""
    out: list[dict] = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("resourceType"), str):
            continue
        if item["resourceType"] == "Bundle" and isinstance(item.get("entry"), list):
            for entry in item["entry"]:
                if not isinstance(entry, Mapping) or not isinstance(entry.get("resource"), Mapping):
                    continue
                resource = dict(entry["resource"])
                full_url = entry.get("fullUrl")
                if "id" not in resource and isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
                    resource["id"] = full_url[len("urn:uuid:"):]
                out.extend(flatten([resource]))
        else:
            out.append(dict(item))
    return out


def load_resources(paths: Iterable[str | Path]) -> list[dict]:
    """Read JSON files (directories recursively, ``*.json``); non-FHIR JSON files are skipped."""
    documents: list[Any] = []
    for raw in paths:
        path = Path(raw)
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for file in files:
            try:
                document = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read FHIR fixture {file}: {exc}") from exc
            items = document if isinstance(document, list) else [document]
            if not any(isinstance(i, Mapping) and isinstance(i.get("resourceType"), str) for i in items):
                log.warning("skipping %s: not a FHIR resource or Bundle", file)
                continue
            documents.extend(items)
    return flatten(documents)


def reference_matches(value: Any, patient_ids: list[str]) -> bool:
    reference = value.get("reference") if isinstance(value, Mapping) else None
    if not isinstance(reference, str):
        return False
    for wanted in patient_ids:
        wanted_ref = wanted if "/" in wanted else f"Patient/{wanted}"
        if reference == wanted_ref or reference.endswith("/" + wanted_ref):
            return True
    return False


def _codings(value: Any) -> list[tuple[str | None, str | None]]:
    """(system, code) pairs of a code string, Coding, CodeableConcept or a list of them."""
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, list):
        return [pair for item in value for pair in _codings(item)]
    if isinstance(value, Mapping):
        if "coding" in value:
            return _codings(value.get("coding"))
        if "code" in value:
            return [(value.get("system"), value.get("code"))]
    return []


def token_matches(value: Any, wanted: list[str]) -> bool:
    pairs = _codings(value)
    for token in wanted:
        if "|" in token:
            system, code = token.split("|", 1)
            if any((not system or s == system) and (not code or c == code) for s, c in pairs):
                return True
        elif any(c == token for _, c in pairs):
            return True
    return False


def int_param(params: Mapping[str, list[str]], name: str, default: int, *, minimum: int) -> int:
    raw = params.get(name)
    if not raw:
        return default
    try:
        return max(minimum, int(raw[-1]))
    except ValueError:
        return default


def page_url(base: str, params: Mapping[str, list[str]], offset: int) -> str:
    pairs = [(k, v) for k, vs in params.items() for v in vs]
    if offset:
        pairs.append(("_offset", str(offset)))
    return base + ("?" + urlencode(pairs, safe=",|:/") if pairs else "")


#: ``_include`` target (``MedicationRequest:medication``) → the element holding that reference.
INCLUDE_ELEMENTS = {"medication": "medicationReference", "device": "device"}


def included(page: Iterable[Mapping], params: Mapping[str, list[str]],
             read: Callable[[str, str], dict | None]) -> list[dict]:
    """The resources ``_include`` asks for that the page's resources refer to (each once)."""
    found: dict[tuple[str, str], dict] = {}
    for spec in params.get("_include", []):
        element = INCLUDE_ELEMENTS.get(spec.rsplit(":", 1)[-1])
        if element is None:
            continue
        for resource in page:
            reference = resource.get(element)
            target = reference.get("reference") if isinstance(reference, dict) else None
            if not isinstance(target, str) or target.count("/") < 1:
                continue
            resource_type, resource_id = target.rstrip("/").split("/")[-2:]
            hit = read(resource_type, resource_id)
            if hit is not None:
                found[(resource_type, resource_id)] = hit
    return list(found.values())


def searchset(base_url: str, page: Iterable[Mapping], extra: Iterable[Mapping], total: int, links: list) -> dict:
    """A searchset Bundle: the page's matches, then the included resources."""
    entries = [(r, "match") for r in page] + [(r, "include") for r in extra]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [{"fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": mode}}
                  for r, mode in entries],
    }
