"""Small selections over chart facts used by criteria operators (kept apart from criteria.py, whose
evaluator loop is tuned for speed): the draft order's reasons in or outside a value set, a device's
MR labelling, the labels of evidence and their ordering by date."""

from __future__ import annotations

from datetime import date, datetime
from typing import Callable, Iterable, Mapping

from cds_service.chart.facts import ClinicalFact, FactKind, MarkerTrend
from cds_service.kb.model import ValueSet
from cds_service.reasoning.assessment import Evidence
from cds_service.reasoning.lab_values import format_value

__all__ = ["reasons_in", "evidence_day", "newest_first", "day_of", "trend_label", "fact_label", "safety_test"]


def day_of(value: date | None) -> date | None:
    """Dates compare as days; a datetime that slipped through is cut to its date."""
    return value.date() if isinstance(value, datetime) else value


def fact_label(title: str, fact: ClinicalFact, day: date | None) -> str:
    """"Pelvic pain (2026-10-02)"; order reasons say so instead of a date. Labels are shown to
    clinicians, so they name no resource (the fact itself keeps ``source`` for the audit)."""
    if fact.kind is FactKind.ORDER_REASON:
        return f"{title} (reason given on this order)"
    if day is None:
        return f"{title} (undated)"
    return f"{title} ({day.isoformat()})"


Label = Callable[[str, ClinicalFact, "date | None"], str]


def safety_test(criterion: Mapping, valueset_of: Callable[[str], ValueSet]
                ) -> tuple[Callable[[ClinicalFact], bool] | None, Label]:
    """The ``device`` options ``safety_in`` (a Device.safety code in that value set) and
    ``safety_not_in`` (none in it, also when the chart records no labelling), and an evidence label
    that says which labelling decided ("Pacemaker or implanted defibrillator, labelled MR
    Conditional"). Without either option: no test, the plain label."""
    wanted = valueset_of(criterion["safety_in"]) if "safety_in" in criterion else None
    refused = valueset_of(criterion["safety_not_in"]) if "safety_not_in" in criterion else None
    if wanted is None and refused is None:
        return None, fact_label

    def accept(fact: ClinicalFact) -> bool:
        if wanted is not None and not wanted.contains_any(fact.safety_codes):
            return False
        return refused is None or not refused.contains_any(fact.safety_codes)

    said = wanted.title if wanted is not None else refused.title  # type: ignore[union-attr]
    said = ("" if wanted is not None else "not ") + said[:1].lower() + said[1:]

    def label(title: str, fact: ClinicalFact, day: date | None) -> str:
        return fact_label(f"{title}, {said}", fact, day)

    return accept, label


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
