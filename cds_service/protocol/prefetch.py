"""Prefetch templates: rendering, and completing a request's prefetch from ``fhirServer``.

CDS Hooks 2.0 rules applied here (checklist section 2, P1-P4):

* tokens are ``{{context.X}}`` for a root-level *primitive* context field X, or one of
  ``{{userPractitionerId}}``, ``{{userPractitionerRoleId}}``, ``{{userPatientId}}``,
  ``{{userRelatedPersonId}}`` derived from ``context.userId``; anything else is unresolvable, and
  a template with an unresolvable token is never sent (the sandbox's bug of sending literal
  ``{{…}}`` is not repeated);
* a prefetch key present with ``null`` means "no data" and is kept as ``None``; only an *absent*
  key is fetched from ``fhirServer``;
* when an absent key cannot be fetched the service SHALL answer 412: the
  :class:`~cds_service.errors.PrefetchUnavailable` family raised here maps to that status.

Error messages name prefetch keys (which come from our own templates), never context values.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any, Mapping
from urllib.parse import quote

from ..errors import FhirFetchFailed, FhirServerNotAllowed, PrefetchUnavailable
from ..fhir_client import FhirClient

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

#: Concurrent FHIR reads per hook call when several prefetch keys are missing.
DEFAULT_MAX_WORKERS = 4


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


def complete_prefetch(
    *,
    templates: Mapping[str, str],
    prefetch: Mapping[str, Any] | None,
    context: Mapping[str, Any],
    fhir_server: str | None,
    access_token: str | None,
    client: FhirClient,
    max_workers: int = DEFAULT_MAX_WORKERS,
) -> dict[str, Any]:
    """Return a new dict with every template key: prefetched values kept, missing ones fetched.

    Every check that needs no network (a ``fhirServer`` is given, it is allowed, every missing
    template renders) is made before the first request, so a refused server gets no call at all.
    Missing keys are fetched concurrently (at most ``max_workers`` at a time). Raises
    :class:`PrefetchUnavailable` (no ``fhirServer`` or unrenderable template),
    :class:`FhirServerNotAllowed` or :class:`FhirFetchFailed`; messages name the keys concerned.
    """
    prefetch = prefetch or {}
    result: dict[str, Any] = {key: prefetch[key] for key in templates if key in prefetch}
    missing = find_missing_prefetch(templates, prefetch)
    if not missing:
        return result
    keys = ", ".join(missing)
    if not fhir_server:
        raise PrefetchUnavailable(f"prefetch missing and no fhirServer to fetch it from: {keys}")
    if not client.is_allowed(fhir_server):
        raise FhirServerNotAllowed(f"fhirServer is not allowed; cannot fetch prefetch: {keys}")
    queries: dict[str, str] = {}
    unrenderable: list[str] = []
    for key in missing:
        query = render_template(templates[key], context)
        if query is None:
            unrenderable.append(key)
        else:
            queries[key] = query
    if unrenderable:
        raise PrefetchUnavailable(
            "prefetch missing and its template cannot be filled from the context: " + ", ".join(unrenderable)
        )

    def fetch(key: str) -> Any:
        return client.fetch(fhir_server, queries[key], access_token)

    outcomes: dict[str, Any | Exception] = {}
    if len(missing) == 1 or max_workers <= 1:
        for key in missing:
            try:
                outcomes[key] = fetch(key)
            except PrefetchUnavailable as exc:
                outcomes[key] = exc
                break  # the call fails anyway; do not keep loading the FHIR server
    else:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(missing)), thread_name_prefix="prefetch") as pool:
            futures = {key: pool.submit(fetch, key) for key in missing}
            for key, future in futures.items():
                try:
                    outcomes[key] = future.result()
                except CancelledError:
                    continue
                except PrefetchUnavailable as exc:
                    outcomes[key] = exc
                    for other in futures.values():
                        other.cancel()  # queued fetches are dropped; running ones end within their timeouts

    failures = {key: exc for key, exc in outcomes.items() if isinstance(exc, Exception)}
    if failures:
        failed = [key for key in missing if key in failures]
        first = failures[failed[0]]
        if isinstance(first, FhirServerNotAllowed):  # not expected after is_allowed, kept for safety
            raise FhirServerNotAllowed(f"fhirServer is not allowed; cannot fetch prefetch: {', '.join(failed)}")
        raise FhirFetchFailed(f"could not fetch prefetch {', '.join(failed)} from fhirServer ({first.message})")
    for key in missing:
        result[key] = outcomes[key]
    return result
