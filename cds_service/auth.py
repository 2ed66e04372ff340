"""Verification of the JWT a CDS Client sends with every call (CDS Hooks 2.0, "Trusting CDS Clients").

A call is accepted only when every check below passes; the first one that fails raises
:class:`~cds_service.errors.Unauthorized` with a short reason for the log. The web layer answers
401 without any detail, as the specification's best practice asks.

The checks run cheapest first, and nothing touches the network until the token is known to come
from an allow-listed issuer and to be addressed to us (checklist X7):

1. ``Authorization: Bearer <compact JWS>`` is well formed;
2. header: ``alg`` is ES384 or RS384 (never ``none`` or HMAC), ``kid`` present, ``typ`` (if
   given) is ``JWT``, no ``crit``;
3. ``iss`` is on the allow-list, and ``jku`` (if given) equals that issuer's configured JWKS URL,
   so that a token can never make us fetch from a URL it chose;
4. claims, still unverified: ``iss``, ``aud``, ``exp``, ``iat``, ``jti`` present and well typed,
   ``aud`` names this service, ``exp``/``iat`` within the leeway, lifetime at most an hour,
   ``tenant`` allow-listed when the issuer has a tenant list;
5. signature, with the key ``kid`` selects from the issuer's JWKS (fetched from the configured
   URL with a short timeout and cached, or given inline); the key's type must fit ``alg``;
6. ``jti`` not seen before from this issuer; it is remembered until the token expires. This is
   last so that forged or expired tokens cannot fill the replay cache.

The token itself is never logged nor put in an exception message: reasons name the failed check
and, at most, a truncated ``repr`` of the offending header or claim value.

There is no ``sub`` claim in CDS Hooks 1.0 or 2.0; it is not required (checklist X3).
"""

from __future__ import annotations

import heapq
import http.client
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK, PyJWKClient
from jwt import exceptions as jwt_errors

from .errors import Unauthorized

__all__ = [
    "ALLOWED_ALGORITHMS",
    "JwtVerifier",
    "MemoryReplayCache",
    "ReplayCache",
    "TrustedIssuer",
    "load_trusted_issuers",
]

#: The only signing algorithms accepted. CDS Hooks 2.0 recommends exactly these two and forbids
#: ``none`` and every symmetric algorithm (checklist X5).
ALLOWED_ALGORITHMS = ("ES384", "RS384")
#: Claims every CDS Hooks JWT carries (checklist X3); ``tenant`` is optional, ``sub`` does not exist.
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")
#: A CDS Hooks JWT is well under 2 KB; the cap bounds the work an anonymous caller can cause.
MAX_TOKEN_CHARS = 8192
#: ``kid``, ``jti`` and ``tenant`` longer than this are refused, which bounds replay-cache memory.
MAX_ID_CHARS = 256
#: Tokens that live longer are refused: the replay cache must remember each ``jti`` for the
#: token's whole lifetime, and the CDS Hooks best practice is "no more than an hour" (checklist X7).
MAX_TOKEN_LIFETIME_SECONDS = 3600
#: RSA keys shorter than this are refused (NIST SP 800-131A).
MIN_RSA_KEY_BITS = 2048
#: A JWKS document is a few KB; a larger answer is a misbehaving server, not a key set.
MAX_JWKS_BYTES = 256 * 1024
#: After a failed JWKS download, calls fail at once for this long instead of each waiting for the
#: timeout again; otherwise requests queue behind a dead JWKS server, timeout after timeout.
JWKS_FAILURE_BACKOFF_SECONDS = 5.0
#: How long a downloaded JWKS is used before it is fetched again (PyJWT's default).
JWKS_CACHE_SECONDS = 300

