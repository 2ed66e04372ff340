"""The committee's questions, answered from the rollups (:mod:`cds_service.audit.rollup`).

Overview and per-scenario figures read only the daily rollups, so they cost the same over a
thousand decisions or a million (``bench/console_bench.py``). The decision list and a decision's
page read the decision rows themselves, through the ``(service_id, decided_at)``,
``(scenario_id, decided_at)`` and ``decided_at`` indexes, one page at a time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date

from cds_service.audit.rollup import bucket_upper_ms
from cds_service.audit.store import Store

FEEDBACK_OUTCOMES = ("accepted", "overridden")


@dataclass
class Figures:
    """Counts over a date range (and service, and scenario)."""

    orders: int = 0
    cards: int = 0
    silent: int = 0                                   # decisions answered with no card
    by_outcome: Counter = field(default_factory=Counter)   # rated | no-criteria-apply | not-rated
    by_rating: Counter = field(default_factory=Counter)    # rating of rated orders
    feedback: Counter = field(default_factory=Counter)     # accepted | overridden
    override_reasons: Counter = field(default_factory=Counter)  # (code, display) -> entries
    per_day: dict[str, dict[str, float]] = field(default_factory=dict)
    versions: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def cards_per_100(self) -> float:
        return round(100.0 * self.cards / self.orders, 1) if self.orders else 0.0

    @property
    def no_feedback(self) -> int:
        return max(self.cards - sum(self.feedback[o] for o in FEEDBACK_OUTCOMES), 0)

    def rate(self, outcome: str) -> float:
        """Share of the cards shown that got this feedback, in per cent."""
        return round(100.0 * self.feedback[outcome] / self.cards, 1) if self.cards else 0.0


def _where(start: date, end: date, service: str | None, scenario: str | None) -> tuple[str, list]:
    clauses, params = ["day >= ?", "day <= ?"], [start.isoformat(), end.isoformat()]
    if service:
        clauses.append("service_id = ?")
        params.append(service)
    if scenario is not None:
        clauses.append("scenario_id = ?")
        params.append(scenario)
    return " AND ".join(clauses), params


def figures(store: Store, start: date, end: date, service: str | None = None,
            scenario: str | None = None) -> Figures:
    """Overview figures for ``start``..``end`` (UTC days, inclusive); ``scenario=''`` is no scenario."""
    where, params = _where(start, end, service, scenario)

    def read(tx) -> Figures:
        out = Figures()
        rows = tx.execute(
            "SELECT day, outcome, rating, knowledge_version, SUM(decisions), SUM(cards), SUM(decisions_with_cards) "
            f"FROM decision_daily WHERE {where} GROUP BY day, outcome, rating, knowledge_version", params).fetchall()
        for day, outcome, rating, version, n, cards, with_cards in rows:
            _add_decisions(out, day, outcome, rating, version, int(n), int(cards), int(with_cards))
        rows = tx.execute(f"SELECT day, outcome, reason_code, reason_display, SUM(entries) FROM feedback_daily "
                          f"WHERE {where} GROUP BY day, outcome, reason_code, reason_display", params).fetchall()
        for day, outcome, code, display, n in rows:
            out.feedback[outcome] += int(n)
            _day(out, day)[outcome] = _day(out, day).get(outcome, 0) + int(n)
            if outcome == "overridden":
                out.override_reasons[(code, display)] += int(n)
        if scenario is None:
            _add_latency(tx, out, *_where(start, end, service, None))
        return out

    return store.run(read, readonly=True)


def _day(out: Figures, day: str) -> dict[str, float]:
    return out.per_day.setdefault(day, {"orders": 0, "cards": 0})


def _add_decisions(out: Figures, day: str, outcome: str, rating: str, version: str, n: int, cards: int,
                   with_cards: int) -> None:
    out.orders += n
    out.cards += cards
    out.silent += n - with_cards
    out.by_outcome[outcome] += n
    if outcome == "rated" and rating:
        out.by_rating[rating] += n
    per_day = _day(out, day)
    per_day["orders"] += n
    per_day["cards"] += cards
    seen = out.versions.setdefault(version, {"decisions": 0, "first": day, "last": day})
    seen["decisions"] = int(seen["decisions"]) + n
    seen["first"], seen["last"] = min(str(seen["first"]), day), max(str(seen["last"]), day)


def _add_latency(tx, out: Figures, where: str, params: list) -> None:
    histograms: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for day, bucket, n in tx.execute(f"SELECT day, bucket, SUM(decisions) FROM latency_daily WHERE {where} "
                                     "GROUP BY day, bucket ORDER BY day, bucket", params):
        histograms[day].append((int(bucket), int(n)))
    for day, histogram in histograms.items():
        per_day = _day(out, day)
        per_day["p50_ms"] = percentile(histogram, 0.50)
        per_day["p95_ms"] = percentile(histogram, 0.95)


def percentile(histogram: list[tuple[int, int]], q: float) -> float:
    """The ``q`` quantile of a latency histogram (buckets in ascending order), as a bucket's upper bound."""
    total = sum(n for _, n in histogram)
    rank, seen = q * total, 0
    for bucket, n in histogram:
        seen += n
        if seen >= rank:
            return round(bucket_upper_ms(bucket), 2)
    return round(bucket_upper_ms(histogram[-1][0]), 2) if histogram else 0.0


def scenario_table(store: Store, start: date, end: date, service: str | None = None) -> list[dict]:
    """One row per scenario: orders, cards, and feedback counts over the range (busiest first)."""
    where, params = _where(start, end, service, None)

    def read(tx) -> list[dict]:
        rows: dict[str, dict] = {}
        for scenario, n, cards in tx.execute(
                f"SELECT scenario_id, SUM(decisions), SUM(cards) FROM decision_daily WHERE {where} "
                "GROUP BY scenario_id", params):
            rows[scenario] = {"scenario": scenario, "orders": int(n), "cards": int(cards), "accepted": 0,
                              "overridden": 0}
        for scenario, outcome, n in tx.execute(
                f"SELECT scenario_id, outcome, SUM(entries) FROM feedback_daily WHERE {where} "
                "GROUP BY scenario_id, outcome", params):
            if scenario in rows and outcome in FEEDBACK_OUTCOMES:
                rows[scenario][outcome] = int(n)
        return sorted(rows.values(), key=lambda r: (-r["orders"], r["scenario"]))

    return store.run(read, readonly=True)


def services(store: Store) -> list[str]:
    return store.run(lambda tx: [r[0] for r in tx.execute(
        "SELECT DISTINCT service_id FROM latency_daily ORDER BY service_id")], readonly=True)


def date_span(store: Store) -> tuple[str, str] | None:
    """First and last day with decisions."""
    row = store.run(lambda tx: tx.execute("SELECT MIN(day), MAX(day) FROM latency_daily").fetchone(),
                    readonly=True)
    return (row[0], row[1]) if row and row[0] else None
