"""One hook call end to end: validate → complete prefetch → chart facts → assess → respond → audit.

This is the only place that knows the order of the steps; each step lives in its own module.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from cds_service.audit.records import instance_name, patient_hash, user_hash
from cds_service.cards.response import RatedOrder, build_response
from cds_service.chart.extract import extract_chart_facts
from cds_service.chart.facts import DraftOrder
from cds_service.chart.orders import read_draft_orders
from cds_service.config import Settings
from cds_service.errors import PrefetchUnavailable, Unauthorized
from cds_service.ehr.fhir_client import FhirClient
from cds_service.kb.model import Knowledge, normalise_code
from cds_service.observability import Metrics
from cds_service.ehr.prefetch_completion import complete_prefetch
from cds_service.hooks.prefetch import find_missing_prefetch
from cds_service.hooks.request import HookRequest, parse_hook_request
from cds_service.hooks.feedback import parse_feedback
from cds_service.hooks.services import ServiceDefinition
from cds_service.reasoning.assessment import OrderAssessment, Outcome
from cds_service.reasoning.engine import assess_orders
from cds_service.audit.store import CardRecord, DecisionRecord, ReplayedToken, Store

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

    def decide(self, service: ServiceDefinition, body: Any, *, today: date | None = None,
               jti: tuple[str, str, datetime] | None = None, record: bool = True) -> dict:
        """The answer to one hook call. ``jti`` (``(iss, jti, expires_at)`` of the caller's verified
        JWT) is remembered in the same transaction as the call's decisions, or on its own when the
        call ends without any; a token already used raises ``Unauthorized``. ``record=False`` (the
        console's "Try a chart") stores and counts no decision."""
        replay = _ReplayGuard(self.store, jti)
        try:
            return self._decide(service, body, today, replay, record)
        finally:
            replay.remember_if_unused()

    def _decide(self, service: ServiceDefinition, body: Any, today: date | None, replay: "_ReplayGuard",
                record: bool = True) -> dict:
        started = time.perf_counter()
        request = parse_hook_request(body, service)
        orders, _notes = read_draft_orders(request.context.get("draftOrders"), request.selections)
        # Orders with no usable code (the sandbox's `coding: [{}]`) or outside the catalogue need no
        # chart: answer at once, without touching the FHIR server.
        rateable = [o for o in orders if o.codes and self.knowledge.procedures_for(o.codes)]
        if not rateable:
            self._log(request, service, started, cards=0, outcome="nothing-to-rate")
            if record:
                self._audit_silent(request, service, [o for o in orders if o.codes], started, replay)
            return {"cards": []}

        prefetch = self._complete_prefetch(service, request)
        today = today or datetime.now(timezone.utc).date()
        chart = extract_chart_facts(prefetch, None, today, is_relevant=self.knowledge.knows_code,
                                    is_study=self._is_study_code)
        assessments = assess_orders(rateable, chart, self.knowledge)
        body_out, rated = build_response(
            assessments,
            self.knowledge,
            qcdsm_id=self.settings.qcdsm_id,
            cards_when_appropriate=self.settings.cards_when_appropriate,
            evidence_base_url=self.settings.public_base_url,
        )
        latency_ms = (time.perf_counter() - started) * 1000
        if record:
            self._audit(request, service, rated, latency_ms, replay)
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

    def _audit(self, request: HookRequest, service: ServiceDefinition, rated: list[RatedOrder], latency_ms: float,
               replay: "_ReplayGuard"):
        decided_at = datetime.now(timezone.utc)
        hashed = patient_hash(self.audit_key, request.patient_id)
        user_id = request.context.get("userId")
        clinician = user_hash(self.audit_key, user_id) if isinstance(user_id, str) and user_id else None
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
                user_hash=clinician,
            ))
        # One transaction for all orders of the call (and its JWT jti): ten orders are one commit.
        replay.record_with(records)

    def _audit_silent(self, request: HookRequest, service: ServiceDefinition, orders: list[DraftOrder], started: float,
                      replay: "_ReplayGuard"):
        """Orders we deliberately said nothing about are decisions too (outcome ``not-rated``)."""
        if not orders:
            return
        latency_ms = (time.perf_counter() - started) * 1000
        silent = [RatedOrder(OrderAssessment(order=o, outcome=Outcome.NOT_RATED, reason="study not in catalogue"), None, None, ()) for o in orders]
        self._audit(request, service, silent, latency_ms, replay)
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


class _ReplayGuard:
    """Remembers one call's JWT ``jti`` exactly once: with its decisions when there are any."""

    def __init__(self, store: Store, jti: tuple[str, str, datetime] | None):
        self._store, self._jti = store, jti

    def record_with(self, records: list[DecisionRecord]) -> None:
        jti, self._jti = self._jti, None
        try:
            self._store.record_decisions(records, jti=jti)
        except ReplayedToken:
            raise Unauthorized("jti already used (replay)") from None

    def remember_if_unused(self) -> None:
        """A call that failed or audited nothing still uses up its token."""
        jti, self._jti = self._jti, None
        if jti is not None and not self._store.remember_jti(*jti):
            raise Unauthorized("jti already used (replay)")
