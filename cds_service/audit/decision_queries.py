"""The decision list (paged, filtered) and one decision with its cards and feedback, for the console.

Pages are read newest first through the ``decided_at`` indexes, ``PAGE_SIZE`` rows at a time; the
filters are bound parameters, never SQL text. Nothing returned names a patient or a clinician:
the patient is the keyed hash, and the clinician's keyed hash only when the caller asks for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from cds_service.audit.store import Store

PAGE_SIZE = 50
FEEDBACK_FILTERS = ("accepted", "overridden", "none")


@dataclass(frozen=True)
class DecisionFilter:
    start: date
    end: date
    service: str | None = None
    scenario: str | None = None       # '' = decisions without a scenario
    rating: str | None = None
    outcome: str | None = None        # rated | no-criteria-apply | not-rated
    feedback: str | None = None       # accepted | overridden | none


@dataclass
class DecisionRow:
    id: int
    decided_at: datetime
    service_id: str
    scenario_id: str | None
    rating: str | None
    outcome: str
    latency_ms: float
    knowledge_version: str
    order_codes: list[str]
    cards: int = 0
    feedback: list[str] = field(default_factory=list)


@dataclass
class DecisionDetail:
    row: DecisionRow
    hook: str
    hook_instance: str
    patient_hash: str
    user_hash: str | None
    pama_rating: str | None
    cards: list[dict]
    feedback: list[dict]


def _conditions(tx, f: DecisionFilter) -> tuple[str, list]:
    start = datetime.combine(f.start, datetime.min.time())
    end = datetime.combine(f.end + timedelta(days=1), datetime.min.time())
    clauses, params = ["d.decided_at >= ?", "d.decided_at < ?"], [tx.ts(start), tx.ts(end)]
    for column, value in (("service_id", f.service), ("rating", f.rating), ("outcome", f.outcome)):
        if value:
            clauses.append(f"d.{column} = ?")
            params.append(value)
    if f.scenario == "":
        clauses.append("d.scenario_id IS NULL")
    elif f.scenario:
        clauses.append("d.scenario_id = ?")
        params.append(f.scenario)
    if f.feedback in ("accepted", "overridden"):
        clauses.append("EXISTS (SELECT 1 FROM feedback fb WHERE fb.decision_id = d.id AND fb.outcome = ?)")
        params.append(f.feedback)
    elif f.feedback == "none":
        clauses.append("NOT EXISTS (SELECT 1 FROM feedback fb WHERE fb.decision_id = d.id)")
    return " AND ".join(clauses), params


_ROW = ("d.id, d.decided_at, d.service_id, d.scenario_id, d.rating, d.outcome, d.latency_ms, "
        "d.knowledge_version, d.order_codes")


def _row(tx, r) -> DecisionRow:
    return DecisionRow(int(r[0]), tx.from_ts(r[1]), r[2], r[3], r[4], r[5], float(r[6]), r[7], json.loads(r[8]))


def decision_page(store: Store, f: DecisionFilter, page: int) -> tuple[list[DecisionRow], bool]:
    """One page (0-based) of decisions, newest first, and whether a next page exists."""
    def read(tx) -> tuple[list[DecisionRow], bool]:
        where, params = _conditions(tx, f)
        found = tx.execute(f"SELECT {_ROW} FROM decisions d WHERE {where} ORDER BY d.decided_at DESC, d.id DESC "
                           "LIMIT ? OFFSET ?", (*params, PAGE_SIZE + 1, max(page, 0) * PAGE_SIZE)).fetchall()
        rows = [_row(tx, r) for r in found[:PAGE_SIZE]]
        _add_cards_and_feedback(tx, rows)
        return rows, len(found) > PAGE_SIZE

    return store.run(read, readonly=True)


def _add_cards_and_feedback(tx, rows: list[DecisionRow]) -> None:
    if not rows:
        return
    by_id = {r.id: r for r in rows}
    marks = ", ".join("?" for _ in by_id)
    for decision_id, n in tx.execute(f"SELECT decision_id, COUNT(*) FROM cards WHERE decision_id IN ({marks}) "
                                     "GROUP BY decision_id", tuple(by_id)):
        by_id[int(decision_id)].cards = int(n)
    for decision_id, outcome in tx.execute(f"SELECT decision_id, outcome FROM feedback WHERE decision_id IN "
                                           f"({marks}) ORDER BY id", tuple(by_id)):
        by_id[int(decision_id)].feedback.append(outcome)


def decision_detail(store: Store, decision_id: int) -> DecisionDetail | None:
    def read(tx) -> DecisionDetail | None:
        r = tx.execute(f"SELECT {_ROW}, d.hook, d.hook_instance, d.patient_hash, d.user_hash, d.pama_rating "
                       "FROM decisions d WHERE d.id = ?", (decision_id,)).fetchone()
        if r is None:
            return None
        row = _row(tx, r)
        cards = [{"uuid": c[0], "indicator": c[1], "summary": c[2], "suggestions": len(json.loads(c[3]))}
                 for c in tx.execute("SELECT uuid, indicator, summary, suggestion_uuids FROM cards "
                                     "WHERE decision_id = ? ORDER BY position", (decision_id,))]
        feedback = [{"card": f[0], "outcome": f[1], "at": tx.from_ts(f[2]) or tx.from_ts(f[3]),
                     "reason": f[5] or f[4] or "", "accepted": len(json.loads(f[6])), "comment": bool(f[7])}
                    for f in tx.execute(
                        "SELECT card_uuid, outcome, outcome_timestamp, received_at, override_reason_code, "
                        "override_reason_display, accepted_suggestions, has_user_comment FROM feedback "
                        "WHERE decision_id = ? ORDER BY id", (decision_id,))]
        row.cards, row.feedback = len(cards), [f["outcome"] for f in feedback]
        return DecisionDetail(row, r[9], r[10], r[11], r[12], r[13], cards, feedback)

    return store.run(read, readonly=True)
