"""Prefetch templates: rendering them from the hook context, and finding the keys a request lacks.

CDS Hooks 2.0 rules applied here (checklist section 2, P1-P4):

* tokens are ``{{context.X}}`` for a root-level *primitive* context field X, or one of
  ``{{userPractitionerId}}``, ``{{userPractitionerRoleId}}``, ``{{userPatientId}}``,
  ``{{userRelatedPersonId}}`` derived from ``context.userId``; anything else is unresolvable, and
  a template with an unresolvable token is never sent (the sandbox's bug of sending literal
  ``{{…}}`` is not repeated);
* a prefetch key present with ``null`` means "no data" and is kept as ``None``; only an *absent*
  key is fetched from ``fhirServer``;
* fetching absent keys is the EHR-access room's job (:mod:`cds_service.ehr.prefetch_completion`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping
from urllib.parse import quote


_TOKEN = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_CONTEXT_FIELD = re.compile(r"^context\.([A-Za-z][A-Za-z0-9_]*)$")
# FHIR id (R4: [A-Za-z0-9\-\.]{1,64}), optionally preceded by a resource type ("Practitioner/abc").
_FHIR_ID = r"[A-Za-z0-9\-.]{1,64}"
_PATH_VALUE = re.compile(rf"^(?:[A-Z][A-Za-z]{{1,63}}/)?{_FHIR_ID}$")
_USER_REFERENCE = re.compile(rf"^(Practitioner|PractitionerRole|Patient|RelatedPerson)/({_FHIR_ID})$")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}

class _Unresolved(Exception):
    pass


def _primitive_text(value: Any) -> str | None:
    """A string or number as text; None for anything else (objects, arrays, booleans, null, '')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _resolve(token: str, context: Mapping[str, Any]) -> str:
    name = token.strip()
    match = _CONTEXT_FIELD.match(name)
    if match:
        value = _primitive_text(context.get(match.group(1)))
        if value is None:
            raise _Unresolved
        return value
    if name in _USER_TOKENS:
        user = context.get("userId")
        found = _USER_REFERENCE.match(user) if isinstance(user, str) else None
        if found is None or found.group(1) != _USER_TOKENS[name]:
            raise _Unresolved
        return found.group(2)
    raise _Unresolved


def render_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Fill a prefetch template from the hook context; None if any token cannot be resolved.

    Values in the query part (after ``?``) are percent-encoded. Values in the path part must be
    a FHIR id or a ``Type/id`` reference (``{{context.userId}}``), so that a hostile value such as
    ``../x`` cannot change which resource is read; otherwise the template is unresolvable.
    """
    if not isinstance(template, str) or not isinstance(context, Mapping):
        return None
    query_start = template.find("?")
    out: list[str] = []
    position = 0
    try:
        for match in _TOKEN.finditer(template):
            out.append(template[position : match.start()])
            value = _resolve(match.group(1), context)
            in_query = 0 <= query_start < match.start()
            if in_query:
                value = quote(value, safe="")
            elif not _PATH_VALUE.match(value) or value.rsplit("/", 1)[-1] in (".", ".."):
                raise _Unresolved
            out.append(value)
            position = match.end()
    except _Unresolved:
        return None
    out.append(template[position:])
    rendered = "".join(out)
    # A stray or nested delimiter left behind means a token we did not understand.
    if "{{" in rendered or "}}" in rendered:
        return None
    return rendered


def find_missing_prefetch(templates: Mapping[str, str], prefetch: Mapping[str, Any] | None) -> list[str]:
    """Template keys absent from ``prefetch`` (in template order). A key with ``null`` is not missing."""
    if prefetch is None:
        return list(templates)
    return [key for key in templates if key not in prefetch]
