"""Order assessments → CDS Hooks cards, suggestions and PAMA rating system actions.

Card policy lives here and nowhere else:

* every rated order gets a machine-readable rating (an ``update`` of its ServiceRequest carrying the
  Argonaut ``pama-rating`` extensions), under both ``systemActions`` and ``extension.systemActions``;
* a Usually Not Appropriate order gets a warning, with a one-click switch to the recommended study,
  or — for low-value surveillance — a suggestion to cancel;
* a May Be Appropriate order, or one the scenario does not rate, gets an info card when a Usually
  Appropriate study exists for this patient;
* an order whose study a recorded contraindication rules out gets a warning with the alternative;
* surveillance repeated earlier than the schedule, and scenario advice (e.g. biopsy first), get cards;
* an order that is already right is rated but gets no card ("quiet when right") unless configured;
* an order nothing applies to gets nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


from cds_service import codes
from cds_service.chart.facts import ClinicalFact
from cds_service.kb.model import Appropriateness, Knowledge, Scenario
from cds_service.hooks.response import Action, Card, Coding, Link, Source, Suggestion, new_uuid, to_json
from cds_service.reasoning.assessment import OrderAssessment, Outcome
from cds_service.cards.rating import pama_code_of, rating_action
from cds_service.cards.suggestions import cancel_suggestion, switch_suggestion

SOURCE_LABEL = "Oncology imaging appropriateness (ACR AC)"
SUMMARY_LIMIT = 139


@dataclass(frozen=True)
class RatedOrder:
    """What the audit log needs to know about one order's answer."""

    assessment: OrderAssessment
    pama_code: str | None
    consult_id: str | None
    cards: tuple[Card, ...]


def build_response(
    assessments: Iterable[OrderAssessment],
    knowledge: Knowledge,
    *,
    qcdsm_id: str,
    cards_when_appropriate: bool = False,
) -> tuple[dict, list[RatedOrder]]:
    """The JSON response body, plus per-order results for the audit log."""
    cards: list[Card] = []
    actions: list[Action] = []
    rated: list[RatedOrder] = []
    for assessment in assessments:
        consult_id = pama_code = None
        if assessment.outcome is not Outcome.NOT_RATED:
            consult_id = f"urn:uuid:{new_uuid()}"
            pama_code = pama_code_of(assessment)
            actions.append(rating_action(assessment, qcdsm_id, consult_id))
        order_cards = tuple(_cards_for(assessment, knowledge, qcdsm_id, cards_when_appropriate))
        cards.extend(order_cards)
        rated.append(RatedOrder(assessment, pama_code, consult_id, order_cards))

    body: dict = {"cards": [to_json(c) for c in cards]}
    if actions:
        action_json = [to_json(a) for a in actions]
        body["systemActions"] = action_json
        # The CDS Hooks sandbox (and the Argonaut PAMA guide) read ratings only from here.
        body["extension"] = {"systemActions": action_json}
    return body, rated


# --- rating extensions -------------------------------------------------------------------------


# --- cards -------------------------------------------------------------------------------------


def _cards_for(
    assessment: OrderAssessment, knowledge: Knowledge, qcdsm_id: str, cards_when_appropriate: bool
) -> Iterable[Card]:
    if assessment.outcome is Outcome.NOT_RATED or assessment.scenario is None:
        return
    main = _main_card(assessment, knowledge, qcdsm_id, cards_when_appropriate)
    if main:
        yield main
    if assessment.surveillance:
        yield _surveillance_card(assessment, knowledge)
    for recommendation in assessment.recommendations:
        suggestions = ()
        if recommendation.suggest and recommendation.suggest in knowledge.procedures:
            target = knowledge.procedures[recommendation.suggest]
            suggestions = (switch_suggestion(assessment, target, None, qcdsm_id),)
        yield Card(
            summary=_fit(recommendation.summary),
            indicator=recommendation.indicator,
            source=_source(assessment.scenario, knowledge),
            detail=recommendation.detail + "\n\n" + _sources_markdown(recommendation.sources, knowledge),
            suggestions=suggestions,
            selection_behavior="at-most-one" if suggestions else None,
            override_reasons=_override_reasons(assessment.scenario, knowledge),
            links=_links(assessment.scenario, knowledge),
        )


