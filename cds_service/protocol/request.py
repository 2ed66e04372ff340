"""Validation of an incoming CDS Hooks service request.

Strict about what the hook needs, tolerant of everything else: unknown fields are ignored
(adding optional context fields is a minor hook change per CDS Hooks 2.0), ``Bundle.type`` is not
required on ``draftOrders``, and non-draft order statuses are accepted (order-sign 1.1 re-signing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InvalidRequest
from .schemas import problems
from .services import ORDER_SELECT, ServiceDefinition


@dataclass(frozen=True)
class HookRequest:
    hook: str
    hook_instance: str
    context: Mapping[str, Any]
    fhir_server: str | None = None
    access_token: str | None = None          # transient: never stored, never logged
    prefetch: Mapping[str, Any] | None = None

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]

    @property
    def selections(self) -> tuple[str, ...] | None:
        """The orders to focus on: ``selections`` for order-select, ``None`` (= all) for order-sign."""
        if self.hook == ORDER_SELECT:
            return tuple(self.context.get("selections") or ())
        return None


def parse_hook_request(body: Any, service: ServiceDefinition) -> HookRequest:
    """Check ``body`` against the request schema and the called service; raise ``InvalidRequest``."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    found = problems("request", body)
    hook = body.get("hook")
    if isinstance(hook, str) and hook != service.hook:
        found.insert(0, f"hook: service {service.id!r} answers {service.hook!r}, not {hook!r}")
    if found:
        raise InvalidRequest("invalid CDS Hooks request", details=found)

    authorization = body.get("fhirAuthorization") or {}
    return HookRequest(
        hook=hook,
        hook_instance=body["hookInstance"],
        context=body["context"],
        fhir_server=(body.get("fhirServer") or "").rstrip("/") or None,
        access_token=authorization.get("access_token"),
        prefetch=body.get("prefetch"),
    )
