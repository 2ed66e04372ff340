"""Which scenario answers an order: by priority within one cancer, by the order itself across cancers.

A patient can hold several cancers (a breast cancer survivor treated for rectal cancer since). The
scenarios of each cancer site are tried in priority order and the first that holds stands for that
site, as before. When scenarios of more than one site hold and name the ordered study, the order
decides which cancer it is about (docs/clinical-scenarios.md, "Which cancer is the order about?"):

1. an order reason that belongs to the scenario's cancer (``order_reasons`` value set);
2. the higher priority (suspected recurrence before routine surveillance);
3. the ordered study's body region among the scenario's ``regions``;
4. a scenario that would not call the study low value (when two cancers explain the study and one
   makes it appropriate, a cancel suggestion would be wrong for the other);
5. the cancer with the most recent chart evidence (diagnosis, treatment, symptom);
6. the scenario id, so the answer never depends on file order.
"""

from __future__ import annotations

from datetime import date

from cds_service.chart.facts import FactKind
from cds_service.kb.model import Criterion, Knowledge, Procedure, Scenario
from cds_service.reasoning.criteria import CriteriaEvaluator, CriterionResult

__all__ = ["select_scenario"]

#: One criterion object per value set, so the evaluator's memo and operator cache see the same one.
_REASON_CRITERIA: dict[str, Criterion] = {}


def select_scenario(
    candidates: tuple[Procedure, ...], evaluator: CriteriaEvaluator, knowledge: Knowledge, *, use_index: bool = True
) -> tuple[Scenario, CriterionResult] | None:
    """The scenario to apply, with the result of its ``when`` (module docstring; engine docstring).

    With the index (``use_index``), only scenarios whose gate the chart can open are evaluated
    (kb.compiled: a scenario none of whose necessary value sets holds a fact cannot hold); the answer
    is the same as trying every scenario in priority order, which ``use_index=False`` does.
    """
    compiled = knowledge.compiled
    by_priority = compiled.by_priority
    naming = compiled.naming(procedure.id for procedure in candidates)
    if use_index:
        plausible = compiled.plausible(evaluator.valuesets_present())
        rest = sorted(plausible.difference(naming))
        naming = [rank for rank in naming if rank in plausible]
    else:
        rest = [rank for rank in range(len(by_priority)) if rank not in set(naming)]
    holding = _first_holding_per_site([by_priority[rank] for rank in naming], evaluator)
    if holding:
        regions = {procedure.body_region for procedure in candidates}
        return min(holding, key=lambda item: _rank(item, regions, evaluator))
    # No scenario naming the ordered study holds: the highest-priority one that holds at all
    # answers NO_CRITERIA_APPLY (the patient is recognised; the criteria do not cover this study).
    for rank in rest:
        result = evaluator.evaluate(by_priority[rank].when)
        if result.holds:
            return by_priority[rank], result
    return None


def _first_holding_per_site(
    scenarios: list[Scenario], evaluator: CriteriaEvaluator
) -> list[tuple[Scenario, CriterionResult]]:
    """For each cancer site, the highest-priority scenario that holds (others of that site are not
    evaluated: within a site, priority is the author's order of specificity)."""
    found: dict[str, tuple[Scenario, CriterionResult]] = {}
    for scenario in scenarios:
        if scenario.cancer_site in found:
            continue
        result = evaluator.evaluate(scenario.when)
        if result.holds:
            found[scenario.cancer_site] = (scenario, result)
    return list(found.values())


def _rank(
    item: tuple[Scenario, CriterionResult], regions: set[str], evaluator: CriteriaEvaluator
) -> tuple[int, int, int, int, int, str]:
    scenario, result = item
    about_reason = 0 if _order_is_about(scenario, evaluator) else 1
    in_region = 0 if regions.intersection(scenario.regions) else 1
    low_value = 1 if scenario.low_value_surveillance else 0
    newest = _newest_evidence(result)
    return (about_reason, -scenario.priority, in_region, low_value, -newest.toordinal(), scenario.id)


def _order_is_about(scenario: Scenario, evaluator: CriteriaEvaluator) -> bool:
    if not scenario.order_reasons:
        return False
    criterion = _REASON_CRITERIA.setdefault(scenario.order_reasons, {"order_reason": scenario.order_reasons})
    return evaluator.holds(criterion)


def _newest_evidence(result: CriterionResult) -> date:
    """Date of the newest chart fact behind the scenario (order reasons left out: they are today for
    every scenario); ``date.min`` when none is dated."""
    days = []
    for item in result.evidence:
        for fact in (item.fact,) if item.fact is not None else item.facts:
            if fact.kind is not FactKind.ORDER_REASON and fact.date is not None:
                days.append(fact.date.date() if hasattr(fact.date, "hour") else fact.date)
    return max(days, default=date.min)
