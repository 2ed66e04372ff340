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
import json
import math
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms
from jwt.utils import base64url_decode

from cds_service.errors import Unauthorized
from cds_service.security.issuers import TrustedIssuer, load_trusted_issuers, refuse_duplicate_issuers
from cds_service.security.jwks import KeySource, brief, key_source

__all__ = [
    "ALLOWED_ALGORITHMS",
    "JwtVerifier",
    "MemoryReplayCache",
    "ReplayCache",
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

_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", re.ASCII)


# --- configuration -------------------------------------------------------------------------------


# --- replay cache --------------------------------------------------------------------------------


class ReplayCache(Protocol):
    """Remembers ``(iss, jti)`` pairs until they expire. :class:`cds_service.audit.store.Store` is one."""

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


# --- the verifier --------------------------------------------------------------------------------

# PyJWT failures → reasons for the log. Looked up along the exception's MRO, so the most specific
# entry wins; PyJWT's own messages are not used, which keeps token content out of every reason.
#: Verifiers of the accepted algorithms (PyJWT's own implementations).
_ALGORITHMS = {name: get_default_algorithms()[name] for name in ALLOWED_ALGORITHMS}


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
        refuse_duplicate_issuers(issuers, "JwtVerifier")
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        if not (jwks_timeout > 0 and math.isfinite(jwks_timeout)):
            raise ValueError("jwks_timeout must be a positive number of seconds")
        self._issuers = {issuer.iss: issuer for issuer in issuers}
        self._keys: dict[str, KeySource] = {issuer.iss: key_source(issuer, jwks_timeout) for issuer in issuers}
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

    def verify(self, authorization_header: str | None, audience: str, *, remember_jti: bool = True) -> dict:
        """Return the claims of a valid token, or raise :class:`Unauthorized`.

        ``audience`` is the external URL of the endpoint being called, e.g.
        ``https://cds.example.org/cds-services/{id}`` (checklist X4); it is compared exactly.
        The token is decoded once: its header and claims are checked before any key is looked up
        (so nothing touches the network for a token not addressed to us), then its signature.
        With ``remember_jti=False`` the caller records the ``jti`` itself (:meth:`replay_entry`),
        in the same transaction as the decision it audits.
        """
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be the URL of the CDS Service endpoint being called")
        token = _ParsedToken.from_compact(_bearer_token(authorization_header))
        header = _checked_header(token.header)
        issuer = self._trusted_issuer(token.claims)
        _check_jku(header, issuer)
        _check_registered_claims(token.claims, audience, issuer.iss, self._leeway)
        self._check_claims(token.claims, issuer)
        # No network before this line: the issuer is allow-listed and the claims are addressed to
        # us and current, even though not yet proven authentic.
        key = _public_key(self._keys[issuer.iss].key_for(header["kid"]), header["alg"])
        token.verify_signature(key, header["alg"])
        if remember_jti:
            self._check_replay(token.claims)
        return token.claims

    def replay_entry(self, claims: dict) -> tuple[str, str, datetime]:
        """``(iss, jti, expires_at)`` to remember for a verified token (see ``remember_jti``)."""
        # Remember past exp by the leeway: the token is still accepted until exp + leeway.
        expires_at = datetime.fromtimestamp(claims["exp"] + self._leeway, tz=timezone.utc)
        return claims["iss"], claims["jti"], expires_at

    def _trusted_issuer(self, claims: dict) -> TrustedIssuer:
        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized(f"untrusted issuer {brief(iss)}")
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
                raise Unauthorized(f"tenant {brief(tenant)} not allowed for issuer {brief(issuer.iss)}")

    def _check_replay(self, claims: dict) -> None:
        if not self._replay_cache.remember_jti(*self.replay_entry(claims)):
            raise Unauthorized(f"jti {brief(claims['jti'])} already used (replay)")


def _bearer_token(authorization_header: str | None) -> str:
    """The compact JWS from ``Authorization: Bearer <token>`` (scheme case-insensitive, RFC 7235)."""
    if not isinstance(authorization_header, str) or not authorization_header.strip():
        raise Unauthorized("no Authorization header")
    if not authorization_header.isascii():
        raise Unauthorized("Authorization header is not ASCII")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        # Not a bearer token: the value may be a password or an API key, so none of it is logged.
        raise Unauthorized("Authorization scheme is not Bearer")
    token = token.strip(" ")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized(f"bearer token longer than {MAX_TOKEN_CHARS} characters")
    if not _JWS_COMPACT.fullmatch(token):
        raise Unauthorized("bearer token is not a compact JWS")
    return token


def _checked_header(header: dict) -> dict:
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        # The header never chooses an algorithm outside the list, whatever keys exist (X5).
        raise Unauthorized(f"algorithm {brief(alg)} not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_ID_CHARS:
        raise Unauthorized("kid missing from JWT header")
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT":  # media types are case-insensitive (RFC 7515)
        raise Unauthorized(f"typ {brief(typ)} is not JWT")
    if "crit" in header:
        # We implement no JWS extension; a critical one we ignored would change the meaning.
        raise Unauthorized("critical JWT header extensions are not supported")
    return header


class _ParsedToken:
    """A compact JWS split and decoded once: header, claims, and what the signature covers."""

    __slots__ = ("header", "claims", "signing_input", "signature")

    def __init__(self, header: dict, claims: dict, signing_input: bytes, signature: bytes):
        self.header, self.claims, self.signing_input, self.signature = header, claims, signing_input, signature

    @classmethod
    def from_compact(cls, token: str) -> "_ParsedToken":
        encoded_header, encoded_claims, encoded_signature = token.split(".")
        header = _json_segment(encoded_header, "header")
        claims = _json_segment(encoded_claims, "payload")
        try:
            signature = base64url_decode(encoded_signature.encode("ascii"))
        except (ValueError, TypeError):
            raise Unauthorized("malformed JWT signature") from None
        return cls(header, claims, f"{encoded_header}.{encoded_claims}".encode("ascii"), signature)

    def verify_signature(self, key: Any, alg: str) -> None:
        """``alg`` is on :data:`ALLOWED_ALGORITHMS` and :func:`_public_key` has bound it to the key's
        type, so this is the configured algorithm, not the token's choice."""
        if not _ALGORITHMS[alg].verify(self.signing_input, key, self.signature):
            raise Unauthorized("signature does not verify")


def _json_segment(segment: str, name: str) -> dict:
    try:
        value = json.loads(base64url_decode(segment.encode("ascii")))
    except (ValueError, TypeError, UnicodeDecodeError):
        raise Unauthorized(f"malformed JWT {name}") from None
    if not isinstance(value, dict):
        raise Unauthorized(f"malformed JWT {name}")
    return value


def _check_registered_claims(claims: dict, audience: str, iss: str, leeway: int) -> None:
    """RFC 7519 claims: present (CDS Hooks requires iss, aud, exp, iat, jti), well typed, current
    within ``leeway`` seconds, addressed to ``audience`` and issued by ``iss``."""
    for name in REQUIRED_CLAIMS:
        if name not in claims:
            raise Unauthorized(f"required claim {brief(name)} missing")
    now = time.time()
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))
                               or not math.isfinite(value)):
            raise Unauthorized(f"{name} is not a number")
    if claims["exp"] <= now - leeway:
        raise Unauthorized("token expired")
    if claims["iat"] > now + leeway or claims.get("nbf", 0) > now + leeway:
        raise Unauthorized("token not yet valid (iat or nbf in the future)")
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences) or audience not in audiences:
        raise Unauthorized("audience does not name this service")
    if claims["iss"] != iss:
        raise Unauthorized("issuer mismatch")


