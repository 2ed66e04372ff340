"""Completing a request's prefetch from its ``fhirServer``: absent keys fetched, paged ones read to the end.

CDS Hooks 2.0: a prefetch key present with ``null`` means "no data" and is kept; only an
*absent* key is fetched. When an absent key cannot be fetched the service SHALL answer 412: the
:class:`~cds_service.errors.PrefetchUnavailable` family raised here maps to that status.

A prefetched searchset Bundle with ``link[next]`` is only the first page of the search: reading
it as the whole chart would miss, say, the metastasis recorded on page two. Its next pages are read
from the request's ``fhirServer`` with the request's access token, under the same rules as a fetch
(allow-listed server, pages only under its base, at most ``max_pages`` pages in all). When that
cannot be done — no ``fhirServer``, a next link that names another address, the page limit, a
failed read — the answer is 412 with the reason, never a rating on part of the chart. The same
holds for a fetched search whose pages ran past the limit.

Error messages name prefetch keys (which come from our own templates), never context values or URLs.
"""

from __future__ import annotations

from typing import Any, Mapping

from cds_service.ehr.fhir_client import FhirClient, Pages, member, next_link
from cds_service.errors import FhirFetchFailed, FhirServerNotAllowed, PrefetchUnavailable
from cds_service.hooks.prefetch import find_missing_prefetch, render_template

def complete_prefetch(
    *,
    templates: Mapping[str, str],
    prefetch: Mapping[str, Any] | None,
    context: Mapping[str, Any],
    fhir_server: str | None,
    access_token: str | None,
    client: FhirClient,
) -> dict[str, Any]:
    """Return a new dict with every template key: prefetched values kept (paged ones read to the end),
    missing ones fetched.

    Every check that needs no network (a ``fhirServer`` is given, it is allowed, every missing
    template renders, every next link lies under it) is made before the first request, so a refused
    server gets no call at all. All keys are read in one wave (:meth:`FhirClient.read_all`).
    Raises :class:`PrefetchUnavailable` (no ``fhirServer``, unrenderable template),
    :class:`FhirServerNotAllowed` or :class:`FhirFetchFailed`; messages name the keys concerned.
    """
    prefetch = prefetch or {}
    result: dict[str, Any] = {key: prefetch[key] for key in templates if key in prefetch}
    missing = find_missing_prefetch(templates, prefetch)
    paged = {key: link for key in result if (link := next_link(result[key])) is not None}
    if not missing and not paged:
        return result
    _check_server(missing, paged, fhir_server, client)
    queries = _queries_for(missing, templates, context)
    _check_next_links(paged, fhir_server, client)

    def read(key: str) -> Any:
        if key in paged:
            return client.fetch_next_pages(fhir_server, paged[key], access_token)
        return client.fetch(fhir_server, queries[key], access_token)

    keys = [*missing, *paged]
    outcomes = client.read_all(keys, read)
    _raise_first_failure(keys, outcomes)
    for key in missing:
        result[key] = outcomes[key]
        unread = next_link(outcomes[key])
        if unread is not None:
            _refuse_incomplete(key, client.may_follow(fhir_server, unread), client.max_pages)
    for key in paged:
        pages: Pages = outcomes[key]
        if pages.unread_next is not None:
            _refuse_incomplete(key, pages.stopped == "limit", client.max_pages)
        result[key] = _joined(result[key], pages.entries)
    return result


def _joined(first_page: Any, more_entries: list) -> dict:
    """One searchset Bundle: the prefetched page's entries followed by those of the pages read after it."""
    entries = member(first_page, "entry")
    merged: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    total = member(first_page, "total")
    if total is not None:
        merged["total"] = total
    merged["entry"] = (list(entries) if isinstance(entries, list) else []) + more_entries
    return merged


def _refuse_incomplete(key: str, limit_reached: bool, max_pages: int) -> None:
    if limit_reached:
        raise FhirFetchFailed(
            f"prefetch {key} has more than {max_pages} pages (CDS_FHIR_MAX_PAGES); not rated on part of the chart")
    raise FhirFetchFailed(
        f"prefetch {key}: its next page is not on the fhirServer, so the rest cannot be read; "
        "not rated on part of the chart")


def _check_server(missing: list[str], paged: Mapping[str, str], fhir_server: str | None,
                  client: FhirClient) -> None:
    if not fhir_server:
        if missing:
            raise PrefetchUnavailable(f"prefetch missing and no fhirServer to fetch it from: {', '.join(missing)}")
        raise PrefetchUnavailable(
            f"prefetch {', '.join(paged)} has more pages and there is no fhirServer to read them from")
    if not client.is_allowed(fhir_server):
        keys = ", ".join([*missing, *paged])
        raise FhirServerNotAllowed(f"fhirServer is not allowed; cannot fetch prefetch: {keys}")


def _check_next_links(paged: Mapping[str, str], fhir_server: str, client: FhirClient) -> None:
    """A next link that does not lie under the fhirServer is never called: 412 before any I/O."""
    for key, link in paged.items():
        if not client.may_follow(fhir_server, link):
            _refuse_incomplete(key, False, client.max_pages)


def _queries_for(missing: list[str], templates: Mapping[str, str], context: Mapping[str, Any]) -> dict[str, str]:
    """The rendered query of each missing key (checked before any network call)."""
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


def _raise_first_failure(keys: list[str], outcomes: Mapping[str, Any]) -> None:
    failures = {key: exc for key, exc in outcomes.items() if isinstance(exc, Exception)}
    if not failures:
        return
    failed = [key for key in keys if key in failures]
    first = failures[failed[0]]
    if isinstance(first, FhirServerNotAllowed):  # not expected after is_allowed, kept for safety
        raise FhirServerNotAllowed(f"fhirServer is not allowed; cannot fetch prefetch: {', '.join(failed)}")
    raise FhirFetchFailed(f"could not fetch prefetch {', '.join(failed)} from fhirServer ({first.message})")
