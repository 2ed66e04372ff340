"""Outbound FHIR reads for prefetch completion, behind an allow-list (SSRF guard).

The CDS client names the FHIR server (``fhirServer``) in the request body, so the URL is
attacker-controlled input. :class:`FhirClient` therefore:

* compares the normalised scheme, host, port and path prefix of ``base_url`` with the
  configured allow-list (plus literal loopback addresses and ``localhost`` in development) and
  raises :class:`~cds_service.errors.FhirServerNotAllowed` *before* any network I/O;
* accepts only relative queries (``Patient/123``, ``Condition?patient=123``) that cannot leave
  the base (no scheme, no ``//host``, no dot segments, no backslashes, no control characters);
* never follows redirects, follows ``Bundle.link[next]`` only under the same base and at most
  ``max_pages`` times, streams bodies and stops reading beyond ``max_response_bytes``;
* turns every failure into :class:`~cds_service.errors.FhirFetchFailed` with a short reason that
  names at most the resource type, never the query (patient ids are PHI), the token or the body.

A merged search result is one ``searchset`` Bundle. When pages were left unread (``max_pages``
reached, or a next link pointing outside the base), the merged Bundle keeps that
``link[next]`` so that callers can tell the result is incomplete; it is never fetched.
:meth:`FhirClient.fetch_next_pages` follows the next link of a Bundle read by someone else (the
EHR's paged prefetch) under the same rules; ``prefetch_completion`` refuses incomplete results.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import certifi
import msgspec
import urllib3

from cds_service.errors import FhirFetchFailed, FhirServerNotAllowed, PrefetchUnavailable

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"

_SCHEMES = {"http": 80, "https": 443}
# Any ASCII control character or whitespace; never valid raw in a URL we build or accept.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
# Percent-encoded '.', '/' and '\' in a path could be decoded into a dot segment or separator.
_ENCODED_PATH_TRICK = re.compile(r"%(?:2e|2f|5c)", re.IGNORECASE)
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_CHUNK = 64 * 1024
#: Prefetch queries fetched at once per FHIR server when a call's prefetch is missing; at least
#: the number of prefetch templates, so that a call needs one round trip, not several waves.
DEFAULT_MAX_CONCURRENCY = 16


@dataclass(frozen=True)
class _Origin:
    """A normalised base URL: scheme, lower-case host (IPv6 compressed), explicit port, path segments."""

    scheme: str
    host: str
    port: int
    path: tuple[str, ...]
    loopback: bool

    def contains(self, other: "_Origin") -> bool:
        """True if ``other`` is this base or lies under it (same origin, path prefix on segments)."""
        return (
            self.scheme == other.scheme
            and self.host == other.host
            and self.port == other.port
            and other.path[: len(self.path)] == self.path
        )

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = _SCHEMES[self.scheme]
        netloc = host if self.port == default else f"{host}:{self.port}"
        path = "".join("/" + segment for segment in self.path)
        return f"{self.scheme}://{netloc}{path}"


@dataclass(frozen=True)
class Pages:
    """The entries of the pages read by following ``link[next]``, and the first link left unread.

    ``stopped`` says why a link was left unread: ``"limit"`` (``max_pages`` reached) or
    ``"outside"`` (not under the base, or a page already read); ``None`` when the search is complete.
    """

    entries: list
    unread_next: str | None
    stopped: str | None


def _normalise_host(raw: str) -> tuple[str, bool] | None:
    """Return (normalised host, is literal loopback) or None when the host is not acceptable."""
    if raw.startswith("[") and raw.endswith("]"):
        try:
            address = ipaddress.IPv6Address(raw[1:-1])  # rejects zone ids only if malformed
        except ValueError:
            return None
        if address.scope_id is not None:
            return None
        return address.compressed, address == ipaddress.IPv6Address("::1")
    host = raw.lower()
    if not _HOST_NAME.match(host):
        return None
    last_label = host.rsplit(".", 1)[-1]
    if last_label.isdigit():
        # Looks numeric: only a strict dotted quad is accepted ("127.1", "2130706433", "0177.0.0.1"
        # would be resolved to addresses by getaddrinfo and are refused).
        try:
            v4 = ipaddress.IPv4Address(host)
        except ValueError:
            return None
        return str(v4), v4.is_loopback
    return host, host == "localhost"


def _parse_origin(url: Any) -> _Origin | None:
    """Parse and normalise a base URL, or return None if it is not an acceptable FHIR base."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        return None
    if _CONTROL_OR_SPACE.search(url) or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # e.g. "http://127.0.0.1:8081.evil.com" or a port out of range
        return None
    if parts.scheme not in _SCHEMES or parts.query or parts.fragment or "#" in url or "?" in url:
        return None
    netloc = parts.netloc
    if not netloc or "@" in netloc or "%" in netloc:
        return None
    host_part = netloc
    if netloc.startswith("["):
        host_part = netloc[: netloc.find("]") + 1]
    elif ":" in netloc:
        host_part = netloc.split(":", 1)[0]
    normalised = _normalise_host(host_part)
    if normalised is None:
        return None
    host, loopback = normalised
    if port is None:
        port = _SCHEMES[parts.scheme]
    if port == 0:
        return None
    path = _split_path(parts.path)
    if path is None:
        return None
    return _Origin(parts.scheme, host, port, path, loopback)