_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", re.ASCII)
_ISSUER_FIELDS = ("iss", "jwks_url", "jwks", "tenants")


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedIssuer:
    """One CDS Client allowed to call us, and where its public keys come from.

    Exactly one of ``jwks_url`` and ``jwks`` is given. A token's ``jku`` header, when present, must
    equal ``jwks_url`` exactly; an issuer with an inline ``jwks`` therefore accepts no ``jku``.
    ``tenants``, when not empty, lists the ``tenant`` claim values accepted from this issuer.

    Instances are validated on construction, so an invalid issuer fails at start-up, not at the
    first call.
    """

    iss: str
    jwks_url: str | None = None
    # A dict is unhashable; leaving it out of the hash keeps the frozen dataclass hashable.
    jwks: dict | None = field(default=None, hash=False)
    tenants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"trusted issuer {self.iss!r}"
        if not isinstance(self.iss, str) or not self.iss or self.iss != self.iss.strip():
            raise ValueError(f"{where}: 'iss' must be a non-empty string without surrounding spaces")
        if (self.jwks_url is None) == (self.jwks is None):
            raise ValueError(f"{where}: give exactly one of 'jwks_url' or 'jwks'")
        if self.jwks_url is not None:
            _check_jwks_url(self.jwks_url, where)
        if self.jwks is not None:
            _inline_signing_keys(self.jwks, where)
        if isinstance(self.tenants, str) or not all(isinstance(t, str) and t for t in self.tenants):
            raise ValueError(f"{where}: 'tenants' must be a list of non-empty strings")
        object.__setattr__(self, "tenants", tuple(self.tenants))


