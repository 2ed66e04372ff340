"""Order assessments → CDS Hooks cards, suggestions and PAMA rating system actions.

Card policy lives here and nowhere else:

* every rated order gets a machine-readable rating (an ``update`` of its ServiceRequest carrying the
  Argonaut ``pama-rating`` extensions), under both ``systemActions`` and ``extension.systemActions``;
* a Usually Not Appropriate order gets a warning with a one-click switch (an ``update``, which every
  EHR and the CDS Hooks sandbox can apply) to the recommended study; a low-value surveillance scan
  gets "Cancel this order (no imaging now)", after the switch when a better study exists;
* a May Be Appropriate order gets an info card when a Usually Appropriate study exists for this patient;
* a study the recognised scenario does not rate gets an info card naming the scenario's preferred
  study, with a switch — never a bare "no criteria apply" — unless the scenario's own advice cards
  already speak to that order;
* an order whose study a recorded contraindication rules out gets a warning with the alternative;
* surveillance repeated earlier than the schedule, and scenario advice (e.g. biopsy first), get cards;
* an order that is already right is rated but gets no card ("quiet when right") unless configured;
* an order nothing applies to gets nothing at all.

What a card says, and in how many words, is in :mod:`cds_service.cards.detail`; each card links to
the scenario's evidence page (every rating, the rules in plain words, the sources).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from cds_service import codes
from cds_service.cards import wording
from cds_service.cards.detail import order_detail, provenance_line
from cds_service.cards.rating import pama_code_of, rating_action
from cds_service.cards.suggestions import cancel_suggestion, switch_suggestion
from cds_service.hooks.response import Action, Card, Coding, Link, Source, Suggestion, to_json
from cds_service.hooks.response import new_uuid
from cds_service.kb.model import Appropriateness, Knowledge, Recommendation, Scenario
from cds_service.reasoning.assessment import OrderAssessment, Outcome, ScanRating
from cds_service.reasoning.engine import is_ruled_out

SUMMARY_LIMIT = 139
LINK_LABEL_LIMIT = 100
#: The evidence page and the first primary source: more links make a card taller, not clearer.
MAX_LINKS = 2
UA = Appropriateness.USUALLY_APPROPRIATE


@dataclass(frozen=True)
class RatedOrder:
    """What the audit log needs to know about one order's answer."""

    assessment: OrderAssessment
    pama_code: str | None
    consult_id: str | None
    cards: tuple[Card, ...]


@dataclass(frozen=True)
class _Context:
    knowledge: Knowledge
    qcdsm_id: str
    cards_when_appropriate: bool
    evidence_base_url: str | None


@dataclass(frozen=True)
class _Advice:
    """What the main card of an order says: its colour, its summary and the study to switch to."""

    indicator: str
    summaries: tuple[str, ...]       # best first; the first under 140 characters is used
    instead: ScanRating | None = None
    why_instead: str = ""
    cancel: bool = False
    #: Advice of the scenario naming a study outside its rating table (low-value scans: mammography).
    alternative: Recommendation | None = None
    #: The switch is an option, not the advice (a caution leaves the ordered study possible).
    optional_switch: bool = False


def build_response(
    assessments: Iterable[OrderAssessment],
    knowledge: Knowledge,
    *,
    qcdsm_id: str,
    cards_when_appropriate: bool = False,
    evidence_base_url: str | None = None,
) -> tuple[dict, list[RatedOrder]]:
    """The JSON response body, plus per-order results for the audit log.

    :param evidence_base_url: the service's public base URL; cards link to ``{it}/evidence/{scenario}``.
    """
    context = _Context(knowledge, qcdsm_id, cards_when_appropriate, evidence_base_url)
    cards: list[Card] = []
    actions: list[Action] = []
    rated: list[RatedOrder] = []
    for assessment in assessments:
        consult_id = pama_code = None
        if assessment.outcome is not Outcome.NOT_RATED:
            consult_id = f"urn:uuid:{new_uuid()}"
            pama_code = pama_code_of(assessment)
            actions.append(rating_action(assessment, qcdsm_id, consult_id))
        order_cards = tuple(_cards_for(assessment, context))
        cards.extend(order_cards)
        rated.append(RatedOrder(assessment, pama_code, consult_id, order_cards))

    body: dict = {"cards": [to_json(c) for c in cards]}
    if actions:
        action_json = [to_json(a) for a in actions]
        body["systemActions"] = action_json
        # The CDS Hooks sandbox (and the Argonaut PAMA guide) read ratings only from here.
        body["extension"] = {"systemActions": action_json}
    return body, rated


