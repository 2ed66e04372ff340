"""Gadolinium and failing kidneys: a caution that names a group II agent, not a switch to iodinated CT.

ACR-NKF consensus (Weinreb et al., Radiology 2021, doi:10.1148/radiol.2020202903): the risk of NSF
after a group II agent is very low even at eGFR < 30, on dialysis or with AKI, and withholding an
indicated contrast MRI may do more harm. So the contrast MRI stays the advice; where the scenario's
source rates an MRI of the same region without contrast (spine: ACR Myelopathy 2020), the card names
it as an option, and where gadolinium is truly ruled out that MRI comes before any CT. Where no
source rates a non-contrast MRI (the cervix), none is offered and none is invented.
"""

from __future__ import annotations

import pytest

from cds_service.cards.response import build_response
from cds_service.chart.facts import FactKind
from cds_service.kb.loader import load_knowledge
from cds_service.kb.model import Appropriateness
from cds_service.reasoning.assessment import Outcome
from cds_service.reasoning.engine import assess_order

from .reasoning_kb import chart, condition, draft_order, fact, knowledge_from_dicts, observation, procedure_done
from .test_reasoning import CERVIX_RECURRENCE, CONTRAINDICATIONS, DEFINITIONS, PROCEDURES, VALUESETS

UA = Appropriateness.USUALLY_APPROPRIATE
MRI_AP = ("cpt", "74183"), ("cpt", "72197")
MRI_PELVIS = (("cpt", "72197"),)
MRI_PELVIS_WO = (("cpt", "72195"),)
MRI_SPINE = (("cpt", "72157"),)
GADOLINIUM_RENAL = "gadolinium-severe-renal-impairment"


@pytest.fixture(scope="module")
def kb():
    return load_knowledge()


def egfr(value: float, ago: int, n: int = 1):
    return observation("loinc", "98979-8", value, ago=ago, unit="mL/min/1.73m2", source=f"Observation/egfr-{n}")


def cervix_recurrence():
    return [
        condition("icd", "C53.9", ago=790, status="remission", source="Condition/cx"),
        procedure_done("sct", "703423002", ago=730, source="Procedure/chemorad"),
        condition("icd", "R10.20", ago=14, source="Condition/pelvic-pain"),
    ]


def spine_new_symptoms():
    return [
        condition("icd", "C79.51", ago=280, source="Condition/vert-met"),
        procedure_done("sct", "427752004", ago=270, source="Procedure/decompression"),
        procedure_done("sct", "33195004", ago=240, source="Procedure/rt"),
        condition("icd", "M54.50", ago=5, source="Condition/back-pain"),
    ]


def assess(kb, facts, codes):
    return assess_order(draft_order(*codes), chart(*facts), kb)


# -- the shipped knowledge ---------------------------------------------------------------------------


def test_shipped_kidney_rule_is_a_caution_that_names_a_group_ii_agent(kb):
    rule = next(c for c in kb.contraindications if c.id == GADOLINIUM_RENAL)
    assert rule.severity == "caution" and rule.blocks == ("gadolinium",)
    assert "group II" in rule.advice and "acr-nkf-gadolinium-2021" in rule.sources


@pytest.mark.parametrize("codes", [MRI_AP, MRI_PELVIS], ids=["74183+72197", "72197"])
def test_cervix_egfr_22_keeps_the_contrast_mri_without_switching_to_ct(kb, codes):
    result = assess(kb, [*cervix_recurrence(), egfr(22, ago=6)], codes)
    assert result.scenario.id == "cervix-suspected-recurrence" and result.rating.rating is UA
    assert [c.contraindication.id for c in result.ordered_blocked_by] == [GADOLINIUM_RENAL]
    assert result.recommended is None          # no step down to contrast CT, itself cautioned for these kidneys
    assert result.without_contrast is None     # the cervix source rates no MRI without contrast


def test_cervix_unrated_non_contrast_mri_is_not_pushed_onto_gadolinium(kb):
    with_low = assess(kb, [*cervix_recurrence(), egfr(22, ago=6)], MRI_PELVIS_WO)
    assert with_low.outcome is Outcome.NO_CRITERIA_APPLY and with_low.recommended is None
    normal = assess(kb, cervix_recurrence(), MRI_PELVIS_WO)
    assert normal.recommended.procedure.id == "mri-abdomen-pelvis-wo-w"  # unchanged when the kidneys are fine


def test_old_low_egfr_then_normal_latest_gives_no_caution(kb):
    result = assess(kb, [*cervix_recurrence(), egfr(24, ago=60, n=1), egfr(78, ago=3, n=2)], MRI_AP)
    assert result.contraindications == () and result.ordered_blocked_by == ()


