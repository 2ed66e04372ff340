"""CDS Hooks request bodies shaped exactly like the CDS Hooks sandbox's PAMA Imaging tab sends them."""

from __future__ import annotations

import uuid

from tests.fhir_builders import hook_request

CPT = "http://www.ama-assn.org/go/cpt"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SELECT_ID = "onc-imaging-order-select"
SIGN_ID = "onc-imaging-order-sign"


def imaging_order(cpt: str | None, reasons=(), order_id: str = "example-request-id", patient: str = "pat-onc-1") -> dict:
    """A draft ServiceRequest; ``reasons`` are SNOMED codes, or (system, code) pairs."""
    coding = {"system": CPT, "code": cpt} if cpt else {}
    resource = {
        "resourceType": "ServiceRequest",
        "id": order_id,
        "status": "draft",
        "intent": "plan",
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{patient}"},
        "reasonCode": [],
    }
    if cpt:
        resource["code"]["text"] = f"CPT {cpt}"
    for reason in reasons:
        system, code = reason if isinstance(reason, tuple) else (SNOMED, reason)
        resource["reasonCode"].append({"coding": [{"system": system, "code": code}], "text": code})
    return resource


def order_select(cpt: str | None, reasons=(), *, prefetch="all-null", fhir_server: str | None = None, patient="pat-onc-1") -> dict:
    """An order-select call. ``prefetch="all-null"`` says "no chart data" for every template key."""
    body = hook_request(imaging_order(cpt, reasons, patient=patient), hook="order-select", patient_id=patient,
                        fhir_server=fhir_server, hook_instance=str(uuid.uuid4()))
    return _with_prefetch(body, prefetch)


def order_sign(orders: list[dict], *, prefetch="all-null", patient="pat-onc-1") -> dict:
    body = hook_request(*orders, hook="order-sign", patient_id=patient, hook_instance=str(uuid.uuid4()))
    body["context"]["draftOrders"]["type"] = "collection"   # as the sandbox's order-sign sends it
    return _with_prefetch(body, prefetch)


def _with_prefetch(body: dict, prefetch) -> dict:
    if prefetch == "all-null":
        body["prefetch"] = null_prefetch()
    elif prefetch is not None:
        body["prefetch"] = prefetch
    return body


def null_prefetch() -> dict:
    from cds_service.hooks.services import PREFETCH_TEMPLATES

    return {key: None for key in PREFETCH_TEMPLATES}


def pama_ratings(response_json: dict) -> list[list[str]]:
    """The rating codings of each system action, as the sandbox reads them (extension.systemActions)."""
    found = []
    for action in response_json.get("extension", {}).get("systemActions", []):
        for ext in action["resource"].get("extension", []):
            if ext["url"] == "http://fhir.org/argonaut/Extension/pama-rating":
                found.append([c["code"] for c in ext["valueCodeableConcept"]["coding"]])
    return found