# --- which cards -------------------------------------------------------------------------------


def _cards_for(assessment: OrderAssessment, context: _Context) -> Iterable[Card]:
    if assessment.outcome is Outcome.NOT_RATED or assessment.scenario is None:
        return
    recommendations = list(assessment.recommendations)
    advice = _advice(assessment, context.cards_when_appropriate,
                     explained=bool(recommendations or assessment.surveillance))
    if advice is not None and advice.cancel and advice.instead is None:
        # A low-value scan whose scenario names what to do instead (yearly mammography): one card
        # with the switch first and the cancel second, not two cards.
        alternative = next((r for r in recommendations if r.suggest in context.knowledge.procedures), None)
        if alternative is not None:
            recommendations.remove(alternative)
            advice = replace(advice, alternative=alternative)
    if advice is not None:
        yield _main_card(assessment, advice, context)
    if assessment.surveillance:
        yield _surveillance_card(assessment, context)
    for item in recommendations:
        yield _recommendation_card(assessment, item, context)


def _advice(assessment: OrderAssessment, cards_when_appropriate: bool, *, explained: bool) -> _Advice | None:
    scenario, rating = assessment.scenario, assessment.rating
    ordered = assessment.ordered.name if assessment.ordered else "This study"
    recommended, blocked = assessment.recommended, assessment.ordered_blocked_by
    # A block rules the study out (switch); a caution leaves it possible and says what to arrange.
    hard = tuple(b for b in blocked if b.contraindication.severity != "caution")
    phrase = _phrase(scenario)
    if assessment.recommend_cancel:
        label = rating.rating.label
        tail = f"consider {recommended.procedure.name} or no imaging" if recommended else "no imaging is advised now"
        return _Advice("warning", (f"Low-value scan: {ordered} is {label} in {phrase}; {tail}",
                                   f"Low-value scan: {ordered} is {label} here; {tail}",
                                   f"Low-value scan: {ordered} is {label} here"), recommended, cancel=True)
    if hard and recommended:
        reasons = "; ".join(b.contraindication.label for b in hard)
        return _Advice("warning", (f"{ordered} may be unsafe here ({reasons}); consider {recommended.procedure.name}",
                                   f"{ordered} may be unsafe here; consider {recommended.procedure.name}"),
                       recommended, why_instead=f"Not ruled out by {reasons[0].lower()}{reasons[1:]}.")
    if rating and rating.rating is Appropriateness.USUALLY_NOT_APPROPRIATE:
        if recommended:
            return _Advice("warning", (f"{ordered} is Usually Not Appropriate here; {recommended.procedure.name} "
                                       "is preferred",), recommended)
        return _Advice("warning", (f"{ordered} is Usually Not Appropriate in {phrase}",
                                   f"{ordered} is Usually Not Appropriate here"))
    if rating and rating.rating is Appropriateness.MAY_BE_APPROPRIATE and recommended:
        return _Advice("info", (f"{recommended.procedure.name} is the Usually Appropriate study in {phrase}",
                                f"{recommended.procedure.name} is the Usually Appropriate study here"), recommended)
    if assessment.outcome is Outcome.NO_CRITERIA_APPLY and not explained:
        return _unrated_advice(assessment, ordered, phrase)
    if blocked:
        return _safety_advice(assessment, ordered)
    if cards_when_appropriate and rating:
        return _Advice("info", (f"{ordered} is {rating.rating.label} in {phrase}",
                                f"{ordered} is {rating.rating.label} here"))
    return None


