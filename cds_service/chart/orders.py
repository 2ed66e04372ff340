"""Draft orders from ``context.draftOrders``: which ServiceRequests to rate, and why others were skipped.

``order-select`` rates only the orders named in ``context.selections`` ("ServiceRequest/id");
``order-sign`` (``selections=None``) rates every ServiceRequest in the Bundle. Other request
types (MedicationRequest, NutritionOrder, DeviceRequest, VisionPrescription, ...) are skipped
with a note: they are legitimate in ``draftOrders`` but this service rates imaging only.

Validation policy for each ServiceRequest
-----------------------------------------
The two elements a rating depends on, ``ServiceRequest.code`` and each ``reasonCode``, are
validated with the fhir.resources R4B ``CodeableConcept`` model, but only to find **wrong
JSON types** (a string where an object is expected, ``coding`` that is not a list, a number
where a string is expected, ...). Errors that only mean "not strictly valid R4" are tolerated,
because EHRs and the CDS Hooks sandbox send them on every call: missing 1..1 elements (the
sandbox sends no ``authoredOn``; some clients send no ``subject``), unknown or R5-only elements,
format/regex failures (untrimmed codes, ``dateTime`` without a timezone, ids with ``_``), and
failures of the model itself. The rest of the ServiceRequest is not validated: nothing else is
read from it (validating the whole resource cost twice as much, ~65 µs an order, for no use).
Most concepts are plain (every member of its JSON type, no extensions, no nulls) and cannot hold a
wrong-type error: a strict msgspec check recognises those in a microsecond or two, and only the
others are given to the model (cross-checked against the model in the tests).

* A wrong type anywhere inside ``ServiceRequest.code`` makes the order's code unusable: the
  order is skipped with a note (rating a half-read code could rate the wrong study).
* A wrong type in a ``reasonCode`` entry does not stop the order: the entry is ignored and noted.
* An order whose code has no coding with both ``system`` and ``code`` (the sandbox's
  ``"code": {"coding": [{}]}`` after "remove study") is *returned* with empty ``codes``: it is a
  valid "not yet specified" order and the caller answers ``{"cards": []}`` quickly.

The fields are always read from the dict, never from the model, so the result does not depend
on whether validation passed. Notes never contain patient data: only entry positions,
resource types and order ids.

Importing the R4B models costs 100-200 ms and the first validation another few ms (lazy class
loading); :func:`warm_up` does both and is meant to be called once at application start.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import msgspec

from fhir.resources.R4B.codeableconcept import CodeableConcept as _CodeableConceptModel

from cds_service.chart.decoding import as_codeable_concept
from cds_service.chart.facts import Code, DraftOrder
from cds_service.chart.fhirjson import codings_of, text_of

#: Pydantic error types that mean "wrong JSON type", as opposed to "not strictly valid R4".
#: ``json_invalid``: pydantic tried to read a string as a JSON object; ``model_validation_format``:
#: fhir-core's message for a non-object given to a complex element.
_WRONG_TYPE_ERRORS = frozenset({"json_invalid", "model_validation_format", "model_type", "dict_type",
                                "model_attributes_type", "is_instance_of", "dataclass_type"})

_MAX_NOTES = 20


def read_draft_orders(draft_orders: Any, selections: Sequence[str] | None) -> tuple[list[DraftOrder], list[str]]:
    """Return the ServiceRequests to rate and notes about every entry that was skipped.

    :param draft_orders: ``context.draftOrders`` as received (a Bundle; ``Bundle.type`` is not
        required). Anything else gives no orders and a note; this function never raises.
    :param selections: ``context.selections`` for order-select (only those orders are rated),
        ``None`` for order-sign (all ServiceRequests are rated).
    """
    notes: list[str] = []
    entries = _bundle_entries(draft_orders, notes)
    if entries is None:
        return [], notes

    wanted = _selected_references(selections, notes)
    matched: set[str] = set()
    orders: list[DraftOrder] = []
    for index, entry in enumerate(entries):
        where = f"draftOrders.entry[{index}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            notes.append(f"{where}: skipped, no resource object")
            continue
        resource_type = resource.get("resourceType")
        resource_id = resource.get("id") if isinstance(resource.get("id"), str) else None
        names = _names_of(resource_type, resource_id, entry.get("fullUrl"))
        if wanted is not None:
            selected = names & wanted
            if not selected:
                continue  # not selected: not rated, and not worth a note
            matched |= selected
        if resource_type != "ServiceRequest":
            kind = resource_type if isinstance(resource_type, str) else "entry without resourceType"
            notes.append(f"{where}: {kind} skipped, only ServiceRequest orders are rated")
            continue
        order = _read_service_request(resource, resource_id, where, notes)
        if order is not None:
            orders.append(order)

    if wanted is not None:
        for reference in sorted(wanted - matched):
            notes.append(f"selections: {reference} is not in draftOrders")
    if len(notes) > _MAX_NOTES:  # a junk Bundle must not turn into thousands of log lines
        notes[_MAX_NOTES:] = [f"... and {len(notes) - _MAX_NOTES} more notes"]
    return orders, notes


def warm_up() -> None:
    """Exercise the R4B model once, so the first order with an unusual code is not slow.

    Called directly, not through :func:`_shape_errors`: a plain concept would pass the fast check
    and never reach the model, whose first validation (and first extension) costs milliseconds.
    """
    _model_shape_errors({"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "70450",
                                     "display": "CT head"}], "text": "CT head",
                         "extension": [{"url": "http://example.org/warm-up", "valueString": "x"}]})


# ---------------------------------------------------------------------------------------------
# draftOrders and selections


def _bundle_entries(draft_orders: Any, notes: list[str]) -> list[Any] | None:
    if draft_orders is None:
        notes.append("draftOrders: missing")
        return None
    if not isinstance(draft_orders, dict) or draft_orders.get("resourceType") != "Bundle":
        notes.append("draftOrders: not a FHIR Bundle, no order read")
        return None
    entries = draft_orders.get("entry")
    if entries is None:
        notes.append("draftOrders: Bundle has no entries")
        return None
    if not isinstance(entries, list):
        notes.append("draftOrders: Bundle.entry is not a list, no order read")
        return None
    return entries


def _selected_references(selections: Sequence[str] | None, notes: list[str]) -> set[str] | None:
    if selections is None:
        return None
    if isinstance(selections, str):  # a lone "ServiceRequest/x" instead of a list: be lenient
        selections = [selections]
    if not isinstance(selections, (list, tuple)):
        notes.append("selections: not a list, nothing selected")
        return set()
    usable = [s.strip() for s in selections if isinstance(s, str) and s.strip()]
    if len(usable) != len(selections):
        notes.append("selections: non-string or empty items ignored")
    return set(usable)


def _names_of(resource_type: Any, resource_id: str | None, full_url: Any) -> set[str]:
    """Strings a selection may use for this entry: "Type/id", and the entry's fullUrl forms."""
    names: set[str] = set()
    if isinstance(resource_type, str) and resource_id:
        names.add(f"{resource_type}/{resource_id}")
    if isinstance(full_url, str) and full_url:
        names.add(full_url)  # e.g. "urn:uuid:..." for orders that have no id yet
    return names


