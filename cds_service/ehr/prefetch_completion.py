"""Completing a request's prefetch from its ``fhirServer``.

CDS Hooks 2.0: a prefetch key present with ``null`` means "no data" and is kept; only an
*absent* key is fetched. When an absent key cannot be fetched the service SHALL answer 412: the
:class:`~cds_service.errors.PrefetchUnavailable` family raised here maps to that status.
Error messages name prefetch keys (which come from our own templates), never context values.
"""

from __future__ import annotations

from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any, Mapping

from cds_service.ehr.fhir_client import FhirClient
from cds_service.errors import FhirFetchFailed, FhirServerNotAllowed, PrefetchUnavailable
from cds_service.hooks.prefetch import find_missing_prefetch, render_template

#: Concurrent FHIR reads per hook call when several prefetch keys are missing.
DEFAULT_MAX_WORKERS = 4


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
    queries = _queries_for(missing, templates, context, fhir_server, client)
    outcomes = _fetch_all(missing, lambda key: client.fetch(fhir_server, queries[key], access_token), max_workers)
    _raise_first_failure(missing, outcomes)
    for key in missing:
        result[key] = outcomes[key]
    return result


def _queries_for(missing: list[str], templates: Mapping[str, str], context: Mapping[str, Any],
                 fhir_server: str | None, client: FhirClient) -> dict[str, str]:
    """The rendered query of each missing key, after every check that needs no network."""
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
    return queries


def _fetch_all(missing: list[str], fetch: Any, max_workers: int) -> dict[str, Any]:
    """Each key's answer or the PrefetchUnavailable it raised; stops early once one fails."""
    outcomes: dict[str, Any] = {}
    if len(missing) == 1 or max_workers <= 1:
        for key in missing:
            try:
                outcomes[key] = fetch(key)
            except PrefetchUnavailable as exc:
                outcomes[key] = exc
                break  # the call fails anyway; do not keep loading the FHIR server
        return outcomes
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
    return outcomes


def _raise_first_failure(missing: list[str], outcomes: Mapping[str, Any]) -> None:
    failures = {key: exc for key, exc in outcomes.items() if isinstance(exc, Exception)}
    if not failures:
        return
    failed = [key for key in missing if key in failures]
    first = failures[failed[0]]
    if isinstance(first, FhirServerNotAllowed):  # not expected after is_allowed, kept for safety
        raise FhirServerNotAllowed(f"fhirServer is not allowed; cannot fetch prefetch: {', '.join(failed)}")
    raise FhirFetchFailed(f"could not fetch prefetch {', '.join(failed)} from fhirServer ({first.message})")