def _safety_advice(assessment: OrderAssessment, ordered: str) -> _Advice:
    """A contraindication touches the ordered study and nothing better is recommended: name it, and
    where a gadolinium caution leaves a same-region MRI without contrast that the scenario rates
    Usually Appropriate, offer that too (as an option: a group II agent keeps the order possible).
    Cautions alone, with nothing to offer instead (an MR-conditional pacemaker): the study stays, and
    the summary is what to arrange before it."""
    touching = assessment.ordered_blocked_by
    hard = [item for item in touching if item.contraindication.severity != "caution"]
    label = (hard or touching)[0].contraindication.label
    alternative = assessment.without_contrast
    if alternative is None and not hard:
        return _Advice("warning", (f"{label} before {ordered}", label))
    if alternative is None:
        return _Advice("warning", (f"Check safety: {label}",))
    name = alternative.procedure.name
    return _Advice("warning", (f"Check safety: {label}; {name} is also Usually Appropriate",
                               f"Check safety: {label}; or {name}", f"Check safety: {label}"),
                   alternative, why_instead="Needs no gadolinium.", optional_switch=True)


def _unrated_advice(assessment: OrderAssessment, ordered: str, phrase: str) -> _Advice | None:
    """A study the recognised scenario does not rate: say so, and name the study it does prefer.

    Nothing to offer, or a study outside the scenario's question (a CT for abdominal pain in a
    breast cancer survivor, mammography after bilateral mastectomy): no card; the rating action
    still says "no criteria apply" (say less when unsure, docs/clinical-scenarios.md).
    """
    instead = assessment.recommended or (preferred_study(assessment) if assessment.study_in_scenario else None)
    if instead is None:
        return None
    name = instead.procedure.name
    return _Advice("info", (f"{ordered} is not rated for {phrase}; {name} is the Usually Appropriate study",
                            f"{ordered} is not rated here; {name} is the Usually Appropriate study",
                            f"Not rated here; {name} is the Usually Appropriate study"),
                   instead, why_instead="The preferred study for this scenario, if the order is for this question.")


def preferred_study(assessment: OrderAssessment) -> ScanRating | None:
    """The scenario's first preferred study that is Usually Appropriate for this patient and not ruled
    out by a recorded contraindication (the table holds only ratings whose conditions hold)."""
    rows = {row.procedure.id: row for row in assessment.table}
    ordered_id = assessment.ordered.id if assessment.ordered else None
    for preference in assessment.scenario.preferred:
        row = rows.get(preference.procedure)
        if row and row.rating is UA and row.procedure.id != ordered_id \
                and not is_ruled_out(row.procedure, assessment.contraindications):
            return row
    return None


# --- the cards ---------------------------------------------------------------------------------


def _main_card(assessment: OrderAssessment, advice: _Advice, context: _Context) -> Card:
    suggestions: list[Suggestion] = []
    instead_line = ""
    if advice.instead is not None:
        switch = switch_suggestion(assessment, advice.instead.procedure, advice.instead, context.qcdsm_id)
        suggestions.append(replace(switch, is_recommended=False) if advice.optional_switch else switch)
    elif advice.alternative is not None:
        target = context.knowledge.procedures[advice.alternative.suggest]
        suggestions.append(switch_suggestion(assessment, target, None, context.qcdsm_id))
        radiation = wording.radiation_words(target)
        instead_line = (f"{target.name}" + (f", {radiation}" if radiation else "") + ". "
                        + wording.without_notes(advice.alternative.detail))
    if advice.cancel:
        suggestions.append(cancel_suggestion(assessment, recommended=not suggestions))
    detail = order_detail(assessment, context.knowledge, context.evidence_base_url, advice.instead,
                          advice.why_instead, no_imaging=advice.cancel, instead_line=instead_line,
                          instead_heading="Or" if advice.optional_switch else "Instead")
    summaries = advice.summaries
    if advice.alternative is not None:
        name = context.knowledge.procedures[advice.alternative.suggest].name
        summaries = tuple(t.replace("no imaging is advised now", f"consider {name} or no imaging") for t in summaries)
    return _card(assessment.scenario, context, summary=_fit(*summaries), indicator=advice.indicator,
                 detail=detail, suggestions=tuple(suggestions))