def _main_card(
    assessment: OrderAssessment, knowledge: Knowledge, qcdsm_id: str, cards_when_appropriate: bool
) -> Card | None:
    scenario, ordered = assessment.scenario, assessment.ordered
    rating = assessment.rating.rating if assessment.rating else None
    recommended = assessment.recommended
    blocked = assessment.ordered_blocked_by
    ordered_name = ordered.name if ordered else "This study"

    suggestions: list[Suggestion] = []
    if assessment.recommend_cancel:
        indicator = "warning"
        summary = f"Low-value scan: {ordered_name} is {rating.label} in {_phrase(scenario)}"
        suggestions.append(cancel_suggestion(assessment))
    elif blocked and recommended:
        indicator = "warning"
        reasons = "; ".join(b.contraindication.label for b in blocked)
        summary = f"{ordered_name} may be unsafe here ({reasons}); consider {recommended.procedure.name}"
    elif rating is Appropriateness.USUALLY_NOT_APPROPRIATE:
        indicator = "warning"
        summary = f"{ordered_name} is Usually Not Appropriate in {_phrase(scenario)}"
        if recommended:
            summary = f"{ordered_name} is Usually Not Appropriate here; {recommended.procedure.name} is preferred"
    elif recommended and (rating is Appropriateness.MAY_BE_APPROPRIATE or assessment.outcome is Outcome.NO_CRITERIA_APPLY):
        indicator = "info"
        summary = f"{recommended.procedure.name} is the Usually Appropriate study in {_phrase(scenario)}"
    elif blocked:
        indicator = "warning"
        summary = f"Check safety: {blocked[0].contraindication.label}"
    elif cards_when_appropriate and rating:
        indicator = "info"
        summary = f"{ordered_name} is {rating.label} in {_phrase(scenario)}"
    else:
        return None

    if recommended and not assessment.recommend_cancel:
        suggestions.append(switch_suggestion(assessment, recommended.procedure, recommended, qcdsm_id))
    return Card(
        summary=_fit(summary, fallback=f"{ordered_name}: see imaging appropriateness advice"),
        indicator=indicator,
        source=_source(scenario, knowledge),
        detail=_detail(assessment, knowledge),
        suggestions=tuple(suggestions),
        selection_behavior="at-most-one" if suggestions else None,
        override_reasons=_override_reasons(scenario, knowledge),
        links=_links(scenario, knowledge),
    )


def _surveillance_card(assessment: OrderAssessment, knowledge: Knowledge) -> Card:
    notice = assessment.surveillance
    last = notice.last_study
    summary = (
        f"Earlier than the surveillance schedule: last study {notice.days_since_last} days ago, "
        f"schedule is every {notice.expected_interval_months} months"
    )
    lines = [
        f"The last matching study was on {_date(last)} ({last.source}); the schedule for "
        f"{_phrase(assessment.scenario)} expects one every {notice.expected_interval_months} months"
        + (f" at month {notice.months_since_anchor} after treatment." if notice.months_since_anchor is not None else "."),
        "",
        "Consider keeping to the schedule unless new symptoms or findings justify an earlier study.",
    ]
    schedule = assessment.scenario.surveillance
    if schedule and schedule.source:
        lines += ["", _sources_markdown(schedule.source, knowledge)]
    return Card(
        summary=_fit(summary),
        indicator="info",
        source=_source(assessment.scenario, knowledge),
        detail="\n".join(lines),
        override_reasons=_override_reasons(assessment.scenario, knowledge),
        links=_links(assessment.scenario, knowledge),
    )


