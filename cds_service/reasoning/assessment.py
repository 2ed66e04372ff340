"""The result of reasoning about one draft order: what the cards and rating actions are built from."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cds_service.chart.facts import ClinicalFact, DraftOrder
from cds_service.kb.model import Appropriateness, Contraindication, Procedure, Recommendation, Scenario


class Outcome(str, Enum):
    RATED = "rated"                          # scenario matched and the ordered study is rated
    NO_CRITERIA_APPLY = "no-criteria-apply"  # scenario matched, ordered study not covered by it
    NOT_RATED = "not-rated"                  # no scenario recognised, or too little information: stay silent


@dataclass(frozen=True)
class ScanRating:
    """The rating of one study within the applied scenario."""

    procedure: Procedure
    rating: Appropriateness
    sources: tuple[str, ...]
    confidence: str


@dataclass(frozen=True)
class Evidence:
    """A chart fact that made a criterion true, with what the criterion was about."""

    label: str                               # "Cervical cancer", "Pelvic pain (last 90 days)", "SCC antigen rising"
    fact: ClinicalFact | None = None         # None for derived evidence (e.g. a trend spans several facts)
    facts: tuple[ClinicalFact, ...] = ()     # all facts behind a derived item (e.g. the marker series)


@dataclass(frozen=True)
class ActiveContraindication:
    contraindication: Contraindication
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class SurveillanceNotice:
    """The ordered surveillance study comes earlier than the schedule expects."""

    last_study: ClinicalFact
    days_since_last: int
    expected_interval_months: int
    months_since_anchor: int | None


@dataclass(frozen=True)
class OrderAssessment:
    order: DraftOrder
    outcome: Outcome
    ordered: Procedure | None = None                 # catalogue entry for the ordered study
    scenario: Scenario | None = None
    rating: ScanRating | None = None                 # the ordered study's rating (Outcome.RATED)
    #: Best study for this patient in this scenario, contraindications considered; None when the
    #: ordered study already is the best, or when nothing can be recommended.
    recommended: ScanRating | None = None
    #: Low-value surveillance: the right action is to not image at all.
    recommend_cancel: bool = False
    evidence: tuple[Evidence, ...] = ()
    contraindications: tuple[ActiveContraindication, ...] = ()
    #: Contraindications that block what the ordered study requires.
    ordered_blocked_by: tuple[ActiveContraindication, ...] = ()
    #: The same region's MRI without contrast, rated Usually Appropriate here, when a gadolinium
    #: contraindication touches the ordered MRI (named on the card next to a gadolinium caution).
    without_contrast: ScanRating | None = None
    #: The scenario's whole rating table, as it applies to this patient (for the card's table).
    table: tuple[ScanRating, ...] = ()
    surveillance: SurveillanceNotice | None = None
    recommendations: tuple[Recommendation, ...] = ()
    #: Whether the applied scenario names the ordered study at all (rated, covered, preferred …).
    #: False: the patient is recognised but the order is about another question (no suggestion).
    study_in_scenario: bool = True
    #: Why no rating was given (Outcome.NOT_RATED), for the audit log; never shown as a card.
    reason: str = ""