def _surveillance_card(assessment: OrderAssessment, context: _Context) -> Card:
    notice = assessment.surveillance
    when = notice.last_study.date.isoformat() if notice.last_study.date else "an undated day"
    study = assessment.ordered.name if assessment.ordered else "study"
    months = notice.expected_interval_months
    at = f" at month {notice.months_since_anchor} after treatment" if notice.months_since_anchor is not None else ""
    lines = [
        f"**Last {study}:** {when}, {notice.days_since_last} days ago; the schedule{at} is one every {months} months.",
        "**Consider:** keeping to the schedule unless new symptoms or findings justify an earlier study.",
    ]
    schedule = assessment.scenario.surveillance
    lines.append(provenance_line(assessment.scenario, context.knowledge, context.evidence_base_url,
                                 tuple(schedule.source) if schedule else ()))
    summary = (f"Earlier than the surveillance schedule: last study {notice.days_since_last} days ago, "
               f"schedule is every {months} months")
    return _card(assessment.scenario, context, summary=_fit(summary, "Earlier than the surveillance schedule"),
                 indicator="info", detail="\n\n".join(lines))


def _recommendation_card(assessment: OrderAssessment, recommendation, context: _Context) -> Card:
    knowledge = context.knowledge
    suggestions: tuple[Suggestion, ...] = ()
    if recommendation.suggest and recommendation.suggest in knowledge.procedures:
        target = knowledge.procedures[recommendation.suggest]
        suggestions = (switch_suggestion(assessment, target, None, context.qcdsm_id),)
    text = wording.without_notes(recommendation.detail)
    if not wording.primary_sources(recommendation.sources, knowledge):
        text += f" (Advice {wording.NOT_VERIFIED}.)"
    detail = text + "\n\n" + provenance_line(assessment.scenario, knowledge, context.evidence_base_url)
    return _card(assessment.scenario, context, summary=_fit(wording.without_notes(recommendation.summary)), detail=detail,
                 indicator=recommendation.indicator, suggestions=suggestions)


def _card(scenario: Scenario, context: _Context, *, summary: str, indicator: str, detail: str,
          suggestions: tuple[Suggestion, ...] = ()) -> Card:
    return Card(
        summary=summary,
        indicator=indicator,
        source=_source(scenario, context),
        detail=detail,
        suggestions=suggestions,
        selection_behavior="at-most-one" if suggestions else None,
        override_reasons=_override_reasons(scenario, context.knowledge),
        links=_links(scenario, context),
    )


def _source(scenario: Scenario, context: _Context) -> Source:
    label = "Imaging appropriateness: " + ("ACR Appropriateness Criteria" if wording.acr_provenance(scenario)
                                           else "published guideline")
    url = wording.evidence_url(context.evidence_base_url, scenario.id) if context.evidence_base_url else None
    if url is None:
        url = next((s.url for s in wording.primary_sources(scenario.sources, context.knowledge) if s.url), None)
    return Source(label=label, url=url)


def _links(scenario: Scenario, context: _Context) -> tuple[Link, ...]:
    links = []
    if context.evidence_base_url:
        links.append(Link(label="All ratings and rules for this scenario",
                          url=wording.evidence_url(context.evidence_base_url, scenario.id)))
    for source in wording.primary_sources(scenario.sources, context.knowledge):
        if source.url and len(links) < MAX_LINKS:
            links.append(Link(label=_fit(source.title, limit=LINK_LABEL_LIMIT), url=source.url))
    return tuple(links)


def _override_reasons(scenario: Scenario, knowledge: Knowledge) -> tuple[Coding, ...]:
    return tuple(
        Coding(system=codes.OVERRIDE_REASON_SYSTEM, code=reason.code, display=reason.display)
        for code in scenario.override_reasons
        if (reason := knowledge.override_reasons.get(code))
    )


def _phrase(scenario: Scenario) -> str:
    """'treated cervical cancer, suspected recurrence' style phrase for summaries."""
    title = scenario.title
    return title[0].lower() + title[1:] if title else "this scenario"


def _fit(*texts: str, limit: int = SUMMARY_LIMIT) -> str:
    """The first text under 140 characters (CDS Hooks 2.0), else the last one cut at a word boundary."""
    for text in texts:
        if len(text) <= limit:
            return text
    cut = texts[-1][: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"