def load_trusted_issuers(path: str | Path) -> tuple[TrustedIssuer, ...]:
    """Read ``{"issuers": [{"iss": ..., "jwks_url": ...} | {"iss": ..., "jwks": {...}}, ...]}``.

    Each entry may also carry ``tenants`` (a list of accepted ``tenant`` values) and a
    ``$comment``. Unknown fields are refused so that a typo (``jwks_uri``) fails at start-up
    instead of silently weakening the configuration. Every problem raises :class:`ValueError`
    naming the file and the entry.
    """
    path = Path(path)
    document = _read_json_file(path)
    entries = document.get("issuers") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'{path}: expected a JSON object {{"issuers": [...]}} with at least one issuer')
    unknown = sorted(set(document) - {"issuers", "$comment"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level field(s) {unknown}; expected 'issuers'")
    issuers = tuple(_issuer_from_json(entry, f"{path}: issuers[{index}]") for index, entry in enumerate(entries))
    _refuse_duplicate_issuers(issuers, str(path))
    return issuers


def _read_json_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise ValueError(f"{path}: cannot read trusted issuers file: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from None


def _issuer_from_json(entry: Any, where: str) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with 'iss' and 'jwks_url' or 'jwks'")
    unknown = sorted(set(entry) - set(_ISSUER_FIELDS) - {"$comment"})
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected {list(_ISSUER_FIELDS)}")
    if "iss" not in entry:
        raise ValueError(f"{where}: 'iss' is missing")
    tenants = entry.get("tenants", [])
    if not isinstance(tenants, list):
        raise ValueError(f"{where}: 'tenants' must be a list of strings")
    try:
        return TrustedIssuer(
            iss=entry["iss"], jwks_url=entry.get("jwks_url"), jwks=entry.get("jwks"), tenants=tuple(tenants)
        )
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _refuse_duplicate_issuers(issuers: Iterable[TrustedIssuer], where: str) -> None:
    seen: set[str] = set()
    for issuer in issuers:
        if issuer.iss in seen:
            raise ValueError(f"{where}: issuer {issuer.iss!r} is listed twice")
        seen.add(issuer.iss)


def _check_jwks_url(url: Any, where: str) -> None:
    # PyJWKClient refuses other schemes too; checking here reports the mistake at start-up.
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^/?#\s]+[^\s]*", url, re.ASCII):
        raise ValueError(f"{where}: 'jwks_url' must be an absolute http(s) URL, not {url!r}")


def _inline_signing_keys(jwks: Any, where: str) -> dict[str, PyJWK]:
    """Parse an inline JWKS into ``{kid: key}``, refusing what could only be a mistake.

    Symmetric (``oct``) keys are refused because CDS Hooks forbids HMAC signatures, and private
    key material because a verifier has no business holding it. A key without ``kid`` could never
    be selected (``kid`` is required in the token header), so it is refused rather than ignored.
    """
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError(f'{where}: \'jwks\' must be an object {{"keys": [...]}} with at least one key')
    parsed: dict[str, PyJWK] = {}
    for index, key in enumerate(keys):
        here = f"{where}: jwks.keys[{index}]"
        if not isinstance(key, dict):
            raise ValueError(f"{here}: not a JSON object")
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ValueError(f"{here}: 'kid' is missing")
        if kid in parsed:
            raise ValueError(f"{here}: kid {kid!r} appears twice")
        if key.get("kty") == "oct":
            raise ValueError(f"{here}: symmetric (oct) keys are not allowed; CDS Hooks forbids HMAC signatures")
        if "d" in key:
            raise ValueError(f"{here}: contains private key material ('d'); configure public keys only")
        if key.get("use", "sig") != "sig":
            continue  # an encryption key in a shared JWKS is not ours to use, but not an error
        try:
            parsed[kid] = PyJWK(key)
        except jwt_errors.PyJWTError as error:
            raise ValueError(f"{here}: not a usable public key ({type(error).__name__})") from None
    if not parsed:
        raise ValueError(f"{where}: 'jwks' has no signing keys")
    return parsed


# --- replay cache --------------------------------------------------------------------------------


class ReplayCache(Protocol):
    """Remembers ``(iss, jti)`` pairs until they expire. :class:`cds_service.store.Store` is one."""

    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record the pair; return ``True`` if it is new, ``False`` if it was seen and has not expired.

        Must be atomic: two concurrent calls with the same pair must not both return ``True``.
        ``expires_at`` is timezone-aware.
        """
        ...


class MemoryReplayCache:
    """Thread-safe in-process :class:`ReplayCache` (tests, and one-process deployments).

    Expired entries are dropped on every call, oldest first from a heap, so memory stays
    proportional to the tokens still alive (at most an hour's worth, see
    :data:`MAX_TOKEN_LIFETIME_SECONDS`). Not shared between processes: with several workers, use
    the database-backed store.
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None):
        #: Injectable so that expiry can be tested without sleeping.
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        self._expiry: dict[tuple[str, str], datetime] = {}
        self._heap: list[tuple[datetime, str, str]] = []

    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        if expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        now = self._clock()
        with self._lock:
            self._purge(now)
            if (iss, jti) in self._expiry:
                return False
            self._expiry[(iss, jti)] = expires_at
            heapq.heappush(self._heap, (expires_at, iss, jti))
            return True

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._expiry)

    def _purge(self, now: datetime) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, iss, jti = heapq.heappop(self._heap)
            self._expiry.pop((iss, jti), None)


# --- key sources ---------------------------------------------------------------------------------


class _KeySource(Protocol):
    def key_for(self, kid: str) -> PyJWK: ...


class _InlineKeys:
    """Keys exchanged out of band and written into the configuration (no ``jku``, no I/O)."""

    def __init__(self, issuer: TrustedIssuer):
        self._iss = issuer.iss
        self._keys = _inline_signing_keys(issuer.jwks, f"trusted issuer {issuer.iss!r}")

    def key_for(self, kid: str) -> PyJWK:
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized(f"unknown kid {_brief(kid)} for issuer {_brief(self._iss)}") from None


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
        where = f"JWKS of issuer {_brief(self._iss)}"
        try:
            return self._client.get_signing_key(kid)
        except jwt_errors.PyJWKClientConnectionError as error:
            raise Unauthorized(f"{where} unavailable: {error}") from None
        except jwt_errors.PyJWKClientError:
            raise Unauthorized(f"unknown kid {_brief(kid)} in {where}") from None
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
        raise jwt_errors.PyJWKClientConnectionError(f"{_brief(str(error.reason))}") from None
    except (OSError, http.client.HTTPException) as error:  # timeouts, resets
        raise jwt_errors.PyJWKClientConnectionError(type(error).__name__) from None
    except (ValueError, RecursionError) as error:  # not JSON, too big, too slow
        raise jwt_errors.PyJWKClientConnectionError(f"bad answer: {_brief(str(error))}") from None


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


# --- the verifier --------------------------------------------------------------------------------

# PyJWT failures → reasons for the log. Looked up along the exception's MRO, so the most specific
# entry wins; PyJWT's own messages are not used, which keeps token content out of every reason.
_PYJWT_REASONS: dict[type[Exception], str] = {
    jwt_errors.ExpiredSignatureError: "token expired",
    jwt_errors.ImmatureSignatureError: "token not yet valid (iat or nbf in the future)",
    jwt_errors.InvalidAudienceError: "audience does not name this service",
    jwt_errors.InvalidIssuerError: "issuer mismatch",
    jwt_errors.InvalidIssuedAtError: "iat is not a number",
    jwt_errors.InvalidSignatureError: "signature does not verify",
    jwt_errors.InvalidAlgorithmError: "algorithm not allowed",
    jwt_errors.InvalidKeyError: "key unusable for this algorithm",
    jwt_errors.DecodeError: "malformed token",
}


class JwtVerifier:
    """Checks CDS Hooks bearer JWTs against a fixed list of trusted issuers.

    Safe to share between threads: after construction only the JWKS clients (locked inside
    PyJWT) and the replay cache (thread-safe by contract) change.
    """

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        *,
        leeway_seconds: int = 30,
        replay_cache: ReplayCache,
        jwks_timeout: float = 2.0,
    ):
        issuers = tuple(issuers)
        if not issuers:
            # A verifier that refuses every call is a configuration mistake, not a policy.
            raise ValueError("JwtVerifier needs at least one trusted issuer")
        _refuse_duplicate_issuers(issuers, "JwtVerifier")
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        if not (jwks_timeout > 0 and math.isfinite(jwks_timeout)):
            raise ValueError("jwks_timeout must be a positive number of seconds")
        self._issuers = {issuer.iss: issuer for issuer in issuers}
        self._keys: dict[str, _KeySource] = {issuer.iss: _key_source(issuer, jwks_timeout) for issuer in issuers}
        self._leeway = leeway_seconds
        self._replay_cache = replay_cache

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        leeway_seconds: int = 30,
        replay_cache: ReplayCache,
        jwks_timeout: float = 2.0,
    ) -> "JwtVerifier":
        """Build a verifier from a trusted-issuers file (see :func:`load_trusted_issuers`)."""
        return cls(
            load_trusted_issuers(path),
            leeway_seconds=leeway_seconds,
            replay_cache=replay_cache,
            jwks_timeout=jwks_timeout,
        )

    @property
    def issuers(self) -> tuple[TrustedIssuer, ...]:
        return tuple(self._issuers.values())

    def verify(self, authorization_header: str | None, audience: str) -> dict:
        """Return the claims of a valid token, or raise :class:`Unauthorized`.

        ``audience`` is the external URL of the endpoint being called, e.g.
        ``https://cds.example.org/cds-services/{id}`` (checklist X4); it is compared exactly.
        """
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be the URL of the CDS Service endpoint being called")
        token = _bearer_token(authorization_header)
        header = _checked_header(token)
        issuer = self._trusted_issuer(_unverified_claims(token))
        _check_jku(header, issuer)
        # No network before this line: the issuer is allow-listed and the claims are addressed to
        # us and current, even though not yet proven authentic.
        self._check_claims(_decode(token, None, None, audience, issuer.iss, self._leeway), issuer)
        key = _public_key(self._keys[issuer.iss].key_for(header["kid"]), header["alg"])
        claims = _decode(token, key, header["alg"], audience, issuer.iss, self._leeway)
        self._check_replay(claims)
        return claims

    def _trusted_issuer(self, claims: dict) -> TrustedIssuer:
        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized(f"untrusted issuer {_brief(iss)}")
        return issuer

    def _check_claims(self, claims: dict, issuer: TrustedIssuer) -> None:
        """What PyJWT does not check: types, identifier lengths, lifetime, tenant."""
        for name in ("exp", "iat"):
            if isinstance(claims[name], bool) or not isinstance(claims[name], (int, float)):
                raise Unauthorized(f"{name} is not a number")
        if claims["exp"] - claims["iat"] > MAX_TOKEN_LIFETIME_SECONDS:
            raise Unauthorized(f"token lifetime exceeds {MAX_TOKEN_LIFETIME_SECONDS} s")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_ID_CHARS:
            raise Unauthorized("jti is not a non-empty string")
        if issuer.tenants:
            tenant = claims.get("tenant")
            if not isinstance(tenant, str) or tenant not in issuer.tenants:
                raise Unauthorized(f"tenant {_brief(tenant)} not allowed for issuer {_brief(issuer.iss)}")

    def _check_replay(self, claims: dict) -> None:
        # Remember past exp by the leeway: the token is still accepted until exp + leeway.
        expires_at = datetime.fromtimestamp(claims["exp"] + self._leeway, tz=timezone.utc)
        if not self._replay_cache.remember_jti(claims["iss"], claims["jti"], expires_at):
            raise Unauthorized(f"jti {_brief(claims['jti'])} already used (replay)")