def _check_jku(header: dict, issuer: TrustedIssuer) -> None:
    # Checklist X6: the key URL is allow-listed with the issuer. Keys are only ever fetched from
    # issuer.jwks_url, so this check is about refusing tokens that disagree with the configuration.
    if "jku" in header and header["jku"] != issuer.jwks_url:
        raise Unauthorized(f"jku {brief(header['jku'])} is not the JWKS URL configured for {brief(issuer.iss)}")


def _public_key(jwk: PyJWK, alg: str) -> Any:
    """The key as a cryptography object, after checking that its type fits ``alg``.

    The raw key (not the PyJWK) goes to PyJWT, because PyJWK infers RS256 for an RSA key without
    an ``alg`` member and would then refuse RS384. The type check here gives the same protection
    against algorithm confusion: an RSA key only ever verifies RS384, a P-384 key only ES384.
    """
    key = jwk.key
    if alg == "ES384":
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)):
            raise Unauthorized(f"key {brief(jwk.key_id)} is not a P-384 public key (alg ES384)")
    elif alg == "RS384":
        if not isinstance(key, rsa.RSAPublicKey):
            raise Unauthorized(f"key {brief(jwk.key_id)} is not an RSA public key (alg RS384)")
        if key.key_size < MIN_RSA_KEY_BITS:
            raise Unauthorized(f"key {brief(jwk.key_id)} is shorter than {MIN_RSA_KEY_BITS} bits")
    else:  # unreachable: _checked_header allows nothing else
        raise Unauthorized(f"algorithm {brief(alg)} not allowed")
    return key



