"""Production entry point: ``gunicorn -c python:cds_service.gunicorn_conf cds_service.wsgi:app``.

Importing this module builds the app from ``CDS_*`` variables in **production** mode unless
``CDS_MODE`` says otherwise, runs one representative hook call per service through the whole
decision pipeline (nothing is written to the audit store, nothing is counted in the metrics, no
FHIR server is called), then freezes the garbage collector. With gunicorn's ``preload_app`` this
all happens once in the master, before the workers are forked, so:

* the first clinical request of every worker does not pay for lazy imports, model classes,
  compiled JSON schemas or knowledge indexes;
* no database connection is inherited by the workers (each opens its own);
* ``gc.freeze()`` moves everything built so far into a permanent generation that the collector no
  longer scans, so workers neither spend time on it (tail latency) nor touch its pages (which would
  un-share the copy-on-write memory).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import time

from .app import create_app
from .config import PRODUCTION, Settings

log = logging.getLogger("cds_service.wsgi")

WARM_UP_PATIENT = "warm-up-patient"


def settings_from_env() -> Settings:
    """``Settings.from_env()``, but production unless ``CDS_MODE`` is set."""
    environ = dict(os.environ)
    environ.setdefault("CDS_MODE", PRODUCTION)
    return Settings.from_env(environ)


class _DiscardingStore:
    """Stands in for the store during warm-up: audit records of warm-up calls are not decisions."""

    def record_decision(self, record) -> None:
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
            from .protocol.services import SERVICES

            decisions = dataclasses.replace(cds.decisions, store=_DiscardingStore())
            for service in SERVICES:
                decisions.decide(service, _complete_prefetch(warm_up_request(service.hook), service.prefetch))
        except Exception as error:  # a warm-up failure must not stop the service; it is reported
            log.warning("warm-up incomplete", extra={"error": type(error).__name__})
    log.info("warm-up done", extra={"latency_ms": round((time.perf_counter() - started) * 1000, 1)})


def release_connections_before_fork(store) -> None:
    """Close the database connections the master opened (schema, audit key, warm-up ``/ready``).

    gunicorn forks the workers from this process: a pooled connection inherited by several
    workers would be one PostgreSQL session (or one SQLite handle) used by all of them at once.
    The master serves no requests, so after this it opens no new connection.
    """
    public = getattr(store, "close_idle_connections", None)
    if callable(public):
        public()
        return
    # TODO(lead): replace with a public Store method; until then, drain the pool here.
    lock, idle = getattr(store, "_lock", None), getattr(store, "_idle", None)
    if lock is None or idle is None:
        return
    with lock:
        connections, store._idle = list(idle), []
    for conn in connections:
        try:
            conn.close()
        except Exception:  # closing a broken connection: nothing to release
            pass


app = create_app(settings_from_env())
warm_up(app)
release_connections_before_fork(app.extensions["cds"].store)
# Everything allocated so far lives as long as the process: take it out of the collector's scans.
gc.collect()
gc.freeze()
