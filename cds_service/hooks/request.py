"""Validation of an incoming CDS Hooks service request.

Strict about what the hook needs, tolerant of everything else: unknown fields are ignored
(adding optional context fields is a minor hook change per CDS Hooks 2.0), ``Bundle.type`` is not
required on ``draftOrders``, and non-draft order statuses are accepted (order-sign 1.1 re-signing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Union

import msgspec
import orjson

from cds_service.chart.decoding import AnyJsonValue, FhirObject
from cds_service.errors import InvalidRequest
from cds_service.hooks.limits import check_hook_body
from cds_service.hooks.schemas import problems, validator
from cds_service.hooks.services import ORDER_SELECT, REQUIRED_CONTEXT, ServiceDefinition


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


class _HookBody(msgspec.Struct):
    """The request members the service uses; any other member is skipped while parsing."""

    hook: Any = msgspec.UNSET
    hookInstance: Any = msgspec.UNSET
    fhirServer: Any = msgspec.UNSET
    fhirAuthorization: Any = msgspec.UNSET
    context: Any = msgspec.UNSET
    prefetch: Union[dict[str, AnyJsonValue], list, str, int, float, bool, None] = msgspec.UNSET


_HOOK_BODY = msgspec.json.Decoder(_HookBody)


def decode_hook_body(raw: bytes) -> Any:
    """A hook call's JSON body as a dict whose prefetch resources are ``chart.decoding.FhirObject``s.

    Only the elements the chart reads are decoded (see ``chart/decoding.py``); a body that does
    not fit (not an object, or not JSON at all) is decoded by ``orjson.loads`` instead, which
    raises ``orjson.JSONDecodeError`` for JSON that does not parse, so the caller's error message
    and every check downstream stay the same.
    """
    try:
        body = _HOOK_BODY.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # msgspec nests on the C stack; orjson stops at 1024
        return orjson.loads(raw)
    return {name: value for name in _HookBody.__struct_fields__
            if (value := getattr(body, name)) is not msgspec.UNSET}


def parse_hook_request(body: Any, service: ServiceDefinition) -> HookRequest:
    """Check ``body`` against the request schema and the called service; raise ``InvalidRequest``."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    check_hook_body(body)  # depth and array bounds first: the schema check is not bounded
    # The schema check needs plain JSON: decoded FhirObjects go back to dicts (errors only).
    found = [] if conforms_to_request_schema(body) else problems("request", msgspec.to_builtins(body))
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


# --- fast path ---------------------------------------------------------------------------------
# request.schema.json stays the contract and the source of every error message. Checking a valid
# request with jsonschema costs about 0.1 ms, a tenth of the service's own work on a typical call,
# so valid requests are recognised by this hand-written check of the same rules; anything it
# does not accept goes through the schema. tests/test_api.py cross-checks the two on hundreds of
# valid and invalid variants. The patterns are read from the schema, so they cannot drift.

_PROPERTIES = validator("request").schema["properties"]
_HOOK_INSTANCE = re.compile(_PROPERTIES["hookInstance"]["pattern"])
_FHIR_SERVER = re.compile(_PROPERTIES["fhirServer"]["pattern"])
_TOKEN_TYPE = re.compile(_PROPERTIES["fhirAuthorization"]["properties"]["token_type"]["pattern"])
_MAX_SELECTIONS = _PROPERTIES["context"]["properties"]["selections"]["maxItems"]


def _is_integer(value: Any) -> bool:
    # JSON Schema: 1 and 1.0 are integers, true is not.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _optional_string(mapping: Mapping[str, Any], key: str, min_length: int = 0) -> bool:
    value = mapping.get(key)
    return key not in mapping or (isinstance(value, str) and len(value) >= min_length)


def conforms_to_request_schema(body: Mapping[str, Any]) -> bool:
    """True only if ``body`` satisfies request.schema.json (False sends it to the full check)."""
    hook = body.get("hook")
    hook_instance = body.get("hookInstance")
    context = body.get("context")
    if not (isinstance(hook, str) and hook and isinstance(hook_instance, str)
            and _HOOK_INSTANCE.search(hook_instance) and isinstance(context, dict)):
        return False
    if "fhirServer" in body:
        server = body["fhirServer"]
        if not (isinstance(server, str) and _FHIR_SERVER.search(server)):
            return False
    if "fhirAuthorization" in body:
        auth = body["fhirAuthorization"]
        if not (isinstance(auth, dict) and "fhirServer" in body
                and isinstance(auth.get("access_token"), str) and auth["access_token"]
                and isinstance(auth.get("token_type"), str) and _TOKEN_TYPE.search(auth["token_type"])
                and ("expires_in" not in auth or _is_integer(auth["expires_in"]))
                and all(_optional_string(auth, key) for key in ("scope", "subject", "patient"))):
            return False
    if not (_optional_string(context, "userId", 1) and _optional_string(context, "patientId", 1)
            and _optional_string(context, "encounterId")):
        return False
    if "selections" in context:
        selections = context["selections"]
        if not (isinstance(selections, list) and len(selections) <= _MAX_SELECTIONS
                and all(isinstance(s, str) for s in selections)):
            return False
        if hook == ORDER_SELECT and not selections:
            return False
    if "draftOrders" in context and not isinstance(context["draftOrders"], dict):
        return False
    if any(key not in context for key in REQUIRED_CONTEXT.get(hook, ())):
        return False
    if "prefetch" in body:
        prefetch = body["prefetch"]
        if prefetch is not None:
            if not isinstance(prefetch, dict):
                return False
            if not all(value is None or isinstance(value, (dict, FhirObject, list)) for value in prefetch.values()):
                return False
    return True