def _key_source(issuer: TrustedIssuer, timeout: float) -> _KeySource:
    return _RemoteKeys(issuer, timeout) if issuer.jwks_url is not None else _InlineKeys(issuer)


def _bearer_token(authorization_header: str | None) -> str:
    """The compact JWS from ``Authorization: Bearer <token>`` (scheme case-insensitive, RFC 7235)."""
    if not isinstance(authorization_header, str) or not authorization_header.strip():
        raise Unauthorized("no Authorization header")
    if not authorization_header.isascii():
        raise Unauthorized("Authorization header is not ASCII")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized(f"Authorization scheme {_brief(scheme)} is not Bearer")
    token = token.strip(" ")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized(f"bearer token longer than {MAX_TOKEN_CHARS} characters")
    if not _JWS_COMPACT.fullmatch(token):
        raise Unauthorized("bearer token is not a compact JWS")
    return token


def _checked_header(token: str) -> dict:
    try:
        header = jwt.get_unverified_header(token)
    except jwt_errors.PyJWTError:
        raise Unauthorized("malformed JWT header") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        # The header never chooses an algorithm outside the list, whatever keys exist (X5).
        raise Unauthorized(f"algorithm {_brief(alg)} not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_ID_CHARS:
        raise Unauthorized("kid missing from JWT header")
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT":  # media types are case-insensitive (RFC 7515)
        raise Unauthorized(f"typ {_brief(typ)} is not JWT")
    if "crit" in header:
        # We implement no JWS extension; a critical one we ignored would change the meaning.
        raise Unauthorized("critical JWT header extensions are not supported")
    return header


def _unverified_claims(token: str) -> dict:
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt_errors.PyJWTError:
        raise Unauthorized("malformed JWT payload") from None


def _check_jku(header: dict, issuer: TrustedIssuer) -> None:
    # Checklist X6: the key URL is allow-listed with the issuer. Keys are only ever fetched from
    # issuer.jwks_url, so this check is about refusing tokens that disagree with the configuration.
    if "jku" in header and header["jku"] != issuer.jwks_url:
        raise Unauthorized(f"jku {_brief(header['jku'])} is not the JWKS URL configured for {_brief(issuer.iss)}")


def _public_key(jwk: PyJWK, alg: str) -> Any:
    """The key as a cryptography object, after checking that its type fits ``alg``.

    The raw key (not the PyJWK) goes to PyJWT, because PyJWK infers RS256 for an RSA key without
    an ``alg`` member and would then refuse RS384. The type check here gives the same protection
    against algorithm confusion: an RSA key only ever verifies RS384, a P-384 key only ES384.
    """
    key = jwk.key
    if alg == "ES384":
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)):
            raise Unauthorized(f"key {_brief(jwk.key_id)} is not a P-384 public key (alg ES384)")
    elif alg == "RS384":
        if not isinstance(key, rsa.RSAPublicKey):
            raise Unauthorized(f"key {_brief(jwk.key_id)} is not an RSA public key (alg RS384)")
        if key.key_size < MIN_RSA_KEY_BITS:
            raise Unauthorized(f"key {_brief(jwk.key_id)} is shorter than {MIN_RSA_KEY_BITS} bits")
    else:  # unreachable: _checked_header allows nothing else
        raise Unauthorized(f"algorithm {_brief(alg)} not allowed")
    return key


