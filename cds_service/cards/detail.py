"""The detail of a card: at most five short paragraphs a clinician reads in five seconds.

1. the rating of this order with its radiation level, flagged "not yet verified against the ACR
   table" when it is not confirmed against the published table (every rating, everywhere);
2. the two or three chart facts that decided it, in plain words with their dates;
3. safety findings that rule a study out, when there are any;
4. the recommended study and why;
5. one line of provenance: the ACR topic and variant (or the guideline), a link to the evidence page
   with every rating of the scenario, and the knowledge version.

The rating table itself is on the evidence page, not on the card. Each item is its own paragraph
(blank lines between them), so Markdown renderers never run a list into the line before it.
"""

from __future__ import annotations

from cds_service.cards import wording
from cds_service.kb.model import Knowledge, Procedure, Scenario
from cds_service.reasoning.assessment import Evidence, OrderAssessment, ScanRating

#: The newest facts are the ones that put the patient in the scenario (see scenario_evidence).
MAX_FACTS = 3


def rating_phrase(procedure: Procedure, rating: ScanRating | None) -> str:
    """"Usually Not Appropriate (not yet verified against the ACR table), no ionising radiation (O)"."""
    text = rating.rating.label if rating else "not rated"
    if rating is not None and not wording.is_verified(rating.confidence):
        text += f" ({wording.NOT_VERIFIED})"
    radiation = wording.radiation_words(procedure)
    return f"{text}, {radiation}" if radiation else text


def distinct(evidence: tuple[Evidence, ...], limit: int = MAX_FACTS) -> list[str]:
    """The labels of the newest facts, one per finding ("Pelvic pain" once, with its newest date)."""
    labels: list[str] = []
    seen: set[str] = set()
    for item in evidence:
        finding = item.label.split(" (", 1)[0].strip().lower()
        if finding not in seen:
            seen.add(finding)
            labels.append(item.label)
    return labels[:limit]


def facts_line(evidence: tuple[Evidence, ...]) -> str:
    labels = distinct(evidence)
    return "**Why:** " + "; ".join(labels) if labels else ""


def provenance_line(scenario: Scenario, knowledge: Knowledge, evidence_base_url: str | None,
                    source_ids: tuple[str, ...] = ()) -> str:
    """One line: the ACR topic and variant (else the primary guideline), the evidence page, the version."""
    cited = wording.acr_provenance(scenario)
    if not cited:
        guidelines = wording.primary_sources(source_ids or scenario.sources, knowledge)
        cited = wording.source_markdown(guidelines[0]) if guidelines else ""
    parts = [f"Source: {cited}"] if cited else []
    if evidence_base_url:
        parts.append(f"[All ratings and rules]({wording.evidence_url(evidence_base_url, scenario.id)})")
    parts.append(f"knowledge {knowledge.version}")
    return "_" + " · ".join(parts) + "_"


def safety_line(assessment: OrderAssessment) -> str:
    """The first two safety findings with the fact behind each; the advice of those that touch the
    ordered study ("use a group II agent"), so a caution says what to do, not only what was found."""
    shown = assessment.contraindications[:2]
    touching = {item.contraindication.id for item in assessment.ordered_blocked_by}
    found = "; ".join(f"{c.contraindication.label} ({', '.join(distinct(c.evidence, 1))})" for c in shown)
    advice = [c.contraindication.advice for c in shown
              if c.contraindication.advice and c.contraindication.id in touching]
    return "**Safety:** " + found + (". " + " ".join(advice) if advice else "")


NO_IMAGING = "**Instead:** no imaging now; surveillance imaging is not advised without new symptoms or findings."


def order_detail(assessment: OrderAssessment, knowledge: Knowledge, evidence_base_url: str | None,
                 instead: ScanRating | None, why_instead: str = "", *, no_imaging: bool = False,
                 instead_line: str = "", instead_heading: str = "Instead") -> str:
    """The main card's detail for one rated (or recognised but unrated) order."""
    scenario, ordered = assessment.scenario, assessment.ordered
    lines: list[str] = []
    if ordered:
        title = scenario.title[0].lower() + scenario.title[1:]
        lines.append(f"**This order:** {ordered.name} for {title}: {rating_phrase(ordered, assessment.rating)}.")
    lines.append(facts_line(assessment.evidence))
    if assessment.contraindications:
        lines.append(safety_line(assessment))
    if instead is not None:
        lines.append(f"**{instead_heading}:** {instead.procedure.name}: {rating_phrase(instead.procedure, instead)}."
                     + (f" {why_instead}" if why_instead else ""))
    elif instead_line:
        lines.append(f"**Instead:** {instead_line}")
    elif no_imaging:
        lines.append(NO_IMAGING)
    lines.append(provenance_line(scenario, knowledge, evidence_base_url))
    return "\n\n".join(line for line in lines if line)
