"""How an ``observation`` criterion tests a result's value (docs/knowledge.md, Criteria).

Kept apart from the evaluator because it is the one place where numbers and units meet:

* ``value_below`` / ``value_above`` compare the value, converted through UCUM into ``unit`` when
  the criterion names one (a result in an inconvertible unit does not count; a result without a
  unit is compared as it is, the criterion's unit being the test's usual one);
* ``above_reference_high`` holds for a value above the upper limit of the result's own reference
  range (``referenceRange.high``), so "one value above the normal range" needs no number in the
  knowledge;
* ``value_in`` holds for a coded value in a value set;
* ``latest`` narrows the matching results to the most recent one before any of these tests:
  "the latest eGFR is below 30", not "some eGFR of the last 90 days was".
"""

from __future__ import annotations

from typing import Callable, Iterable

from cds_service.chart.facts import ClinicalFact
from cds_service.chart.units import Converter, unit_of
from cds_service.kb.model import Criterion, ValueSet

FactTest = Callable[[ClinicalFact], bool]


def value_test(criterion: Criterion, value_in: ValueSet | None) -> FactTest | None:
    """The value part of an observation criterion as one test; ``None`` when it has none."""
    below = criterion.get("value_below")
    above = criterion.get("value_above")
    unit = criterion.get("unit")
    above_high = bool(criterion.get("above_reference_high", False))
    numeric = below is not None or above is not None
    if not numeric and not above_high and value_in is None:
        return None
    converter = Converter()

    def accept(fact: ClinicalFact) -> bool:
        if numeric:
            value = _value_in_unit(fact, unit, converter)
            if value is None:
                return False
            if below is not None and not value < below:
                return False
            if above is not None and not value > above:
                return False
        if above_high and (fact.value is None or fact.reference_high is None or not fact.value > fact.reference_high):
            return False
        if value_in is not None and not any(value_in.contains(code) for code in fact.value_codes):
            return False
        return True

    return accept


def _value_in_unit(fact: ClinicalFact, unit: str | None, converter: Converter) -> float | None:
    if fact.value is None or unit is None:
        return fact.value
    written = unit_of(fact.ucum, fact.unit)
    if written is None:
        return fact.value
    return converter.convert(fact.value, written, unit)


def only_latest(results: Iterable[ClinicalFact], test: FactTest | None) -> FactTest:
    """A test that holds for the most recent dated result only (same date: the one listed last)."""
    latest: ClinicalFact | None = None
    for fact in results:
        if fact.date is not None and (latest is None or fact.date >= latest.date):  # type: ignore[operator]
            latest = fact

    def accept(fact: ClinicalFact) -> bool:
        return fact is latest and (test is None or test(fact))

    return accept


def format_value(value: float | None, unit: str | None) -> str:
    if value is None:
        return ""
    text = f"{value:g}"
    return f"{text} {unit}" if unit else text
