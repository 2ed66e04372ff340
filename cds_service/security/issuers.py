"""Trusted CDS Clients: the issuer allow-list read from ``CDS_TRUSTED_ISSUERS_FILE``.

Every issuer is validated when the file is read, so a bad configuration fails at start-up and not
at the first call. Inline key sets are checked here too (only public signing keys).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from jwt import PyJWK
from jwt import exceptions as jwt_errors

_ISSUER_FIELDS = ("iss", "jwks_url", "jwks", "tenants")


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
            inline_signing_keys(self.jwks, where)
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
    refuse_duplicate_issuers(issuers, str(path))
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


def refuse_duplicate_issuers(issuers: Iterable[TrustedIssuer], where: str) -> None:
    seen: set[str] = set()
    for issuer in issuers:
        if issuer.iss in seen:
            raise ValueError(f"{where}: issuer {issuer.iss!r} is listed twice")
        seen.add(issuer.iss)


def _check_jwks_url(url: Any, where: str) -> None:
    # PyJWKClient refuses other schemes too; checking here reports the mistake at start-up.
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^/?#\s]+[^\s]*", url, re.ASCII):
        raise ValueError(f"{where}: 'jwks_url' must be an absolute http(s) URL, not {url!r}")


def inline_signing_keys(jwks: Any, where: str) -> dict[str, PyJWK]:
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