# ---------------------------------------------------------------------------------------------
# one ServiceRequest


def _read_service_request(resource: dict, resource_id: str | None, where: str,
                          notes: list[str]) -> DraftOrder | None:
    label = f"{where} (ServiceRequest/{resource_id})" if resource_id else where
    extension = resource.get("extension")
    if extension is not None and not (isinstance(extension, list) and all(isinstance(e, dict) for e in extension)):
        notes.append(f"{label}: malformed extension left out of the rating action")
    code = resource.get("code")
    if code is not None and (not isinstance(code, dict) or _shape_errors(code)):
        notes.append(f"{label}: skipped, ServiceRequest.code is malformed")
        return None

    reason_codes: list[Code] = []
    reasons = resource.get("reasonCode")
    malformed_reasons = reasons is not None and not isinstance(reasons, list)
    if isinstance(reasons, list):
        for reason in reasons:
            if isinstance(reason, dict):
                reason_codes.extend(codings_of(as_codeable_concept(reason)))
            malformed_reasons = malformed_reasons or not isinstance(reason, dict) or bool(_shape_errors(reason))
    if malformed_reasons:
        notes.append(f"{label}: malformed reasonCode entries ignored")

    concept = as_codeable_concept(code)
    return DraftOrder(
        resource=resource,
        resource_id=resource_id,
        codes=codings_of(concept),
        reason_codes=tuple(reason_codes),
        text=text_of(concept),
    )


class _PlainCoding(msgspec.Struct, forbid_unknown_fields=True):
    id: str = ""
    system: str = ""
    version: str = ""
    code: str = ""
    display: str = ""
    userSelected: bool = False


class _PlainConcept(msgspec.Struct, forbid_unknown_fields=True):
    """A CodeableConcept whose every member has its R4 JSON type, with no extensions: such a
    concept cannot hold a wrong-type error, so the R4B model need not be asked (it costs tens of
    microseconds a concept; this check one or two)."""

    id: str = ""
    coding: list[_PlainCoding] = []
    text: str = ""


def _shape_errors(concept: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Locations of wrong-JSON-type errors the R4B model finds in a CodeableConcept (empty when none or unknown)."""
    try:
        msgspec.convert(concept, _PlainConcept)
        return []
    except (msgspec.ValidationError, RecursionError):
        # Something unusual (an extension, a null, a wrong type): the R4B model decides.
        return _model_shape_errors(concept)


def _model_shape_errors(concept: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    try:
        _CodeableConceptModel.model_validate(concept)
    except Exception as error:  # ValidationError, and KeyError/TypeError raised inside fhir-core
        errors = getattr(error, "errors", None)
        if not callable(errors):
            return []  # the model itself failed: no type information, the dict reader decides
        try:
            details = errors()
        except Exception:
            return []
        return [tuple(d.get("loc", ())) for d in details
                if d.get("type", "").endswith("_type") or d.get("type") in _WRONG_TYPE_ERRORS]
    return []