def _split_path(path: str) -> tuple[str, ...] | None:
    """Path segments (one trailing '/' ignored); None if the path has empty, '.' or '..' segments."""
    if _ENCODED_PATH_TRICK.search(path):
        return None
    if not path:
        return ()
    if not path.startswith("/"):
        return None
    inner = path[1:]
    if inner.endswith("/"):
        inner = inner[:-1]
    if not inner:
        return ()
    segments = tuple(inner.split("/"))
    if any(segment in ("", ".", "..") for segment in segments):
        return None
    return segments


def _check_query(query: Any) -> str:
    """Validate a relative FHIR query; return the resource type for messages. Raises FhirFetchFailed."""
    if not isinstance(query, str) or not query or len(query) > 8192:
        raise FhirFetchFailed("FHIR query rejected: empty or too long")
    if _CONTROL_OR_SPACE.search(query) or "\\" in query or "#" in query:
        raise FhirFetchFailed("FHIR query rejected: contains characters that are not allowed")
    path = query.split("?", 1)[0]
    if path.startswith("/") or ":" in path or not path:
        raise FhirFetchFailed("FHIR query rejected: not a relative FHIR query")
    if _ENCODED_PATH_TRICK.search(path):
        raise FhirFetchFailed("FHIR query rejected: encoded separator in path")
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise FhirFetchFailed("FHIR query rejected: empty or dot path segment")
    resource_type = segments[0]
    if not _RESOURCE_TYPE.match(resource_type):
        raise FhirFetchFailed("FHIR query rejected: does not start with a resource type")
    return resource_type


