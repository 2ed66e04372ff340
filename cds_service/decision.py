"""One hook call end to end: validate → complete prefetch → chart facts → assess → respond → audit.

This is the only place that knows the order of the steps; each step lives in its own module.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from typing import Any

from cds_service.audit.records import instance_name, patient_hash
from cds_service.cards.response import RatedOrder, build_response
from cds_service.chart.extract import extract_chart_facts
from cds_service.chart.facts import ChartFacts, DraftOrder
from cds_service.chart.orders import read_draft_orders
from cds_service.config import Settings
from cds_service.errors import PrefetchUnavailable
from cds_service.ehr.fhir_client import FhirClient
from cds_service.kb.model import Knowledge, normalise_code
from cds_service.observability import Metrics
from cds_service.ehr.prefetch_completion import complete_prefetch
from cds_service.hooks.prefetch import find_missing_prefetch
from cds_service.hooks.request import HookRequest, parse_hook_request
from cds_service.hooks.feedback import parse_feedback
from cds_service.hooks.services import ServiceDefinition
from cds_service.reasoning.assessment import OrderAssessment, Outcome
from cds_service.reasoning.engine import assess_order
from cds_service.audit.store import CardRecord, DecisionRecord, Store

log = logging.getLogger("cds_service.decision")


@dataclass
class DecisionService:
    """Everything a hook call needs, built once by the app factory and shared by all requests.

    Holds no per-request state: every call works on its own locals (a long-lived service object that
    caches a request's answer is a known CDS Hooks server bug).
    """

    settings: Settings
    knowledge: Knowledge
    store: Store
    fhir_client: FhirClient
    metrics: Metrics
    audit_key: bytes

    def decide(self, service: ServiceDefinition, body: Any, *, today: date | None = None) -> dict:
        started = time.perf_counter()
        request = parse_hook_request(body, service)
        orders, _notes = read_draft_orders(request.context.get("draftOrders"), request.selections)
        # Orders with no usable code (the sandbox's `coding: [{}]`) or outside the catalogue need no
        # chart: answer at once, without touching the FHIR server.
        rateable = [o for o in orders if o.codes and self.knowledge.procedures_for(o.codes)]
        if not rateable:
            self._log(request, service, started, cards=0, outcome="nothing-to-rate")
            self._audit_silent(request, service, [o for o in orders if o.codes], started)
            return {"cards": []}

        prefetch = self._complete_prefetch(service, request)
        today = today or datetime.now(timezone.utc).date()
        chart = extract_chart_facts(prefetch, None, today, is_relevant=self.knowledge.knows_code,
                                    is_study=self._is_study_code)
        assessments = [assess_order(order, _with_order(chart, order, today), self.knowledge) for order in rateable]
        body_out, rated = build_response(
            assessments,
            self.knowledge,
            qcdsm_id=self.settings.qcdsm_id,
            cards_when_appropriate=self.settings.cards_when_appropriate,
            evidence_base_url=self.settings.public_base_url,
        )
        latency_ms = (time.perf_counter() - started) * 1000
        self._audit(request, service, rated, latency_ms)
        self._count(service, rated)
        self._log(
            request, service, started, cards=len(body_out["cards"]),
            outcome=",".join(sorted({r.assessment.outcome.value for r in rated})),
        )
        return body_out

    def _is_study_code(self, system: str, code: str) -> bool:
        """A code of a catalogue study: a Procedure coded with it is prior imaging too."""
        return normalise_code(system, code) in self.knowledge.code_index

    def record_feedback(self, service: ServiceDefinition, body: Any) -> int:
        entries = parse_feedback(body)
        stored = self.store.record_feedback(service.id, entries)
        for entry in entries:
            self.metrics.count_feedback(service.id, entry["outcome"])
        log.info("feedback stored", extra={"service_id": service.id, "cards": stored})
        return stored

    def _complete_prefetch(self, service: ServiceDefinition, request: HookRequest) -> dict:
        """Prefetch with missing keys fetched from the EHR's FHIR server (counted by outcome)."""
        must_fetch = bool(find_missing_prefetch(service.prefetch, request.prefetch))
        try:
            prefetch = complete_prefetch(
                templates=service.prefetch,
                prefetch=request.prefetch,
                context=request.context,
                fhir_server=request.fhir_server,
                access_token=request.access_token,
                client=self.fhir_client,
            )
        except PrefetchUnavailable as error:
            self.metrics.count_fhir_fetch(error.code)
            raise
        if must_fetch:
            self.metrics.count_fhir_fetch("ok")
        return prefetch

    # --- audit and telemetry -------------------------------------------------------------------

    def _audit(self, request: HookRequest, service: ServiceDefinition, rated: list[RatedOrder], latency_ms: float):
        decided_at = datetime.now(timezone.utc)
        hashed = patient_hash(self.audit_key, request.patient_id)
        records = []
        for item in rated:
            a = item.assessment
            records.append(DecisionRecord(
                decided_at=decided_at,
                service_id=service.id,
                hook=request.hook,
                hook_instance=request.hook_instance,
                patient_hash=hashed,
                order_codes=tuple(f"{c.system}|{c.code}" for c in a.order.codes),
                order_ref=a.order.reference,
                scenario_id=a.scenario.id if a.scenario else None,
                rating=a.rating.rating.value if a.rating and a.outcome is Outcome.RATED else None,
                pama_rating=item.pama_code,
                outcome=a.outcome.value,
                knowledge_version=self.knowledge.version,
                consult_id=item.consult_id,
                latency_ms=round(latency_ms, 3),
                cards=tuple(
                    CardRecord(
                        uuid=c.uuid, indicator=c.indicator, summary=c.summary,
                        suggestion_uuids=tuple(s.uuid for s in c.suggestions),
                    )
                    for c in item.cards
                ),
                instance=instance_name(),  # the worker's pid: the app is built before gunicorn forks
            ))
        # One transaction for all orders of the call: an order-sign of ten orders is one commit.
        self.store.record_decisions(records)

    def _audit_silent(self, request: HookRequest, service: ServiceDefinition, orders: list[DraftOrder], started: float):
        """Orders we deliberately said nothing about are decisions too (outcome ``not-rated``)."""
        if not orders:
            return
        latency_ms = (time.perf_counter() - started) * 1000
        silent = [RatedOrder(OrderAssessment(order=o, outcome=Outcome.NOT_RATED, reason="study not in catalogue"), None, None, ()) for o in orders]
        self._audit(request, service, silent, latency_ms)
        self._count(service, silent)

    def _count(self, service: ServiceDefinition, rated: list[RatedOrder]):
        for item in rated:
            a = item.assessment
            if a.outcome is Outcome.RATED and a.rating:
                self.metrics.count_rating(service.id, a.rating.rating.value)
            else:
                self.metrics.count_rating(service.id, a.outcome.value)
            for card in item.cards:
                self.metrics.count_card(service.id, card.indicator)

    def _log(self, request: HookRequest, service: ServiceDefinition, started: float, **fields):
        log.info(
            "hook answered",
            extra={
                "hook_instance": request.hook_instance,
                "service_id": service.id,
                "hook": request.hook,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "knowledge_version": self.knowledge.version,
                **fields,
            },
        )


def _with_order(chart: ChartFacts, order: DraftOrder, today: date) -> ChartFacts:
    """The chart plus this order's own reasons (each order of an order-sign has its own)."""
    own = extract_chart_facts(None, order, today)
    return replace(chart, facts=chart.facts + own.facts)
