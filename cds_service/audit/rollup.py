"""Daily rollups of the audit log, kept in step by the writes, read by the console's overview.

A million decisions are a million rows; the committee's overview of a month reads a few thousand
rollup rows instead. Every decision adds one to its ``decision_daily`` row (day, service, scenario,
outcome, rating, knowledge version) and to its ``latency_daily`` bucket; every new feedback entry
adds one to its ``feedback_daily`` row (the day of the decision its card belongs to, so that the
cards shown in a period and the feedback on them are counted together; service, scenario, outcome,
override reason). Feedback on a card the audit does not know is counted on the day it arrived.
The upserts run in the transaction that writes the decision or the feedback, so the rollups never
disagree with the rows they count. :func:`rebuild` recomputes them from the rows (after a bulk
load, or on a database that held decisions before the rollups existed).

Days are UTC dates (``YYYY-MM-DD``); absent dimensions are stored as ``''`` (key columns cannot
be NULL on PostgreSQL). Latencies are kept as a histogram of geometric buckets 5 % wide, so a
percentile read from it is within 5 % of the exact one.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Iterable

from cds_service.audit.backend import Tx, utc

LATENCY_FLOOR_MS = 0.01
LATENCY_GROWTH = 1.05


def latency_bucket(latency_ms: float) -> int:
    """The histogram bucket of a latency: bucket ``b`` holds values up to ``bucket_upper_ms(b)``."""
    value = max(float(latency_ms), LATENCY_FLOOR_MS)
    return max(0, math.ceil(math.log(value / LATENCY_FLOOR_MS) / math.log(LATENCY_GROWTH) - 1e-9))


def bucket_upper_ms(bucket: int) -> float:
    return LATENCY_FLOOR_MS * LATENCY_GROWTH ** bucket


def day_of(value: datetime) -> str:
    return utc(value).date().isoformat()


_ADD_DECISIONS = (
    "INSERT INTO decision_daily (day, service_id, scenario_id, outcome, rating, knowledge_version, decisions, "
    "cards, decisions_with_cards) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (day, service_id, scenario_id, outcome, rating, knowledge_version) DO UPDATE SET "
    "decisions = decision_daily.decisions + excluded.decisions, cards = decision_daily.cards + excluded.cards, "
    "decisions_with_cards = decision_daily.decisions_with_cards + excluded.decisions_with_cards"
)
_ADD_LATENCY = (
    "INSERT INTO latency_daily (day, service_id, bucket, decisions) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (day, service_id, bucket) DO UPDATE SET decisions = latency_daily.decisions + excluded.decisions"
)
_ADD_FEEDBACK = (
    "INSERT INTO feedback_daily (day, service_id, scenario_id, outcome, reason_code, reason_display, entries) "
    "VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (day, service_id, scenario_id, outcome, reason_code, reason_display) "
    "DO UPDATE SET entries = feedback_daily.entries + 1"
)


def add_decisions(tx: Tx, decisions: Iterable[tuple]) -> None:
    """Count decisions given as ``(decided_at, service_id, scenario_id, outcome, rating,
    knowledge_version, cards, latency_ms)``; rows of one call that share a key are summed first."""
    counts: dict[tuple, list[int]] = {}
    latencies: dict[tuple, int] = {}
    for decided_at, service_id, scenario_id, outcome, rating, version, cards, latency_ms in decisions:
        day = day_of(decided_at)
        key = (day, service_id, scenario_id or "", outcome, rating or "", version)
        count = counts.setdefault(key, [0, 0, 0])
        count[0] += 1
        count[1] += cards
        count[2] += 1 if cards else 0
        lat_key = (day, service_id, latency_bucket(latency_ms))
        latencies[lat_key] = latencies.get(lat_key, 0) + 1
    for key, (n, cards, with_cards) in counts.items():
        tx.execute(_ADD_DECISIONS, (*key, n, cards, with_cards))
    for key, n in latencies.items():
        tx.execute(_ADD_LATENCY, (*key, n))


def add_feedback(tx: Tx, received_at: datetime, service_id: str, decision_id: int | None, outcome: str,
                 reason_code: str | None, reason_display: str | None) -> None:
    """Count one new feedback entry under the day and scenario of the decision its card belongs to."""
    scenario, day = "", day_of(received_at)
    if decision_id is not None:
        row = tx.execute("SELECT scenario_id, decided_at FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        if row:
            scenario, day = row[0] or "", day_of(tx.from_ts(row[1]))
    tx.execute(_ADD_FEEDBACK, (day, service_id, scenario, outcome, reason_code or "", reason_display or ""))


def _day_sql(tx: Tx, column: str) -> str:
    if tx.backend.name == "postgresql":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    return f"substr({column}, 1, 10)"


def _bucket_sql(tx: Tx) -> str:
    """:func:`latency_bucket` in SQL (both databases have ``ln`` and ``ceil``)."""
    floor, growth = LATENCY_FLOOR_MS, LATENCY_GROWTH
    value = f"(CASE WHEN latency_ms < {floor} THEN {floor} ELSE latency_ms END)"
    return f"CAST(ceil(ln({value} / {floor}) / ln({growth}) - 1e-9) AS INTEGER)"


def rebuild(tx: Tx) -> None:
    """Recompute all rollups from the decision and feedback rows (one pass over each)."""
    for table in ("decision_daily", "latency_daily", "feedback_daily"):
        tx.execute(f"DELETE FROM {table}")
    day = _day_sql(tx, "d.decided_at")
    tx.execute(
        "INSERT INTO decision_daily (day, service_id, scenario_id, outcome, rating, knowledge_version, decisions, "
        f"cards, decisions_with_cards) SELECT {day}, d.service_id, COALESCE(d.scenario_id, ''), d.outcome, "
        "COALESCE(d.rating, ''), d.knowledge_version, COUNT(*), SUM(COALESCE(c.n, 0)), "
        "SUM(CASE WHEN c.n > 0 THEN 1 ELSE 0 END) FROM decisions d "
        "LEFT JOIN (SELECT decision_id, COUNT(*) AS n FROM cards GROUP BY decision_id) c ON c.decision_id = d.id "
        f"GROUP BY {day}, d.service_id, COALESCE(d.scenario_id, ''), d.outcome, COALESCE(d.rating, ''), "
        "d.knowledge_version"
    )
    bucket = _bucket_sql(tx)
    tx.execute(
        f"INSERT INTO latency_daily (day, service_id, bucket, decisions) SELECT {day}, d.service_id, {bucket}, "
        f"COUNT(*) FROM decisions d GROUP BY {day}, d.service_id, {bucket}"
    )
    fday = f"COALESCE({_day_sql(tx, 'd.decided_at')}, {_day_sql(tx, 'f.received_at')})"
    tx.execute(
        "INSERT INTO feedback_daily (day, service_id, scenario_id, outcome, reason_code, reason_display, entries) "
        f"SELECT {fday}, f.service_id, COALESCE(d.scenario_id, ''), f.outcome, COALESCE(f.override_reason_code, ''), "
        "COALESCE(f.override_reason_display, ''), COUNT(*) FROM feedback f LEFT JOIN decisions d ON d.id = f.decision_id "
        f"GROUP BY {fday}, f.service_id, COALESCE(d.scenario_id, ''), f.outcome, COALESCE(f.override_reason_code, ''), "
        "COALESCE(f.override_reason_display, '')"
    )
