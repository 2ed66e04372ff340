"""Application factory: settings → knowledge, store, JWT verifier, FHIR client → Flask app."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from flask import Flask

from cds_service.audit.records import instance_name, resolve_audit_key
from cds_service.security.jwt import JwtVerifier
from cds_service.config import Settings
from cds_service.console.knowledge_view import remember_knowledge
from cds_service.decision import DecisionService
from cds_service.chart.decoding import decode_fhir_json
from cds_service.ehr.fhir_client import FhirClient
from cds_service.kb.model import Knowledge
from cds_service.kb.loader import load_knowledge
from cds_service.observability import Metrics, configure_logging
from cds_service.audit.store import Store
from cds_service.server.warmup import warm_up

log = logging.getLogger("cds_service")


@dataclass
class CdsExtension:
    """What the web layer reaches through ``current_app.extensions["cds"]``."""

    settings: Settings
    knowledge: Knowledge
    store: Store
    verifier: JwtVerifier | None
    metrics: Metrics
    decisions: DecisionService
    warmed: bool = False


def create_app(settings: Settings | None = None, *, store: Store | None = None, knowledge: Knowledge | None = None) -> Flask:
    settings = settings or Settings.from_env()
    settings.validate()
    configure_logging(settings.log_level)

    knowledge = knowledge or load_knowledge(settings.knowledge_dir or None, settings.knowledge_extra_dirs,
                                            cache_dir=settings.knowledge_cache)
    if store is None:
        store = Store.from_url(settings.database_url)  # creates a SQLite file's directory itself
        store.init_schema()
    verifier = _build_verifier(settings, store)
    metrics = Metrics()
    metrics.set_knowledge_version(knowledge.version)
    fhir_client = FhirClient(
        allowed_servers=settings.allowed_fhir_servers,
        allow_loopback=settings.development,
        connect_timeout=settings.fhir_connect_timeout,
        read_timeout=settings.fhir_read_timeout,
        max_pages=settings.fhir_max_pages,
        max_response_bytes=settings.fhir_max_response_bytes,
        max_concurrency=settings.fhir_max_concurrency,
        decode_json=decode_fhir_json,
    )
    decisions = DecisionService(
        settings=settings,
        knowledge=knowledge,
        store=store,
        fhir_client=fhir_client,
        metrics=metrics,
        audit_key=resolve_audit_key(settings.audit_hash_key, store),
    )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["cds"] = CdsExtension(settings, knowledge, store, verifier, metrics, decisions)
    from cds_service.server.console_routes import bp as console_bp
    from cds_service.server.evidence_routes import bp as evidence_bp
    from cds_service.server.routes import bp

    app.register_blueprint(bp)
    app.register_blueprint(evidence_bp)
    app.register_blueprint(console_bp)
    remember_knowledge(store, knowledge)
    warm_up(app)
    log.info("service ready", extra={"knowledge_version": knowledge.version, "instance": instance_name()})
    return app


def _build_verifier(settings: Settings, store: Store) -> JwtVerifier | None:
    if settings.trusted_issuers_file:
        return JwtVerifier.from_file(
            settings.trusted_issuers_file, leeway_seconds=settings.jwt_leeway_seconds, replay_cache=store
        )
    # Only reachable in development mode: Settings.validate() refuses production without issuers.
    banner = (
        "DEVELOPMENT MODE: JWT verification is OFF (no CDS_TRUSTED_ISSUERS_FILE). Any caller can use "
        "this service and only loopback FHIR servers are reachable. Never expose it to a network."
    )
    log.warning(banner)
    print(f"\n*** {banner} ***\n", file=sys.stderr, flush=True)
    return None
