"""Seeded decisions and feedback for the console tests, written through the store's real paths.

The expected figures are counted here from the seeded list itself, independently of the rollups
the console reads, so a rollup that miscounts makes the tests fail.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cds_service.audit.records import CardRecord, DecisionRecord, patient_hash, user_hash

KEY = b"k" * 32
SCENARIOS = ("breast-distant-surveillance-asymptomatic", "rectal-post-treatment-surveillance", None)
RATINGS = ("usually-appropriate", "may-be-appropriate", "usually-not-appropriate")
# Codes of the service's own override reasons (knowledge/override_reasons.json).
REASONS = (("symptoms-not-recorded", "The patient has symptoms or findings that the chart does not show yet"),
           ("imaging-done-elsewhere", "Relevant imaging was done at another site and is not in this record"),
           ("patient-informed-choice", "The patient chose this study after discussing benefits and harms"))
FIRST_DAY = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
DAYS = 5


@dataclass
class Seeded:
    orders: int = 0
    cards: int = 0
    silent: int = 0
    by_outcome: Counter = field(default_factory=Counter)
    by_rating: Counter = field(default_factory=Counter)
    feedback: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    by_scenario: dict = field(default_factory=dict)
    latencies: dict = field(default_factory=dict)   # day -> [ms]
    card_uuids: list = field(default_factory=list)


def make_decision(rnd: random.Random, i: int) -> DecisionRecord:
    day = FIRST_DAY + timedelta(days=i % DAYS, minutes=i)
    scenario = SCENARIOS[i % len(SCENARIOS)]
    outcome = "rated" if scenario else ("no-criteria-apply" if i % 2 else "not-rated")
    rating = RATINGS[rnd.randrange(3)] if outcome == "rated" else None
    cards = ()
    if rating in ("may-be-appropriate", "usually-not-appropriate"):
        cards = tuple(CardRecord(uuid=f"card-{i}-{n}", indicator="warning", summary="Consider another study",
                                 suggestion_uuids=(f"s-{i}-{n}",)) for n in range(1 + (i % 2)))
    return DecisionRecord(
        decided_at=day, service_id="onc-imaging-order-select" if i % 4 else "onc-imaging-order-sign",
        hook="order-select", hook_instance=f"hi-{i}", patient_hash=patient_hash(KEY, f"p{i % 17}"),
        order_codes=("http://www.ama-assn.org/go/cpt|71260",), order_ref=f"ServiceRequest/o{i}",
        scenario_id=scenario, rating=rating, pama_rating="appropriate" if rating else None, outcome=outcome,
        knowledge_version="2026.11" if i % 10 else "2026.10", consult_id=None,
        latency_ms=round(rnd.uniform(1.0, 40.0), 3), cards=cards, user_hash=user_hash(KEY, f"Practitioner/{i % 5}"))


def seed(store, n: int = 120, seed_value: int = 14) -> Seeded:
    rnd = random.Random(seed_value)
    out = Seeded()
    records = [make_decision(rnd, i) for i in range(n)]
    for start in range(0, n, 7):
        store.record_decisions(records[start:start + 7])
    for r in records:
        out.orders += 1
        out.cards += len(r.cards)
        out.silent += 0 if r.cards else 1
        out.by_outcome[r.outcome] += 1
        if r.rating:
            out.by_rating[r.rating] += 1
        s = out.by_scenario.setdefault(r.scenario_id, Counter())
        s["orders"] += 1
        s["cards"] += len(r.cards)
        out.latencies.setdefault(r.decided_at.date().isoformat(), []).append(r.latency_ms)
        for card in r.cards:
            out.card_uuids.append((card.uuid, r.scenario_id))
    _feedback(store, rnd, out, records[0].service_id)
    return out


def _feedback(store, rnd: random.Random, out: Seeded, _service: str) -> None:
    for number, (uuid, scenario) in enumerate(out.card_uuids):
        if number % 3 == 2:
            continue  # no feedback on every third card
        if number % 3 == 0:
            entry = {"card": uuid, "outcome": "accepted", "outcomeTimestamp": "2026-11-03T10:00:00Z",
                     "acceptedSuggestions": [{"id": "s"}]}
        else:
            code, display = REASONS[rnd.randrange(len(REASONS))]
            entry = {"card": uuid, "outcome": "overridden", "outcomeTimestamp": "2026-11-03T10:00:00Z",
                     "overrideReason": {"reason": {"system": "https://onc-imaging-cds.example/override-reason", "code": code,
                                                   "display": display}, "userComment": "free text"}}
            out.reasons[display] += 1
        store.record_feedback("onc-imaging-order-select", [entry])
        out.feedback[entry["outcome"]] += 1
        out.by_scenario[scenario][entry["outcome"]] += 1
