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

__all__ = ["select_scenario", "scenario_procedure_ids", "scenarios_by_priority"]

#: One criterion object per value set, so the evaluator's memo and operator cache see the same one.
_REASON_CRITERIA: dict[str, Criterion] = {}


def scenario_procedure_ids(scenario: Scenario) -> frozenset[str]:
    """Every study the scenario names: rated (under any ``when``), preferred, covered, surveillance, advice."""
    ids = {rating.procedure for rating in scenario.ratings}
    ids.update(scenario.covers)
    ids.update(preference.procedure for preference in scenario.preferred)
    if scenario.surveillance is not None:
        ids.update(scenario.surveillance.procedures)
    for recommendation in scenario.recommendations:
        ids.update(recommendation.applies_to)
    return frozenset(ids)


def scenarios_by_priority(knowledge: Knowledge) -> list[Scenario]:
    """Highest priority first; ``sorted`` is stable, so ties keep load order (only within one site)."""
    return sorted(knowledge.scenarios, key=lambda scenario: -scenario.priority)


def select_scenario(
    candidates: tuple[Procedure, ...], evaluator: CriteriaEvaluator, knowledge: Knowledge
) -> tuple[Scenario, CriterionResult] | None:
    """The scenario to apply, with the result of its ``when`` (module docstring; engine docstring)."""
    candidate_ids = {procedure.id for procedure in candidates}
    by_priority = scenarios_by_priority(knowledge)
    naming = [s for s in by_priority if not candidate_ids.isdisjoint(scenario_procedure_ids(s))]
    holding = _first_holding_per_site(naming, evaluator)
    if holding:
        regions = {procedure.body_region for procedure in candidates}
        return min(holding, key=lambda item: _rank(item, regions, evaluator))
    naming_ids = {s.id for s in naming}
    for scenario in by_priority:
        if scenario.id in naming_ids:
            continue
        result = evaluator.evaluate(scenario.when)
        if result.holds:
            return scenario, result
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
