"""Warm-up: one representative call per service through the whole pipeline, before serving.

Loads lazily-imported models, compiled JSON schemas and knowledge indexes, so the first clinical
request is not slow. Nothing is written to the audit store, nothing is counted, no FHIR server is
called. Under gunicorn's ``preload_app`` this runs once in the master, before the workers fork.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import orjson

log = logging.getLogger("cds_service.server.warmup")

WARM_UP_PATIENT = "warm-up-patient"


class _DiscardingStore:
    """Stands in for the store during warm-up: audit records of warm-up calls are not decisions."""

    def record_decisions(self, records, *, jti=None) -> None:
        pass

    def record_feedback(self, service_id, feedback) -> int:
        return 0

    def __getattr__(self, name):  # anything else the pipeline may need later: fail loudly, not write
        raise AttributeError(f"warm-up store has no {name!r}")


def warm_up_request(hook: str) -> dict:
    """A sandbox-shaped hook request with a small, complete prefetch (so no FHIR server is needed).

    PET/CT (CPT 78816) for personal history of breast cancer (SNOMED CT 415076002): a scenario the
    knowledge base rates, so the call goes through scenario matching, rating and card building.
    """
    order = {
        "resourceType": "ServiceRequest", "id": "warm-up-order", "status": "draft", "intent": "plan",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "78816"}]},
        "subject": {"reference": f"Patient/{WARM_UP_PATIENT}"},
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "415076002"}]}],
    }
    context = {
        "patientId": WARM_UP_PATIENT,
        "userId": "Practitioner/warm-up",
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]},
    }
    if hook == "order-select":
        context["selections"] = ["ServiceRequest/warm-up-order"]

    def bundle(*resources):
        return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
                "entry": [{"resource": r} for r in resources]}

    condition = {
        "resourceType": "Condition", "id": "warm-up-condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "remission"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254837009"}]},
        "subject": {"reference": f"Patient/{WARM_UP_PATIENT}"}, "onsetDateTime": "2021-03-01",
    }
    prefetch = {
        "patient": {"resourceType": "Patient", "id": WARM_UP_PATIENT, "gender": "female", "birthDate": "1970-01-01"},
        "conditions": bundle(condition),
    }
    return {
        "hookInstance": "00000000-0000-4000-8000-00000000cafe", "hook": hook, "context": context, "prefetch": prefetch,
    }


def _complete_prefetch(body: dict, templates) -> dict:
    """Every template key answered (an empty Bundle where the request has none): no FHIR call."""
    prefetch = dict(body["prefetch"])
    for key in templates:
        prefetch.setdefault(key, {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []})
    return {**body, "prefetch": prefetch}


def warm_up(app) -> None:
    """Run representative calls through the app without side effects; never prevents start-up."""
    cds = app.extensions["cds"]
    started = time.perf_counter()
    with cds.metrics.suspended():
        client = app.test_client()
        for path in ("/health", "/ready"):
            client.get(path)
        try:
            from cds_service.chart import orders, units
            from cds_service.hooks.request import decode_hook_body
            from cds_service.hooks.services import SERVICES

            orders.warm_up()  # the representative orders below are plain: they never reach the model
            units.warm_up()   # the UCUM registry (seconds to build) for results in mixed units

            decisions = dataclasses.replace(cds.decisions, store=_DiscardingStore())
            for service in SERVICES:
                # Through the HTTP layer's decoder, whose types are resolved on first use.
                body = _complete_prefetch(warm_up_request(service.hook), service.prefetch)
                decisions.decide(service, decode_hook_body(orjson.dumps(body)))
        except Exception as error:  # a warm-up failure must not stop the service; it is reported
            log.warning("warm-up incomplete", extra={"error": type(error).__name__})
        else:
            cds.warmed = True
    log.info("warm-up done", extra={"latency_ms": round((time.perf_counter() - started) * 1000, 1)})