class FhirClient:
    """Reads FHIR resources and searches from allow-listed servers.

    ``allowed_servers`` are base URLs (``https://ehr.example.org/fhir``); a ``fhirServer`` is
    allowed when it has the same scheme, host and port and its path equals or extends the
    allowed path on a segment boundary. With ``allow_loopback`` (development only) any literal
    loopback address (``127.0.0.0/8``, ``[::1]``) and ``localhost`` is allowed too.

    Requests go out through one ``urllib3`` pool manager (``requests`` costs 1–2 ms of CPU per
    request on top of it, which a wave of 15 queries pays one after another under the GIL). It
    never reads environment proxies or ``~/.netrc``; pass a ``urllib3.ProxyManager`` as ``http``
    to use an egress proxy. Certificates are checked against certifi's bundle, as ``requests`` did.
    """

    def __init__(
        self,
        *,
        allowed_servers: tuple[str, ...],
        allow_loopback: bool,
        connect_timeout: float = 1.0,
        read_timeout: float = 3.0,
        max_pages: int = 5,
        max_response_bytes: int = 8 * 1024 * 1024,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        http: urllib3.PoolManager | None = None,
        decode_json: Callable[[bytes], Any] = msgspec.json.decode,
    ):
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("FHIR timeouts must be positive")
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        origins = []
        for server in allowed_servers:
            origin = _parse_origin(server)
            if origin is None:
                raise ValueError(f"not an acceptable FHIR base URL in the allow-list: {server!r}")
            origins.append(origin)
        self._allowed: tuple[_Origin, ...] = tuple(origins)
        self.allow_loopback = allow_loopback
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_pages = max_pages
        self.max_response_bytes = max_response_bytes
        self.max_concurrency = max_concurrency
        if http is None:
            # One warm connection per concurrent query to each of up to 8 FHIR servers.
            http = urllib3.PoolManager(num_pools=8, maxsize=max_concurrency, retries=False,
                                       cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
        self._http = http
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        #: Bytes → the document; the app passes the chart's typed decoder (chart.decoding), which
        #: keeps only what the chart reads. Whatever it gives is read through :func:`member`.
        self._decode_json = decode_json
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Close the pooled connections and the fetch threads."""
        self._http.clear()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.shutdown(wait=False, cancel_futures=True)

    def read_all(self, keys: list[str], read: Callable[[str], Any]) -> dict[str, Any]:
        """``read(key)`` for every key at once (one wave, at most ``max_concurrency`` in flight, on the
        process's shared pool): key → its answer or the :class:`PrefetchUnavailable` it raised.
        Once one fails, reads not yet started are dropped (the call fails anyway)."""
        if len(keys) == 1:
            try:
                return {keys[0]: read(keys[0])}
            except PrefetchUnavailable as error:
                return {keys[0]: error}
        futures = {key: self._shared_pool().submit(read, key) for key in keys}
        outcomes: dict[str, Any] = {}
        for key, future in futures.items():
            try:
                outcomes[key] = future.result()
            except CancelledError:
                continue
            except PrefetchUnavailable as error:
                outcomes[key] = error
                for other in futures.values():
                    other.cancel()  # queued reads are dropped; running ones end within their timeouts
        return outcomes

    def _shared_pool(self) -> ThreadPoolExecutor:
        """One pool of fetch threads per process, shared by all hook calls (made after a fork)."""
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="fhir-fetch")
                self._pool_pid = os.getpid()
            return self._pool

    # -- allow-list -------------------------------------------------------------------------

    def is_allowed(self, base_url: str) -> bool:
        """True if ``base_url`` may be called. Never raises, never does I/O (no DNS lookups)."""
        return self._allowed_origin(base_url) is not None

    def _allowed_origin(self, base_url: Any) -> _Origin | None:
        origin = _parse_origin(base_url)
        if origin is None:
            return None
        if self.allow_loopback and origin.loopback:
            return origin
        if any(allowed.contains(origin) for allowed in self._allowed):
            return origin
        return None

    # -- fetching ---------------------------------------------------------------------------

    def fetch(self, base_url: str, query: str, access_token: str | None) -> dict:
        """GET ``{base_url}/{query}`` and return the JSON object (a searchset's pages merged).

        Raises :class:`FhirServerNotAllowed` (before any I/O) or :class:`FhirFetchFailed`.
        An ``OperationOutcome`` answered with 200 is returned as it is.
        """
        origin = self._checked_origin(base_url)
        resource_type = _check_query(query)
        headers = _headers(access_token)
        url = f"{origin.url()}/{query}"
        first = self._get_json(url, headers, resource_type)
        next_url = next_link(first)
        if member(first, "resourceType") != "Bundle" or next_url is None:
            return first
        pages = self._read_pages(origin, headers, resource_type, next_url, seen={url})
        merged: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        total = member(first, "total")
        if total is not None:
            merged["total"] = total
        if pages.unread_next is not None:
            merged["link"] = [{"relation": "next", "url": pages.unread_next}]
        merged["entry"] = list(_entries(first)) + pages.entries
        return merged

    def may_follow(self, base_url: str, next_url: Any) -> bool:
        """Whether ``next_url`` is a page this client would read for ``base_url`` (no I/O)."""
        origin = self._allowed_origin(base_url)
        return origin is not None and _lies_under(origin, next_url)

    def fetch_next_pages(self, base_url: str, next_url: str, access_token: str | None,
                         *, pages_read: int = 1) -> "Pages":
        """Read the pages from ``next_url`` on (a paged Bundle someone else read, e.g. the EHR's prefetch).

        ``pages_read`` counts the pages already read, so that ``max_pages`` bounds the whole search.
        Pages are read only under ``base_url``, itself allow-listed; raises like :meth:`fetch`.
        """
        origin = self._checked_origin(base_url)
        return self._read_pages(origin, _headers(access_token), "search", next_url, seen=set(), pages=pages_read)

    def _checked_origin(self, base_url: Any) -> _Origin:
        origin = self._allowed_origin(base_url)
        if origin is None:
            raise FhirServerNotAllowed("fhirServer is not on the allow-list of FHIR servers")
        return origin

    def _read_pages(self, origin: _Origin, headers: dict[str, str], resource_type: str, next_url: str | None,
                    *, seen: set[str], pages: int = 1) -> "Pages":
        """Follow ``link[next]`` under ``origin`` up to ``max_pages`` pages in all; the first unread link is kept."""
        entries: list = []
        while next_url is not None:
            if not _lies_under(origin, next_url) or next_url in seen:
                log.warning("FHIR %s search: next link outside the base or repeated; not followed", resource_type)
                return Pages(entries, next_url, "outside")
            if pages >= self.max_pages:
                log.warning("FHIR %s search: stopped after %d pages", resource_type, pages)
                return Pages(entries, next_url, "limit")
            seen.add(next_url)
            page = self._get_json(next_url, headers, resource_type)
            if member(page, "resourceType") != "Bundle":
                raise FhirFetchFailed(f"FHIR {resource_type} search: a next page is not a Bundle")
            entries.extend(_entries(page))
            pages += 1
            next_url = next_link(page)
        return Pages(entries, None, None)

    def _get_json(self, url: str, headers: dict[str, str], resource_type: str) -> Any:
        what = f"FHIR {resource_type} request"
        deadline = time.monotonic() + self.connect_timeout + self.read_timeout
        try:
            # The server's connection pool, then the request target: a third less CPU per request
            # than PoolManager.request, which parses and routes every URL again.
            parts = urlsplit(url)
            response = self._http.connection_from_url(url).urlopen(
                "GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers,
                timeout=self._timeout, redirect=False, retries=False, preload_content=False, assert_same_host=False,
            )
        except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise FhirFetchFailed(f"{what} timed out") from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            log.warning("%s failed: %s", what, type(exc).__name__)
            raise FhirFetchFailed(f"{what} failed: connection error") from None
        try:
            if response.status != 200:
                log.warning("%s answered HTTP %d", what, response.status)
                raise FhirFetchFailed(f"{what} answered HTTP {response.status}")
            body = self._read_body(response, what, deadline)
        except BaseException:
            response.close()  # unread bytes may remain: this connection must not go back to the pool
            raise
        response.release_conn()  # read to the end: the connection is reused
        try:
            document = self._decode_json(body)  # msgspec, like the request's decoder: integers of any size
        except (msgspec.DecodeError, RecursionError):
            raise FhirFetchFailed(f"{what}: response is not JSON") from None
        if not isinstance(member(document, "resourceType"), str):
            raise FhirFetchFailed(f"{what}: response is not a FHIR resource")
        return document

    def _read_body(self, response: urllib3.BaseHTTPResponse, what: str, deadline: float) -> bytes:
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise FhirFetchFailed(f"{what}: response larger than {limit} bytes")
        read = getattr(response, "read1", None) or response.read  # read1 returns what is there, no waiting for a full chunk
        buffer = bytearray()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise FhirFetchFailed(f"{what} timed out reading the response")
                chunk = read(_CHUNK, decode_content=True)
                if not chunk:
                    break
                buffer += chunk
                if len(buffer) > limit:
                    raise FhirFetchFailed(f"{what}: response larger than {limit} bytes")
        except FhirFetchFailed:
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
                raise FhirFetchFailed(f"{what} timed out reading the response") from None
            log.warning("%s failed reading the response: %s", what, type(exc).__name__)
            raise FhirFetchFailed(f"{what} failed reading the response") from None
        return bytes(buffer)


def _lies_under(origin: _Origin, url: Any) -> bool:
    """An absolute URL under ``origin`` with nothing that could smuggle it elsewhere."""
    if not isinstance(url, str) or _CONTROL_OR_SPACE.search(url) or "\\" in url or "#" in url:
        return False
    target = _parse_origin(url.split("?", 1)[0])
    return target is not None and origin.contains(target)


def _headers(access_token: Any) -> dict[str, str]:
    headers = {"Accept": FHIR_JSON}
    if access_token:
        if not isinstance(access_token, str) or _CONTROL.search(access_token):
            raise FhirFetchFailed("FHIR access token is malformed")
        headers["Authorization"] = f"Bearer {access_token}"
    return headers


def next_link(value: Any) -> str | None:
    """The ``link[next]`` URL of a Bundle (a plain dict or a decoded object), else ``None``."""
    if member(value, "resourceType") != "Bundle":
        return None
    links = member(value, "link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def member(value: Any, name: str) -> Any:
    """An element of a resource held as a dict (fetched JSON) or as a decoded object (the request's)."""
    if isinstance(value, dict):
        return value.get(name)
    return getattr(value, name, None)


def _entries(bundle: Any) -> list:
    entries = member(bundle, "entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise FhirFetchFailed("FHIR search: Bundle.entry is not a list")
    return entries