def test_spine_egfr_22_names_the_non_contrast_mri_the_source_rates(kb):
    result = assess(kb, [*spine_new_symptoms(), egfr(22, ago=6)], MRI_SPINE)
    assert result.scenario.id == "spine-metastasis-new-symptoms" and result.rating.rating is UA
    assert result.recommended is None
    assert result.without_contrast.procedure.id == "mri-spine-wo" and result.without_contrast.rating is UA


def test_dialysis_is_the_same_caution(kb):
    dialysis = condition("icd", "N18.6", ago=400, source="Condition/esrd")
    result = assess(kb, [*cervix_recurrence(), dialysis], MRI_AP)
    assert [c.contraindication.id for c in result.ordered_blocked_by] == [GADOLINIUM_RENAL]
    assert result.recommended is None


def test_spine_gadolinium_ruled_out_goes_to_non_contrast_mri_not_ct(kb):
    allergy = fact(FactKind.ALLERGY, "sct", "293637006", ago=900, status="active", source="AllergyIntolerance/cm")
    result = assess(kb, [*spine_new_symptoms(), allergy], MRI_SPINE)
    assert result.recommended.procedure.id == "mri-spine-wo"


# -- the engine rule on a miniature knowledge base -----------------------------------------------------

MRI_PELVIS_WO_ENTRY = {"id": "mri-pelvis-wo", "name": "MRI pelvis without IV contrast", "requires": ["mri"],
                       "codes": [{"system": "cpt", "code": "72195"}]}


def mini_kb(*, rates_non_contrast: bool, severity: str):
    ratings = list(CERVIX_RECURRENCE["ratings"])
    if rates_non_contrast:
        ratings.append({"procedure": "mri-pelvis-wo", "rating": "usually-appropriate"})
    contraindications = [dict(c, severity=severity) if c["id"] == "gadolinium-renal" else c for c in CONTRAINDICATIONS]
    return knowledge_from_dicts(procedures=[*PROCEDURES, MRI_PELVIS_WO_ENTRY], valuesets=VALUESETS,
                                definitions=DEFINITIONS, contraindications=contraindications,
                                scenarios=[dict(CERVIX_RECURRENCE, ratings=ratings)])


def mini_chart():
    return [condition("icd", "C53.9", ago=900, status="remission", source="Condition/cx"),
            procedure_done("sct", "703423002", ago=700, source="Procedure/chemorad"),
            condition("icd", "R10.2", ago=50, source="Condition/pain"),
            observation("loinc", "98979-8", 22, ago=10, unit="mL/min/1.73m2", source="Observation/egfr")]


@pytest.mark.parametrize(
    "rates_non_contrast, severity, recommended, without_contrast",
    [
        (True, "block", "mri-pelvis-wo", "mri-pelvis-wo"),      # ruled out: same-region MRI before CT
        (False, "block", "ct-abdomen-pelvis-w", None),           # no rating for it: the authored preferences
        (True, "caution", None, "mri-pelvis-wo"),                # caution: the order stands, the option is named
        (False, "caution", None, None),
    ],
    ids=["block+rated", "block+unrated", "caution+rated", "caution+unrated"],
)
def test_gadolinium_fallback_prefers_a_rated_non_contrast_mri(rates_non_contrast, severity, recommended, without_contrast):
    knowledge = mini_kb(rates_non_contrast=rates_non_contrast, severity=severity)
    result = assess_order(draft_order(*MRI_AP), chart(*mini_chart()), knowledge)
    assert (result.recommended.procedure.id if result.recommended else None) == recommended
    assert (result.without_contrast.procedure.id if result.without_contrast else None) == without_contrast


# -- what the clinician reads ----------------------------------------------------------------------------


def card_of(kb, facts, codes) -> dict:
    body, _ = build_response([assess(kb, facts, codes)], kb, qcdsm_id="test-qcdsm")
    assert len(body["cards"]) == 1
    return body["cards"][0]


def test_cervix_card_names_the_group_ii_agent_and_offers_no_ct(kb):
    card = card_of(kb, [*cervix_recurrence(), egfr(22, ago=6)], MRI_PELVIS)
    assert "group II" in card["summary"] and "CT" not in card["summary"]
    assert "never a group I agent" in card["detail"] and "eGFR 22" in card["detail"]
    assert not card.get("suggestions")


def test_spine_card_offers_the_non_contrast_mri_as_an_option_not_the_advice(kb):
    card = card_of(kb, [*spine_new_symptoms(), egfr(22, ago=6)], MRI_SPINE)
    assert "MRI spine without contrast" in card["summary"]
    assert [(s["label"], s["isRecommended"]) for s in card["suggestions"]] == [
        ("Switch to MRI spine without contrast", False)]
    codes = [c["code"] for c in card["suggestions"][0]["actions"][0]["resource"]["code"]["coding"]]
    assert codes == ["72146"]  # the thoracic MRI without contrast for a thoracic order
