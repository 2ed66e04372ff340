"""Where an issuer's public keys come from: inline in the configuration, or its JWKS URL.

Remote key sets are fetched only from the URL configured for the issuer (never from a URL a token
names), with a short timeout, a size cap, no redirects, a cache, and a back-off after a failure so
that requests do not queue behind a dead JWKS server.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any, Protocol

from jwt import PyJWK, PyJWKClient
from jwt import exceptions as jwt_errors

from cds_service.errors import Unauthorized
from cds_service.security.issuers import TrustedIssuer, inline_signing_keys

#: A JWKS document is a few KB; a larger answer is a misbehaving server, not a key set.
MAX_JWKS_BYTES = 256 * 1024


#: After a failed JWKS download, calls fail at once for this long instead of each waiting for the
#: timeout again; otherwise requests queue behind a dead JWKS server, timeout after timeout.
JWKS_FAILURE_BACKOFF_SECONDS = 5.0


#: How long a downloaded JWKS is used before it is fetched again (PyJWT's default).
JWKS_CACHE_SECONDS = 300


class KeySource(Protocol):
    def key_for(self, kid: str) -> PyJWK: ...


class _InlineKeys:
    """Keys exchanged out of band and written into the configuration (no ``jku``, no I/O)."""

    def __init__(self, issuer: TrustedIssuer):
        self._iss = issuer.iss
        self._keys = inline_signing_keys(issuer.jwks, f"trusted issuer {issuer.iss!r}")

    def key_for(self, kid: str) -> PyJWK:
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized(f"unknown kid {brief(kid)} for issuer {brief(self._iss)}") from None


class _RemoteKeys:
    """Keys from the issuer's configured JWKS URL, via one cached PyJWK client per issuer.

    The client is built from configuration only, never from a token's ``jku``. PyJWKClient caches
    the key set for :data:`JWKS_CACHE_SECONDS` and, on an unknown ``kid``, refetches at most once
    per cooldown (30 s), so random ``kid`` values cannot turn into a request storm.
    """

    def __init__(self, issuer: TrustedIssuer, timeout: float):
        assert issuer.jwks_url is not None
        self._iss = issuer.iss
        self._client = _BoundedJwkClient(issuer.jwks_url, timeout=timeout, lifespan=JWKS_CACHE_SECONDS)

    def key_for(self, kid: str) -> PyJWK:
        where = f"JWKS of issuer {brief(self._iss)}"
        try:
            return self._client.get_signing_key(kid)
        except jwt_errors.PyJWKClientConnectionError as error:
            raise Unauthorized(f"{where} unavailable: {error}") from None
        except jwt_errors.PyJWKClientError:
            raise Unauthorized(f"unknown kid {brief(kid)} in {where}") from None
        except (jwt_errors.PyJWTError, ValueError) as error:
            # e.g. a key set with no usable key; a broken JWKS must refuse the call, not crash it.
            raise Unauthorized(f"{where} unusable ({type(error).__name__})") from None


class _BoundedJwkClient(PyJWKClient):
    """PyJWKClient whose download is bounded in time and size and backs off after a failure.

    PyJWKClient's own download passes ``timeout`` to each socket operation only, so a server that
    answers slowly enough could hold a request indefinitely, and it reads any amount of data.
    ``fetch_data`` is the documented override point; the caching, ``kid`` matching and refetch
    cooldown stay PyJWT's. Redirects are refused, as PyJWT does, so the allow-listed URL cannot
    send us elsewhere.
    """

    def __init__(self, uri: str, *, timeout: float, lifespan: float):
        super().__init__(uri, timeout=timeout, lifespan=lifespan)
        self._retry_after = 0.0  # monotonic time before which downloads are not attempted

    def fetch_data(self) -> Any:
        # Called with the client's lock held: requests queued behind a failed download see the
        # back-off at once instead of each waiting for the timeout again.
        if time.monotonic() < self._retry_after:
            raise jwt_errors.PyJWKClientConnectionError("recent download failed; backing off")
        try:
            data = _download_json(self.uri, self.timeout)
            if self.jwk_set_cache is not None:
                self.jwk_set_cache.put(data)  # parses the keys: a set with no usable key fails here
        except (jwt_errors.PyJWKClientConnectionError, jwt_errors.PyJWKSetError):
            self._retry_after = time.monotonic() + JWKS_FAILURE_BACKOFF_SECONDS
            raise
        # PyJWT's fetch_data records this too; its unknown-kid refetch cooldown depends on it.
        self._last_successful_fetch = time.monotonic()
        return data


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None  # urllib then raises HTTPError for the 3xx answer


def _download_json(url: str, timeout: float) -> Any:
    """GET ``url`` and parse JSON; every failure becomes ``PyJWKClientConnectionError``.

    Connecting and waiting for the headers are bounded by ``timeout`` per socket operation; the
    body must also arrive within ``timeout`` of the start in total.
    """
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    opener = urllib.request.build_opener(_RefuseRedirects())
    try:
        with opener.open(request, timeout=timeout) as response:
            body = _read_bounded(response, deadline)
        return json.loads(body)
    except urllib.error.HTTPError as error:
        error.close()  # it holds the response; an unclosed one warns at garbage collection
        raise jwt_errors.PyJWKClientConnectionError(f"HTTP {error.code}") from None
    except urllib.error.URLError as error:
        raise jwt_errors.PyJWKClientConnectionError(f"{brief(str(error.reason))}") from None
    except (OSError, http.client.HTTPException) as error:  # timeouts, resets
        raise jwt_errors.PyJWKClientConnectionError(type(error).__name__) from None
    except (ValueError, RecursionError) as error:  # not JSON, too big, too slow
        raise jwt_errors.PyJWKClientConnectionError(f"bad answer: {brief(str(error))}") from None


def _read_bounded(response: http.client.HTTPResponse, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_JWKS_BYTES:
        raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise ValueError("JWKS download exceeded its time limit")
        chunk = response.read1(16384)  # whatever has arrived, so the deadline is checked often
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_JWKS_BYTES:
            raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        chunks.append(chunk)


def key_source(issuer: TrustedIssuer, timeout: float) -> KeySource:
    return _RemoteKeys(issuer, timeout) if issuer.jwks_url is not None else _InlineKeys(issuer)


def brief(value: Any) -> str:
    """A log-safe rendering of an untrusted value: ``repr`` escapes control characters, and the
    length is capped so that a hostile header cannot flood the log."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