def _detail(assessment: OrderAssessment, knowledge: Knowledge) -> str:
    scenario, ordered = assessment.scenario, assessment.ordered
    parts = [f"**Scenario:** {scenario.title}"]
    if scenario.acr_topic:
        parts[-1] += f" — {scenario.acr_topic}" + (f", variant: {scenario.variant}" if scenario.variant else "")
    if scenario.summary:
        parts.append(scenario.summary)
    if ordered:
        rating = assessment.rating.rating.label if assessment.rating else "not rated in this scenario"
        parts.append(f"**This order:** {ordered.name} — {rating} (radiation {ordered.radiation.level})")
    if assessment.evidence:
        parts.append("**Chart facts that matched:**\n" + "\n".join(f"- {e.label}" for e in assessment.evidence))
    if assessment.contraindications:
        lines = [
            f"- {c.contraindication.label}: " + ", ".join(e.label for e in c.evidence)
            for c in assessment.contraindications
        ]
        parts.append("**Contraindications recorded:**\n" + "\n".join(lines))
    if assessment.table:
        rows = ["| Study | Rating | Relative radiation level |", "|---|---|---|"]
        for row in assessment.table:
            name = row.procedure.name
            if ordered and row.procedure.id == ordered.id:
                name = f"**{name} (ordered)**"
            tag = " (seed)" if row.confidence == "seed" else ""
            rows.append(f"| {name} | {row.rating.label}{tag} | {row.procedure.radiation.level} |")
        parts.append("\n".join(rows))
    if scenario.advice:
        parts.append(f"**Next steps:** {scenario.advice}")
    parts.append(_sources_markdown(scenario.sources, knowledge))
    if any(r.confidence == "seed" for r in assessment.table):
        parts.append(
            "_Ratings marked (seed) come from the product's scope documents and await confirmation "
            "against the licensed ACR tables._"
        )
    parts.append(f"_Knowledge base {knowledge.version}._")
    return "\n\n".join(parts)


def _date(fact: ClinicalFact) -> str:
    return fact.date.isoformat() if fact.date else "undated"


def _sources_markdown(source_ids: Iterable[str], knowledge: Knowledge) -> str:
    items = []
    for source_id in source_ids:
        source = knowledge.sources.get(source_id)
        if source is None:
            continue
        items.append(f"[{source.title}]({source.url})" if source.url else source.title)
    return "**Sources:** " + "; ".join(items) if items else ""


def _source(scenario: Scenario, knowledge: Knowledge) -> Source:
    url = next((s.url for s in _scenario_sources(scenario, knowledge) if s.url), None)
    return Source(label=SOURCE_LABEL, url=url)


def _links(scenario: Scenario, knowledge: Knowledge) -> tuple[Link, ...]:
    links = []
    for source in _scenario_sources(scenario, knowledge):
        if source.url and source.kind != "seed":
            links.append(Link(label=_fit(source.title, limit=100), url=source.url))
    return tuple(links[:3])


def _scenario_sources(scenario: Scenario, knowledge: Knowledge):
    return [knowledge.sources[s] for s in scenario.sources if s in knowledge.sources]


def _override_reasons(scenario: Scenario, knowledge: Knowledge) -> tuple[Coding, ...]:
    return tuple(
        Coding(system=codes.OVERRIDE_REASON_SYSTEM, code=reason.code, display=reason.display)
        for code in scenario.override_reasons
        if (reason := knowledge.override_reasons.get(code))
    )


def _phrase(scenario: Scenario) -> str:
    """'suspected cervical cancer recurrence' style phrase for summaries."""
    title = scenario.title
    return title[0].lower() + title[1:] if title else "this scenario"


def _fit(text: str, *, fallback: str | None = None, limit: int = SUMMARY_LIMIT) -> str:
    """Keep card summaries under 140 characters (CDS Hooks 2.0), cutting at a word boundary."""
    if len(text) <= limit:
        return text
    if fallback and len(fallback) <= limit:
        return fallback
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"
