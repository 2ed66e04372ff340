"""HTTP layer: routes, CORS, body limits, JWT, and the mapping of errors to JSON answers.

Each route is a line or two into ``DecisionService``; no medicine and no FHIR here.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import msgspec
import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from cds_service.audit.backend import DatabaseUnavailable
from cds_service.errors import (CdsError, InvalidRequest, PayloadTooLarge, ServiceUnavailable, Unauthorized,
                                UnknownService)
from cds_service.hooks.request import decode_hook_body
from cds_service.hooks.services import SERVICES_BY_ID, ServiceDefinition, discovery_document

log = logging.getLogger("cds_service.server.routes")
bp = Blueprint("cds", __name__)

CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_ALLOW_METHODS = "GET, POST, OPTIONS"
#: Seconds an EHR is told to wait after a database fault (a lock or restart usually clears by then).
DATABASE_RETRY_AFTER_S = 5


def json_response(body, status: int = 200) -> Response:
    # msgspec rather than orjson: answers echo the draft order, and JSON (hence a request)
    # may hold integers beyond 64 bits, which orjson refuses to write.
    return Response(msgspec.json.encode(body), status=status, mimetype="application/json")


def _cds():
    return current_app.extensions["cds"]


# --- routes ------------------------------------------------------------------------------------


@bp.get("/cds-services")
def discovery():
    _authenticate()
    return json_response(discovery_document())


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    started = time.perf_counter()
    service = SERVICES_BY_ID.get(service_id)
    # The service label is ours, never the caller's string, so metric cardinality stays bounded.
    label, hook = (service.id, service.hook) if service else ("unknown", "unknown")
    status = 500
    try:
        if service is None:
            raise UnknownService(f"no CDS service with id {service_id!r}")
        jti = _authenticate(remember_jti=False)
        body = _json_body(decode_hook_body)
        response = json_response(_cds().decisions.decide(service, body, jti=jti))
        status = 200
        # Freeing a decoded 300-resource chart takes a few tenths of a millisecond: let that
        # happen once the answer has been written to the EHR, not while it waits for it.
        held = [body]
        del body
        response.call_on_close(held.clear)
        return response
    except CdsError as error:
        status = error.status
        raise
    except DatabaseUnavailable:
        status = 503
        raise
    finally:
        _cds().metrics.observe_request(label, hook, status, time.perf_counter() - started)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    service = _service(service_id)
    _authenticate()
    stored = _cds().decisions.record_feedback(service, _json_body())
    return json_response({"stored": stored})


@bp.get("/health")
def health():
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@bp.get("/ready")
def ready():
    """Readiness: knowledge loaded, models warmed, database takes a write (not just ``SELECT 1``)."""
    cds = _cds()
    problem = cds.store.write_problem()
    checks = {"knowledge": cds.knowledge.version, "database": problem is None, "warmed": cds.warmed}
    if problem:
        checks["database_problem"] = problem
    ok = bool(checks["database"] and checks["warmed"])
    response = json_response({"status": "ready" if ok else "not-ready", **checks}, 200 if ok else 503)
    if problem:
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


@bp.get("/metrics")
def metrics():
    body, content_type = _cds().metrics.render()
    return Response(body, mimetype=None, content_type=content_type)


# --- helpers -----------------------------------------------------------------------------------


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        raise UnknownService(f"no CDS service with id {service_id!r}")
    return service


def _authenticate(*, remember_jti: bool = True) -> tuple | None:
    """Verify the caller's JWT. With ``remember_jti=False`` its ``(iss, jti, expires_at)`` is
    returned for the decision audit to remember in its own transaction."""
    verifier = _cds().verifier
    if verifier is None:  # development mode without trusted issuers (announced at start-up)
        return None
    audience = _cds().settings.public_base_url.rstrip("/") + request.path
    g.jwt_claims = verifier.verify(request.headers.get("Authorization"), audience, remember_jti=remember_jti)
    return None if remember_jti else verifier.replay_entry(g.jwt_claims)


def _json_body(decode: Callable[[bytes], Any] = orjson.loads) -> Any:
    raw = _read_body(current_app.config["MAX_CONTENT_LENGTH"])
    if not raw:
        raise InvalidRequest("request body is empty; a JSON object is required")
    try:
        return decode(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"request body is not valid JSON: {error.msg} at position {error.pos}") from None


def _read_body(limit: int) -> bytes:
    """The request body in one read of at most ``limit`` bytes; ``PayloadTooLarge`` beyond.

    Not ``request.get_data()``: with a size limit set, werkzeug reads through its checking
    wrapper in 64 KiB steps and gunicorn copies its remaining buffer at every step, which for a
    300 KiB prefetch cost more than parsing it. A declared length over the limit is refused
    before anything is read; a chunked body that runs over is caught by the one bounded read.
    """
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    # Bounded by Content-Length (or by the server, for chunked bodies): never waits for more.
    raw = get_input_stream(request.environ, max_content_length=None).read(limit + 1)
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds {limit} bytes")


@bp.after_app_request
def _cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    allowed = _cds().settings.cors_origins
    if origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        if "*" not in allowed:
            response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
        response.headers["Access-Control-Max-Age"] = "600"
    return response


@bp.app_errorhandler(CdsError)
def _cds_error(error: CdsError):
    if isinstance(error, Unauthorized):
        # CDS Hooks best practice: 401 "without any additional information".
        log.info("request refused: unauthorized", extra={"status": 401, "error": error.message, "path": request.path})
        response = json_response({"error": error.code}, 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    log.info("request refused", extra={"status": error.status, "error": error.code, "path": request.path})
    body = {"error": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    response = json_response(body, error.status)
    if isinstance(error, ServiceUnavailable):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


@bp.app_errorhandler(DatabaseUnavailable)
def _database_unavailable(error: DatabaseUnavailable):
    # The store has logged the fault and discarded the connection; the caller may retry.
    return _cds_error(ServiceUnavailable(error.reason, retry_after=DATABASE_RETRY_AFTER_S))


@bp.app_errorhandler(HTTPException)
def _http_error(error: HTTPException):
    if isinstance(error, RequestEntityTooLarge):
        return _cds_error(_too_large(current_app.config["MAX_CONTENT_LENGTH"]))
    return json_response({"error": error.name.lower().replace(" ", "-"), "message": error.description}, error.code or 500)


@bp.app_errorhandler(Exception)
def _unexpected(error: Exception):
    # Never echo internals (or request data) to the caller; the log has the type, not the content.
    log.error("unexpected error", extra={"status": 500, "error": type(error).__name__, "path": request.path})
    current_app.logger.debug("unexpected error", exc_info=error)
    return json_response({"error": "internal-error", "message": "the service could not process this request"}, 500)
