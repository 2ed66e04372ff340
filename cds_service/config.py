"""Service configuration: embedded defaults, overridden by ``CDS_*`` environment variables.

Every setting is listed in the README's configuration table; keep the two in step.
Nothing here is read at import time: :func:`Settings.from_env` is called by the app factory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

DEVELOPMENT = "development"
PRODUCTION = "production"


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Settings:
    """All knobs of the service. Field name ``foo_bar`` is read from ``CDS_FOO_BAR``."""

    #: ``development`` (no JWT checks unless issuers are configured, loopback FHIR only, ``*`` CORS
    #: allowed) or ``production`` (refuses to start without trusted issuers).
    mode: str = DEVELOPMENT
    #: External base URL of this service, e.g. ``https://cds.example.org``; JWT ``aud`` is checked
    #: against ``{public_base_url}/cds-services[/{id}[/feedback]]``.
    public_base_url: str = "http://127.0.0.1:8080"
    #: ``sqlite:///path/to.db`` (default) or ``postgresql://user@host/db``.
    database_url: str = "sqlite:///var/cds-service.sqlite3"
    #: JSON file listing trusted JWT issuers (see docs/api.md, "Authentication").
    trusted_issuers_file: str = ""
    #: Base URLs of FHIR servers the service may call when prefetch is incomplete.
    allowed_fhir_servers: tuple[str, ...] = ()
    #: Browser origins allowed by CORS; ``*`` is accepted in development mode only.
    cors_origins: tuple[str, ...] = ("*",)
    #: Largest accepted request body; larger bodies get 413.
    max_body_bytes: int = 8 * 1024 * 1024
    fhir_connect_timeout: float = 1.0
    fhir_read_timeout: float = 3.0
    #: Bundle pages followed per prefetch query (``Bundle.link[next]``).
    fhir_max_pages: int = 5
    #: Prefetch queries fetched at once from a FHIR server (one wave for all templates).
    fhir_max_concurrency: int = 16
    #: Largest FHIR response body read from a FHIR server.
    fhir_max_response_bytes: int = 8 * 1024 * 1024
    #: Value of the ``pama-rating-qcdsm-consulted`` extension (a CMS G-code where one applies).
    qcdsm_id: str = "onc-imaging-cds"
    #: Show an info card even when the ordered study is already the recommended one.
    cards_when_appropriate: bool = False
    #: Replace the packaged knowledge base with this directory.
    knowledge_dir: str = ""
    #: Extra knowledge directories (site or licensed criteria) loaded on top of the base.
    knowledge_extra_dirs: tuple[str, ...] = ()
    #: Where digests of schema-validated knowledge files are kept, so that a restart validates only
    #: changed files; empty = ``$XDG_CACHE_HOME/onc-imaging-cds``, ``off`` = validate every start.
    knowledge_cache_dir: str = ""
    #: Allowed clock skew for JWT ``exp``/``iat``.
    jwt_leeway_seconds: int = 30
    #: Key for the keyed hash of patient ids in the audit log; generated and kept in the database
    #: when empty, so that all instances sharing a database hash alike.
    audit_hash_key: str = ""
    #: Committee console: show the ordering clinician's keyed hash on decision pages (off: never shown).
    console_show_clinicians: bool = False
    #: Committee console: send its session cookies with ``Secure`` (turn off only for plain-HTTP development).
    console_cookie_secure: bool = True
    log_level: str = "INFO"
    metrics_enabled: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``CDS_*`` variables, then apply keyword overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get("CDS_" + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _convert(f.type, raw, f.name)
        settings = cls(**values)
        return replace(settings, **overrides) if overrides else settings

    @property
    def knowledge_cache(self) -> str | None:
        """The knowledge validation cache directory, or None when it is switched off."""
        if self.knowledge_cache_dir.strip().lower() == "off":
            return None
        if self.knowledge_cache_dir:
            return self.knowledge_cache_dir
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(cache_home, "onc-imaging-cds")

    @property
    def development(self) -> bool:
        return self.mode == DEVELOPMENT

    def validate(self) -> None:
        """Refuse configurations that would be unsafe to serve with."""
        if self.mode not in (DEVELOPMENT, PRODUCTION):
            raise ValueError(f"CDS_MODE must be {DEVELOPMENT!r} or {PRODUCTION!r}, not {self.mode!r}")
        if self.mode == PRODUCTION:
            if not self.trusted_issuers_file:
                raise ValueError("production mode refuses to start without CDS_TRUSTED_ISSUERS_FILE")
            if "*" in self.cors_origins:
                raise ValueError("CDS_CORS_ORIGINS='*' is only allowed in development mode")
        if self.fhir_max_concurrency < 1:
            raise ValueError("CDS_FHIR_MAX_CONCURRENCY must be at least 1")
        if self.max_body_bytes <= 0:
            raise ValueError("CDS_MAX_BODY_BYTES must be positive")


def _convert(annotation: Any, raw: str, name: str) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("tuple"):
            return _split_list(raw)
        if kind == "bool":
            return _parse_bool(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"CDS_{name.upper()}: {exc}") from None
    return raw


SETTING_NAMES = tuple("CDS_" + f.name.upper() for f in fields(Settings))
