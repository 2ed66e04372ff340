"""Small selections over chart facts used by criteria operators (kept apart from criteria.py, whose
evaluator loop is tuned for speed): the draft order's reasons in or outside a value set, and the
ordering of evidence by date."""

from __future__ import annotations

from datetime import date, datetime
from typing import Iterable

from cds_service.chart.facts import ClinicalFact, FactKind
from cds_service.kb.model import ValueSet
from cds_service.reasoning.assessment import Evidence

__all__ = ["reasons_in", "evidence_day", "newest_first"]


def _day(value: date | None) -> date | None:
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
        return _day(item.fact.date)
    days = [_day(f.date) for f in item.facts if f.date is not None]
    return max(days) if days else None  # type: ignore[type-var]


def newest_first(evidence: Iterable[Evidence]) -> tuple[Evidence, ...]:
    """Newest first, undated last; stable, so equal dates keep chart order."""
    return tuple(sorted(evidence, key=_newest_key))


def _newest_key(item: Evidence) -> tuple[int, int]:
    day = evidence_day(item)
    return (1, 0) if day is None else (0, -day.toordinal())