def _decode(token: str, key: Any, alg: str | None, audience: str, iss: str, leeway: int) -> dict:
    """Decode with every claim check; the signature too unless ``key`` is None.

    ``algorithms=[alg]``: ``alg`` is on :data:`ALLOWED_ALGORITHMS` and :func:`_public_key` has
    bound it to the key's type, so this is the configured algorithm, not the token's choice.
    """
    verify_signature = key is not None
    options = {
        "verify_signature": verify_signature,
        "verify_exp": True,
        "verify_iat": True,
        "verify_nbf": True,
        "verify_aud": True,
        "verify_iss": True,
        "verify_jti": True,
        "require": list(REQUIRED_CLAIMS),
    }
    try:
        return jwt.decode(
            token,
            key=key if verify_signature else "",
            algorithms=[alg] if alg else list(ALLOWED_ALGORITHMS),
            options=options,
            audience=audience,
            issuer=iss,
            leeway=leeway,
        )
    except jwt_errors.MissingRequiredClaimError as error:
        raise Unauthorized(f"required claim {_brief(error.claim)} missing") from None
    except jwt_errors.PyJWTError as error:
        raise Unauthorized(_pyjwt_reason(error)) from None


def _pyjwt_reason(error: Exception) -> str:
    for cls in type(error).__mro__:
        if cls in _PYJWT_REASONS:
            return _PYJWT_REASONS[cls]
    return f"invalid token ({type(error).__name__})"


def _brief(value: Any) -> str:
    """A log-safe rendering of an untrusted value: ``repr`` escapes control characters, and the
    length is capped so that a hostile header cannot flood the log."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
