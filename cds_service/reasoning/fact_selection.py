"""Small selections over chart facts used by criteria operators (kept apart from criteria.py, whose
evaluator loop is tuned for speed): the draft order's reasons in or outside a value set, and the
ordering of evidence by date."""

from __future__ import annotations

from datetime import date, datetime
from typing import Iterable

from cds_service.chart.facts import ClinicalFact, FactKind, MarkerTrend
from cds_service.kb.model import ValueSet
from cds_service.reasoning.assessment import Evidence
from cds_service.reasoning.lab_values import format_value

__all__ = ["reasons_in", "evidence_day", "newest_first", "day_of", "trend_label"]


def day_of(value: date | None) -> date | None:
    """Dates compare as days; a datetime that slipped through is cut to its date."""
    return value.date() if isinstance(value, datetime) else value


def reasons_in(reasons: Iterable[ClinicalFact], valueset: ValueSet, outside: bool = False) -> list[ClinicalFact]:
    """Order reasons coded in ``valueset`` or, with ``outside``, coded outside it.

    ``outside`` is how "the order is about something else" is written (a CT for abdominal pain in a
    cancer survivor): a reason the value set does not know is positive evidence of another question,
    while an order without reasons gives no evidence either way.
    """
    return [fact for fact in reasons if valueset.contains_any(fact.codes) is not outside]


def evidence_day(item: Evidence) -> date | None:
    """The date an evidence item stands for: its fact's date, or the newest of a series."""
    if item.fact is not None:
        if item.fact.kind is FactKind.ORDER_REASON and item.fact.date is None:
            return date.max  # the order is being placed now: newest of all
        return day_of(item.fact.date)
    days = [day_of(f.date) for f in item.facts if f.date is not None]
    return max(days) if days else None  # type: ignore[type-var]


def newest_first(evidence: Iterable[Evidence]) -> tuple[Evidence, ...]:
    """Newest first, undated last; stable, so equal dates keep chart order."""
    return tuple(sorted(evidence, key=_newest_key))


def _newest_key(item: Evidence) -> tuple[int, int]:
    day = evidence_day(item)
    return (1, 0) if day is None else (0, -day.toordinal())


def trend_label(title: str, trend: MarkerTrend) -> str:
    """"SCC antigen rising (1.1 → 3.4 ng/mL, 2026-03-01 to 2026-10-01)"."""
    points = trend.points
    if not points:
        return f"{title} {trend.direction}"
    first, last = points[0], points[-1]
    values = f"{format_value(first.value, None)} → {format_value(last.value, last.unit)}"
    first_day, last_day = day_of(first.date), day_of(last.date)
    span = f", {first_day.isoformat()} to {last_day.isoformat()}" if first_day and last_day else ""
    return f"{title} {trend.direction} ({values}{span})"
