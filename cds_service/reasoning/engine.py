"""Rate one draft imaging order against the knowledge base: pure, no I/O, no state between calls.

:func:`assess_order` reads top to bottom:

1. **Catalogue** — which catalogue studies the order's codes name. None: ``NOT_RATED``, silent.
2. **Scenario** (:func:`~cds_service.reasoning.selection.select_scenario`) — within one cancer
   site, scenarios are tried in priority order (highest first) and the first whose ``when`` holds
   *and* whose catalogue context lists one of the ordered studies stands for that site. When
   several sites do, the order decides which cancer it is about: its reason, then priority, body
   region, a non-low-value reading, recency (see selection.py; never file order). A scenario's catalogue context is every study it names:
   its ratings (whatever their ``when``), its ``preferred`` list, its ``covers`` list, its surveillance studies and its
   recommendations' ``applies_to``. Priority beats "has an applicable rating": a higher-priority
   scenario that describes the patient but rates the study only under a condition that does not
   hold answers ``NO_CRITERIA_APPLY`` rather than letting a less specific scenario rate it.
   When no holding scenario lists the study, the highest-priority scenario that holds is applied
   and the answer is ``NO_CRITERIA_APPLY`` (the patient is recognised; the criteria do not cover
   this study); such an answer carries no recommended study, because the scenario's preferred
   study answers a different clinical question than the one behind the order. When no scenario
   holds: ``NOT_RATED``, silent.
3. **Ordered study** (:func:`choose_ordered_procedure`) — one code can name several catalogue
   studies (72197 is "MRI pelvis" and part of "MRI abdomen and pelvis"); the applied scenario's
   rating table decides. Among the candidates the scenario rates for this patient, the most exact
   description of the order wins: first a candidate whose codes the order carries completely (an
   order for 72197 alone is "MRI pelvis" when the scenario rates MRI pelvis, but "MRI abdomen and
   pelvis" when that is all the scenario rates), then the one explaining most of the order's codes
   (71260 + 74177 is "CT chest, abdomen and pelvis", not "CT chest"), then the best rating, then
   code order. If the scenario rates none of them: the first it lists, else the first candidate.
4. **Rating, table, recommendation, cancel, surveillance, recommendations, evidence** — below.

The :class:`~cds_service.reasoning.criteria.CriteriaEvaluator` made here lives for one call.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from cds_service.chart.extract import order_reason_facts
from cds_service.chart.facts import ChartFacts, ClinicalFact, DraftOrder
from cds_service.kb.model import (
    Appropriateness,
    Knowledge,
    Procedure,
    Scenario,
    ScenarioRating,
    SurveillanceSchedule,
    normalise_code,
)
from cds_service.reasoning.assessment import (
    ActiveContraindication,
    Evidence,
    OrderAssessment,
    Outcome,
    ScanRating,
    SurveillanceNotice,
)
from cds_service.reasoning.criteria import CriteriaEvaluator, CriterionResult
from cds_service.reasoning.fact_selection import newest_first
from cds_service.reasoning.selection import select_scenario

__all__ = [
    "assess_order",
    "assess_orders",
    "select_scenario",
    "choose_ordered_procedure",
    "order_covers",
    "applicable_ratings",
    "active_contraindications",
    "recommend_study",
    "contrast_free_alternative",
    "is_ruled_out",
    "surveillance_notice",
    "NOT_IN_CATALOGUE",
    "NO_SCENARIO",
]

NOT_IN_CATALOGUE = "study not in catalogue"
NO_SCENARIO = "no scenario applies to this patient"

#: Average month length used to turn schedule months into days.
DAYS_PER_MONTH = 30.4


def assess_order(order: DraftOrder, facts: ChartFacts, knowledge: Knowledge, *, use_index: bool = True) -> OrderAssessment:
    """Everything the cards need to say about one draft order, for this chart (``facts`` include
    the order's own reasons). ``use_index=False`` tries every scenario in priority order instead of
    only those the compiled knowledge says could apply (the reference the index is tested against)."""
    return _assess(order, CriteriaEvaluator(facts, knowledge), knowledge, use_index)


def assess_orders(orders: list[DraftOrder], chart: ChartFacts, knowledge: Knowledge) -> list[OrderAssessment]:
    """Every draft order of one hook call against one chart (``chart`` without order reasons).

    One evaluator indexes the chart and remembers criterion results for the whole call; each order
    adds only its own reasons (:meth:`CriteriaEvaluator.for_order`), so the ten orders of an
    order-sign cost little more than one.
    """
    if len(orders) == 1:  # nothing to share: one evaluator over the chart and the order's reasons
        reasons = order_reason_facts(orders[0], chart.today)
        return [_assess(orders[0], CriteriaEvaluator(replace(chart, facts=chart.facts + reasons), knowledge),
                        knowledge, True)]
    shared = CriteriaEvaluator(chart, knowledge)
    # Orders giving the same reasons (an order-sign's studies usually share one) see the same facts,
    # so they share one view, its memo and what is derived from it.
    views: dict[tuple, tuple[CriteriaEvaluator, dict]] = {}
    assessed = []
    for order in orders:
        if order.reason_codes not in views:
            views[order.reason_codes] = (shared.for_order(order_reason_facts(order, chart.today)), {})
        view, derived = views[order.reason_codes]
        assessed.append(_assess(order, view, knowledge, True, derived))
    return assessed


def _assess(order: DraftOrder, evaluator: CriteriaEvaluator, knowledge: Knowledge, use_index: bool,
            derived: dict | None = None) -> OrderAssessment:
    """``derived`` holds, for the orders sharing ``evaluator``, what depends on the chart and the
    scenario only (ratings, table, evidence, contraindications), so each is worked out once."""
    derived = {} if derived is None else derived

    def once(key, compute):
        if key not in derived:
            derived[key] = compute()
        return derived[key]

    candidates = meant_by_order(order, knowledge.procedures_for(order.codes))
    if not candidates:
        return OrderAssessment(order=order, outcome=Outcome.NOT_RATED, reason=NOT_IN_CATALOGUE)
    selected = select_scenario(candidates, evaluator, knowledge, use_index=use_index)
    if selected is None:
        return OrderAssessment(order=order, outcome=Outcome.NOT_RATED, ordered=candidates[0], reason=NO_SCENARIO)
    scenario, matched = selected

    ratings = once(("ratings", scenario.id), lambda: applicable_ratings(scenario, evaluator))
    ordered = choose_ordered_procedure(order, candidates, scenario, ratings, knowledge)
    contraindications = once("contraindications", lambda: active_contraindications(evaluator, knowledge))
    blocked_by = blocking(ordered, contraindications)
    table = once(("table", scenario.id), lambda: rating_table(ratings, knowledge))
    rating = _scan_rating(ratings[ordered.id], knowledge) if ordered.id in ratings else None
    recommended = without_contrast = None
    in_scenario = ordered.id in knowledge.compiled.procedures_of[scenario.id]
    if in_scenario:
        # A study outside the scenario's question (a head CT for a fall, in a patient followed for
        # cervical cancer) gets no switch suggestion: the scenario's best study answers another question.
        recommended = recommend_study(scenario, ordered, rating, ratings, contraindications, evaluator, knowledge)
        without_contrast = contrast_free_alternative(ordered, ratings, contraindications, knowledge)

    return OrderAssessment(
        order=order,
        outcome=Outcome.RATED if rating is not None else Outcome.NO_CRITERIA_APPLY,
        ordered=ordered,
        scenario=scenario,
        rating=rating,
        recommended=recommended,
        recommend_cancel=should_recommend_cancel(scenario, rating, table, contraindications),
        study_in_scenario=in_scenario,
        evidence=once(("evidence", scenario.id), lambda: scenario_evidence(matched)),
        contraindications=contraindications,
        ordered_blocked_by=blocked_by,
        without_contrast=without_contrast,
        table=table,
        surveillance=surveillance_notice(scenario.surveillance, ordered, evaluator, knowledge),
        recommendations=tuple(
            item
            for item in scenario.recommendations
            if (not item.applies_to or ordered.id in item.applies_to) and evaluator.holds(item.when)
        ),
    )


# -- scenario ------------------------------------------------------------------------------------


def applicable_ratings(scenario: Scenario, evaluator: CriteriaEvaluator) -> dict[str, ScenarioRating]:
    """Procedure id → the rating that applies to this patient: the first, in authored order, whose
    ``when`` holds (authors list a symptom-directed rating before the general one)."""
    found: dict[str, ScenarioRating] = {}
    for rating in scenario.ratings:
        if rating.procedure not in found and evaluator.holds(rating.when):
            found[rating.procedure] = rating
    return found


def choose_ordered_procedure(
    order: DraftOrder,
    candidates: tuple[Procedure, ...],
    scenario: Scenario,
    ratings: dict[str, ScenarioRating],
    knowledge: Knowledge,
) -> Procedure:
    """Which of the catalogue studies the order's codes name this order means (module docstring)."""
    rated = [procedure for procedure in candidates if procedure.id in ratings]
    if rated:
        order_codes = {normalise_code(code.system, code.code) for code in order.codes}

        def rank(item: tuple[int, Procedure]) -> tuple[int, int, int, int]:
            position, procedure = item
            complete = order_covers(order_codes, procedure)
            explained = len(order_codes & _normalised_codes(procedure))
            return (0 if complete else 1, -explained, -ratings[procedure.id].rating.rank, position)

        return min(enumerate(rated), key=rank)[1]
    listed = knowledge.compiled.procedures_of[scenario.id]
    order_codes = {normalise_code(code.system, code.code) for code in order.codes}
    # Not rated here: name the study the order describes best (74177 alone is CT abdomen and pelvis,
    # not the chest/abdomen/pelvis study it is also part of), preferring one the scenario names.
    return min(
        enumerate(candidates),
        key=lambda item: (
            0 if item[1].id in listed else 1,
            0 if order_covers(order_codes, item[1]) else 1,
            -len(order_codes & _normalised_codes(item[1])),
            item[0],
        ),
    )[1]


def meant_by_order(order: DraftOrder, candidates: tuple[Procedure, ...]) -> tuple[Procedure, ...]:
    """Candidates the order can mean: a study with ``required`` codes needs one of them on the order
    (72132 alone is a CT with IV contrast, not a CT myelogram: that needs the injection 62284)."""
    order_codes = {normalise_code(code.system, code.code) for code in order.codes}
    return tuple(
        procedure
        for procedure in candidates
        if not (required := {normalise_code(c.system, c.code) for c in procedure.codes if c.required})
        or not required.isdisjoint(order_codes)
    )


def order_covers(order_codes: set[tuple[str, str]], procedure: Procedure) -> bool:
    """Whether the order carries every code of the study in the code systems the order uses (a CPT
    order is not expected to carry the study's LOINC codes): 72197 alone covers "MRI pelvis" but
    not "MRI abdomen and pelvis" (74183 + 72197)."""
    systems = {system for system, _ in order_codes}
    needed = {code for code in _normalised_codes(procedure) if code[0] in systems}
    return bool(needed) and needed <= order_codes


def _normalised_codes(procedure: Procedure) -> set[tuple[str, str]]:
    return {normalise_code(c.system, c.code) for c in procedure.codes}


def scenario_evidence(result: CriterionResult) -> tuple[Evidence, ...]:
    """The scenario's evidence, each chart fact once, most specific first.

    "Most specific" is taken to be "newest": what changed recently (a new symptom, a rising marker,
    a reason on this order) is what put the patient in this scenario; the diagnosis and treatment
    history behind it are older. Undated items come last; ties keep the criterion's order. A fact
    that supports several criteria keeps the label of the first one, in authored order.
    """
    seen: set[object] = set()
    unique: list[Evidence] = []
    for item in result.evidence:
        key: object = item.fact if item.fact is not None else (item.label, item.facts)
        if key in seen:
            continue
        seen.add(key)
        unique.append(item)
    return newest_first(unique)


# -- ratings and recommendation ------------------------------------------------------------------


def _scan_rating(rating: ScenarioRating, knowledge: Knowledge) -> ScanRating:
    return ScanRating(
        procedure=knowledge.procedures[rating.procedure],
        rating=rating.rating,
        sources=rating.sources,
        confidence=rating.confidence,
    )


def rating_table(ratings: dict[str, ScenarioRating], knowledge: Knowledge) -> tuple[ScanRating, ...]:
    """The scenario's table as it applies to this patient: best rating first, then by name."""
    rows = [_scan_rating(rating, knowledge) for rating in ratings.values()]
    return tuple(sorted(rows, key=lambda row: (-row.rating.rank, row.procedure.name)))


def active_contraindications(evaluator: CriteriaEvaluator, knowledge: Knowledge) -> tuple[ActiveContraindication, ...]:
    found = []
    for contraindication in knowledge.contraindications:
        result = evaluator.evaluate(contraindication.when)
        if result.holds:
            found.append(ActiveContraindication(contraindication, result.evidence))
    return tuple(found)


def blocking(procedure: Procedure, active: tuple[ActiveContraindication, ...]) -> tuple[ActiveContraindication, ...]:
    """Active contraindications that block something the study requires, of either severity
    (``caution`` ones are shown to the clinician too; see :func:`is_ruled_out`)."""
    needs = set(procedure.requires)
    return tuple(item for item in active if needs.intersection(item.contraindication.blocks))


def is_ruled_out(procedure: Procedure, active: tuple[ActiveContraindication, ...]) -> bool:
    """Whether a ``block``-severity contraindication rules the study out. A ``caution`` (pregnancy
    and ionising radiation, claustrophobia and MRI) is shown but leaves the study possible, so it
    does not move the recommendation to the next preference."""
    return any(item.contraindication.severity != "caution" for item in blocking(procedure, active))


def recommend_study(
    scenario: Scenario,
    ordered: Procedure,
    ordered_rating: ScanRating | None,
    ratings: dict[str, ScenarioRating],
    active: tuple[ActiveContraindication, ...],
    evaluator: CriteriaEvaluator,
    knowledge: Knowledge,
) -> ScanRating | None:
    """The study to suggest instead of the ordered one, or None.

    The candidate is the first ``preferred`` entry whose ``when`` holds, which this scenario rates
    for this patient at least at the entry's ``min_rating`` (Usually Appropriate unless the author
    marked a fallback, e.g. CT myelography when MRI cannot be done), and which no ``block``
    contraindication rules out. None when that candidate is the ordered study itself.

    We do not nag about an ordered study that is itself Usually Appropriate and not ruled out; an
    order that is ruled out gets the first possible preference even when it is rated Usually
    Appropriate (MRI with a pacemaker → CT). An MRI ruled out only for its gadolinium gets the same
    region's MRI without contrast first, when the scenario rates it Usually Appropriate
    (:func:`contrast_free_alternative`), before any iodinated-contrast CT. A study the scenario does
    not rate (a non-contrast MRI chosen for a patient with failing kidneys) is not steered onto a
    study that a caution of this chart is about and the order avoids: no suggestion then.
    """
    ruled_out = is_ruled_out(ordered, active)
    if ordered_rating is not None and ordered_rating.rating is Appropriateness.USUALLY_APPROPRIATE and not ruled_out:
        return None
    if ruled_out and (alternative := contrast_free_alternative(ordered, ratings, active, knowledge)) is not None:
        return alternative
    for preference in scenario.preferred:
        rating = ratings.get(preference.procedure)
        if rating is None or rating.rating.rank < preference.min_rating.rank:
            continue
        procedure = knowledge.procedures[preference.procedure]
        if is_ruled_out(procedure, active) or not evaluator.holds(preference.when):
            continue
        if ordered_rating is None and _adds_caution(ordered, procedure, active):
            return None
        return None if procedure.id == ordered.id else _scan_rating(rating, knowledge)
    return None


def contrast_free_alternative(
    ordered: Procedure,
    ratings: dict[str, ScenarioRating],
    active: tuple[ActiveContraindication, ...],
    knowledge: Knowledge,
) -> ScanRating | None:
    """The MRI of the ordered study's region without contrast, when a gadolinium contraindication of
    this chart (block or caution) touches the ordered MRI, the scenario rates that MRI Usually
    Appropriate for this patient and nothing rules it out; else None. Only a rating of the scenario
    counts: where the source does not rate a non-contrast MRI (the cervix), none is offered."""
    if ordered.modality != "MR" or "gadolinium" not in ordered.requires:
        return None
    if not any("gadolinium" in item.contraindication.blocks for item in blocking(ordered, active)):
        return None
    for procedure_id, rating in ratings.items():
        procedure = knowledge.procedures[procedure_id]
        if (procedure.modality == ordered.modality and procedure.body_region == ordered.body_region
                and "gadolinium" not in procedure.requires
                and rating.rating is Appropriateness.USUALLY_APPROPRIATE
                and not is_ruled_out(procedure, active)):
            return _scan_rating(rating, knowledge)
    return None


def _adds_caution(ordered: Procedure, candidate: Procedure, active: tuple[ActiveContraindication, ...]) -> bool:
    """Whether a caution of this chart applies to the candidate study but not to the ordered one."""
    on_ordered = {item.contraindication.id for item in blocking(ordered, active)}
    return any(item.contraindication.severity == "caution" and item.contraindication.id not in on_ordered
               for item in blocking(candidate, active))


def should_recommend_cancel(
    scenario: Scenario,
    rating: ScanRating | None,
    table: tuple[ScanRating, ...],
    active: tuple[ActiveContraindication, ...],
) -> bool:
    """Low-value surveillance: a Usually Not Appropriate order when no study in the table is
    Usually Appropriate (and possible) for this patient — the right move is not to image."""
    if not scenario.low_value_surveillance or rating is None:
        return False
    if rating.rating is not Appropriateness.USUALLY_NOT_APPROPRIATE:
        return False
    return not any(
        row.rating is Appropriateness.USUALLY_APPROPRIATE and not is_ruled_out(row.procedure, active) for row in table
    )


# -- surveillance --------------------------------------------------------------------------------


def months_between(start: date, end: date) -> int:
    """Whole calendar months from ``start`` to ``end`` (0 when ``end`` is in the same month span)."""
    months = (end.year - start.year) * 12 + (end.month - start.month)
    if end.day < start.day:
        months -= 1
    return months


def expected_interval(schedule: SurveillanceSchedule, months_since_anchor: int | None) -> int | None:
    """Months expected between studies at this point of the schedule.

    A row covers months up to and including ``until_month`` (``None`` = thereafter). Past the last
    row the schedule has ended: None, no judgement. Without an anchor date the shortest interval
    of the schedule is used: a repeat sooner than even that is early wherever the patient is in
    the schedule, so the notice can never be a false alarm about timing.
    """
    if not schedule.intervals:
        return None
    if months_since_anchor is None:
        return min(every for _, every in schedule.intervals)
    for until_month, every_months in schedule.intervals:
        if until_month is None or months_since_anchor <= until_month:
            return every_months
    return None


def surveillance_notice(
    schedule: SurveillanceSchedule | None,
    ordered: Procedure,
    evaluator: CriteriaEvaluator,
    knowledge: Knowledge,
) -> SurveillanceNotice | None:
    """A notice when the ordered surveillance study repeats the last one sooner than scheduled.

    Month 0 is the latest date of the facts that make ``anchor`` hold (e.g. end of treatment).
    Only studies on or after the anchor count as surveillance (earlier ones were staging or
    response studies); without an anchor every matching prior study counts.
    """
    if schedule is None or ordered.id not in schedule.procedures:
        return None
    today = evaluator.today
    anchor_result = evaluator.evaluate(schedule.anchor)
    anchor_days = [day for item in anchor_result.evidence if (day := _evidence_fact_day(item)) is not None]
    anchor = max(anchor_days) if anchor_result.holds and anchor_days else None
    months_since_anchor = months_between(anchor, today) if anchor is not None else None

    every_months = expected_interval(schedule, months_since_anchor)
    if every_months is None:
        return None
    last = _latest_study(evaluator.prior_studies(schedule.procedures), not_before=anchor, today=today)
    if last is None:
        return None
    last_day = _as_day(last.date)
    days_since_last = (today - last_day).days
    if days_since_last >= every_months * DAYS_PER_MONTH - schedule.tolerance_days:
        return None
    return SurveillanceNotice(
        last_study=last,
        days_since_last=days_since_last,
        expected_interval_months=every_months,
        months_since_anchor=months_since_anchor,
    )


def _as_day(value: date) -> date:
    return value.date() if hasattr(value, "hour") else value  # datetime → date


def _evidence_fact_day(item: Evidence) -> date | None:
    days = [_as_day(fact.date) for fact in ((item.fact,) if item.fact else item.facts) if fact.date is not None]
    return max(days) if days else None


def _latest_study(studies: tuple[ClinicalFact, ...], not_before: date | None, today: date) -> ClinicalFact | None:
    """The newest dated study no later than today (and not before the anchor, when there is one)."""
    latest: ClinicalFact | None = None
    for study in studies:
        if study.date is None:
            continue
        day = _as_day(study.date)
        if day > today or (not_before is not None and day < not_before):
            continue
        if latest is None or day > _as_day(latest.date):  # type: ignore[arg-type]
            latest = study
    return latest
