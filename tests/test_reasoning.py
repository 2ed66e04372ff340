"""Criteria evaluation and order assessment over small, hand-built knowledge (no loader, no data).

Each test builds the chart it needs from ClinicalFact values; the knowledge is a miniature of the
shipped format (docs/knowledge.md), written as the dicts an author would write.
"""

from __future__ import annotations

from dataclasses import replace

from msgspec.structs import replace as struct_replace
from datetime import date

import pytest

from cds_service.chart.facts import ChartFacts, ClinicalFact, Code, FactKind, MarkerTrend
from cds_service.kb.model import Appropriateness
from cds_service.reasoning.assessment import Outcome
from cds_service.reasoning.criteria import CriteriaEvaluator, evaluate
from cds_service.reasoning.engine import assess_order, expected_interval, months_between

from .reasoning_kb import (
    TODAY,
    chart,
    condition,
    days_ago,
    draft_order,
    fact,
    imaging,
    knowledge_from_dicts,
    observation,
    order_reason,
    procedure_done,
)

UA = Appropriateness.USUALLY_APPROPRIATE
MBA = Appropriateness.MAY_BE_APPROPRIATE
UNA = Appropriateness.USUALLY_NOT_APPROPRIATE

# -- a miniature knowledge base ---------------------------------------------------------------------

PROCEDURES = [
    {"id": "mri-abdomen-pelvis-wo-w", "name": "MRI abdomen and pelvis without and with IV contrast",
     "requires": ["mri", "gadolinium"],
     "codes": [{"system": "cpt", "code": "74183", "part": "abdomen"}, {"system": "cpt", "code": "72197", "part": "pelvis"}]},
    {"id": "mri-pelvis-wo-w", "name": "MRI pelvis without and with IV contrast", "requires": ["mri", "gadolinium"],
     "codes": [{"system": "cpt", "code": "72197"}]},
    {"id": "ct-abdomen-pelvis-w", "name": "CT abdomen and pelvis with IV contrast", "modality": "CT",
     "requires": ["iodinated-contrast", "ionising-radiation"], "codes": [{"system": "cpt", "code": "74177"}]},
    {"id": "ct-chest-w", "name": "CT chest with IV contrast", "modality": "CT",
     "requires": ["iodinated-contrast", "ionising-radiation"], "codes": [{"system": "cpt", "code": "71260"}]},
    {"id": "fdg-pet-ct", "name": "FDG-PET/CT skull base to mid-thigh", "modality": "PET-CT",
     "requires": ["ionising-radiation"], "codes": [{"system": "cpt", "code": "78815"}]},
    {"id": "us-pelvis", "name": "US pelvis", "modality": "US", "codes": [{"system": "cpt", "code": "76856"}]},
    {"id": "bone-scan", "name": "Bone scan whole body", "modality": "NM", "requires": ["ionising-radiation"],
     "codes": [{"system": "cpt", "code": "78306"}]},
    {"id": "mri-knee-wo", "name": "MRI knee without IV contrast", "requires": ["mri"],
     "codes": [{"system": "cpt", "code": "73721"}]},
    {"id": "ct-chest-abdomen-pelvis-w", "name": "CT chest, abdomen and pelvis with IV contrast", "modality": "CT",
     "requires": ["iodinated-contrast", "ionising-radiation"],
     "codes": [{"system": "cpt", "code": "71260"}, {"system": "cpt", "code": "74177"}]},
]

VALUESETS = [
    {"id": "cervical-cancer", "title": "Cervical cancer",
     "codes": [{"system": "sct", "code": "363354003"}], "prefixes": [{"system": "icd", "prefix": "C53"}]},
    {"id": "cervix-treatment-history", "title": "Cervical cancer treatment history",
     "codes": [{"system": "icd", "code": "Z92.3"}]},
    {"id": "cervix-cancer-treatment", "title": "Cervical cancer treatment",
     "codes": [{"system": "sct", "code": "703423002"}, {"system": "sct", "code": "116143008"}]},
    {"id": "breast-cancer", "title": "Breast cancer", "prefixes": [{"system": "icd", "prefix": "C50"}],
     "codes": [{"system": "icd", "code": "Z85.3"}]},
    {"id": "pelvic-pain", "title": "Pelvic pain", "codes": [{"system": "sct", "code": "30473006"}],
     "prefixes": [{"system": "icd", "prefix": "R10.2"}]},
    {"id": "leg-swelling", "title": "Leg swelling", "codes": [{"system": "icd", "code": "R60.0"}]},
    {"id": "hydronephrosis", "title": "Hydronephrosis", "codes": [{"system": "sct", "code": "43064006"}]},
    {"id": "scc-antigen", "title": "SCC antigen", "codes": [{"system": "loinc", "code": "9679-2"}]},
    {"id": "egfr", "title": "eGFR", "codes": [{"system": "loinc", "code": "98979-8"}]},
    {"id": "pregnancy-status", "title": "Pregnancy status", "codes": [{"system": "loinc", "code": "82810-3"}]},
    {"id": "pregnant", "title": "Pregnant", "codes": [{"system": "sct", "code": "77386006"}]},
    {"id": "chemotherapy", "title": "Chemotherapy", "codes": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "40048"}]},
    {"id": "cardiac-device", "title": "Pacemaker or defibrillator",
     "codes": [{"system": "sct", "code": "441509002"}, {"system": "icd", "code": "Z95.0"}]},
    {"id": "contrast-allergy", "title": "Allergy to contrast media", "codes": [{"system": "sct", "code": "293637006"}]},
    {"id": "knee-injury", "title": "Knee injury", "prefixes": [{"system": "icd", "prefix": "S83"}]},
    {"id": "claustrophobia", "title": "Claustrophobia", "codes": [{"system": "sct", "code": "19887002"}]},
]

DEFINITIONS = {
    "treated-cervical-cancer": {"all": [
        {"condition": "cervical-cancer"},
        {"any": [{"procedure": "cervix-cancer-treatment"}, {"condition": "cervix-treatment-history"}]},
    ]},
    "cervix-recurrence-trigger": {"any": [
        {"condition": "pelvic-pain", "within_days": 90},
        {"condition": "leg-swelling", "within_days": 90},
        {"finding": "hydronephrosis", "within_days": 180},
        {"marker_trend": "scc-antigen"},
    ]},
    "loop-a": {"ref": "loop-b"},
    "loop-b": {"ref": "loop-a"},
}

CONTRAINDICATIONS = [
    {"id": "mri-cardiac-device", "label": "Pacemaker: MR-safety review", "blocks": ["mri"],
     "when": {"any": [{"device": "cardiac-device"}, {"condition": "cardiac-device"}]}},
    {"id": "gadolinium-renal", "label": "eGFR below 30", "blocks": ["gadolinium"],
     "when": {"observation": "egfr", "value_below": 30, "within_days": 90}},
    {"id": "iodinated-allergy", "label": "Contrast allergy", "blocks": ["iodinated-contrast"],
     "when": {"allergy": "contrast-allergy"}},
    {"id": "pregnancy", "label": "Pregnant", "blocks": ["ionising-radiation"],
     "when": {"observation": "pregnancy-status", "value_in": "pregnant", "within_days": 30}},
    {"id": "claustrophobia", "label": "Claustrophobia", "blocks": ["mri"], "severity": "caution",
     "when": {"condition": "claustrophobia"}},
]

CERVIX_RECURRENCE = {
    "id": "cervix-suspected-recurrence", "priority": 100,
    "when": {"all": [{"ref": "treated-cervical-cancer"}, {"ref": "cervix-recurrence-trigger"}]},
    "ratings": [
        {"procedure": "mri-abdomen-pelvis-wo-w", "rating": "usually-appropriate"},
        {"procedure": "fdg-pet-ct", "rating": "usually-appropriate"},
        {"procedure": "ct-abdomen-pelvis-w", "rating": "usually-appropriate"},
        {"procedure": "ct-chest-w", "rating": "usually-appropriate"},
        {"procedure": "us-pelvis", "rating": "usually-not-appropriate"},
    ],
    "preferred": [{"procedure": "mri-abdomen-pelvis-wo-w"}, {"procedure": "ct-abdomen-pelvis-w"}, {"procedure": "fdg-pet-ct"}],
    "recommendations": [
        {"id": "gyn-exam", "when": {"condition": "pelvic-pain"}},
        {"id": "us-not-enough", "when": {"condition": "pelvic-pain"}, "applies_to": ["us-pelvis"]},
        {"id": "never", "when": {"condition": "breast-cancer"}},
    ],
}

CERVIX_ROUTINE = {
    "id": "cervix-routine-surveillance", "priority": 50, "phase": "routine-surveillance",
    "when": {"ref": "treated-cervical-cancer"},
    "ratings": [
        {"procedure": "mri-pelvis-wo-w", "rating": "usually-appropriate"},
        {"procedure": "ct-abdomen-pelvis-w", "rating": "may-be-appropriate"},
        {"procedure": "fdg-pet-ct", "rating": "usually-not-appropriate"},
    ],
    "preferred": [{"procedure": "mri-pelvis-wo-w"}],
    "surveillance": {
        "procedures": ["mri-pelvis-wo-w"], "anchor": {"procedure": "cervix-cancer-treatment"},
        "intervals": [{"until_month": 12, "every_months": 3}, {"until_month": 24, "every_months": 6},
                      {"every_months": 12}],
        "tolerance_days": 14,
    },
}

BREAST_SURVEILLANCE = {
    "id": "breast-distant-surveillance", "priority": 40, "phase": "routine-surveillance",
    "low_value_surveillance": True,
    "when": {"all": [{"condition": "breast-cancer"}, {"not": {"condition": "pelvic-pain", "within_days": 90}}]},
    "ratings": [
        {"procedure": "fdg-pet-ct", "rating": "usually-not-appropriate"},
        {"procedure": "bone-scan", "rating": "usually-not-appropriate"},
        {"procedure": "ct-chest-w", "rating": "usually-not-appropriate"},
    ],
}


def make_kb(*scenarios: dict):
    return knowledge_from_dicts(
        procedures=PROCEDURES, valuesets=VALUESETS, definitions=DEFINITIONS,
        contraindications=CONTRAINDICATIONS,
        scenarios=scenarios or (CERVIX_RECURRENCE, CERVIX_ROUTINE, BREAST_SURVEILLANCE),
    )


KB = make_kb()


# -- marker trends: the chart module's definition of "rising" -----------------------------------------


# -- facts used below ---------------------------------------------------------------------------------


def cervix_history(treated_ago: int = 700) -> list[ClinicalFact]:
    return [
        condition("icd", "C53.9", ago=900, status="remission", source="Condition/cx"),
        procedure_done("sct", "703423002", ago=treated_ago, source="Procedure/chemorad"),
    ]


def pelvic_pain(ago: int = 50) -> ClinicalFact:
    return condition("icd", "R10.2", ago=ago, source="Condition/pain")


def scc(value: float, ago: int, n: int) -> ClinicalFact:
    return observation("loinc", "9679-2", value, ago=ago, unit="ng/mL", source=f"Observation/scc{n}")


PACEMAKER = fact(FactKind.DEVICE, "sct", "441509002", ago=2000, status="active", source="Device/pm")
CONTRAST_ALLERGY = fact(FactKind.ALLERGY, "sct", "293637006", ago=3000, status="active", source="AllergyIntolerance/ci")
LOW_EGFR = observation("loinc", "98979-8", 22, ago=10, unit="mL/min/1.73m2", source="Observation/egfr")


# == criteria ==========================================================================================

CRITERIA_CASES = [
    # condition: codes, prefixes, normalisation
    ("snomed-code", {"condition": "cervical-cancer"}, [condition("sct", "363354003", source="Condition/a")], True, ["Condition/a"]),
    ("icd-prefix-dotted", {"condition": "cervical-cancer"}, [condition("icd", "C53.9", source="Condition/a")], True, ["Condition/a"]),
    ("icd-lowercase", {"condition": "cervical-cancer"}, [condition("icd", "c53.1", source="Condition/a")], True, ["Condition/a"]),
    ("icd-alias-system", {"condition": "cervical-cancer"},
     [condition("http://hl7.org/fhir/sid/icd-10", "C53.0", source="Condition/a")], True, ["Condition/a"]),
    ("prefix-needs-same-system", {"condition": "cervical-cancer"}, [condition("sct", "C53", source="Condition/a")], False, []),
    ("other-cancer", {"condition": "cervical-cancer"}, [condition("icd", "C50.911")], False, []),
    ("kind-matters", {"condition": "cervical-cancer"}, [procedure_done("icd", "C53.9")], False, []),
    ("exact-code-not-prefix", {"condition": "leg-swelling"}, [condition("icd", "R60.1")], False, []),
    ("all-matching-facts-newest-first", {"condition": "pelvic-pain"},
     [condition("icd", "R10.2", ago=100, source="Condition/old"), condition("sct", "30473006", ago=5, source="Condition/new"),
      condition("icd", "R10.2", ago=None, source="Condition/undated")],
     True, ["Condition/new", "Condition/old", "Condition/undated"]),
    # windows
    ("within-inside", {"condition": "pelvic-pain", "within_days": 90}, [pelvic_pain(ago=30)], True, ["Condition/pain"]),
    ("within-edge", {"condition": "pelvic-pain", "within_days": 90}, [pelvic_pain(ago=90)], True, ["Condition/pain"]),
    ("within-outside", {"condition": "pelvic-pain", "within_days": 90}, [pelvic_pain(ago=91)], False, []),
    ("within-undated", {"condition": "pelvic-pain", "within_days": 90}, [pelvic_pain(ago=None)], False, []),
    ("older-than-inside", {"condition": "pelvic-pain", "older_than_days": 365}, [pelvic_pain(ago=366)], True, ["Condition/pain"]),
    ("older-than-edge", {"condition": "pelvic-pain", "older_than_days": 365}, [pelvic_pain(ago=365)], False, []),
    ("older-than-undated", {"condition": "pelvic-pain", "older_than_days": 365}, [pelvic_pain(ago=None)], False, []),
    ("between", {"condition": "pelvic-pain", "within_days": 200, "older_than_days": 100},
     [pelvic_pain(ago=50), condition("icd", "R10.2", ago=150, source="Condition/mid"), condition("icd", "R10.2", ago=250)],
     True, ["Condition/mid"]),
    # clinical status
    ("status-active", {"condition": "cervical-cancer", "clinical_status": ["active", "recurrence", "relapse"]},
     [condition("icd", "C53.9", status="recurrence", source="Condition/a")], True, ["Condition/a"]),
    ("status-resolved", {"condition": "cervical-cancer", "clinical_status": ["active", "recurrence", "relapse"]},
     [condition("icd", "C53.9", status="resolved")], False, []),
    ("status-unknown", {"condition": "cervical-cancer", "clinical_status": ["active"]},
     [condition("icd", "C53.9", status=None)], False, []),
    ("status-ignored-without-filter", {"condition": "cervical-cancer"},
     [condition("icd", "C53.9", status="resolved", source="Condition/a")], True, ["Condition/a"]),
    ("status-order-reason-is-active", {"condition": "cervical-cancer", "clinical_status": ["active"]},
     [order_reason("icd", "C53.9", source="ServiceRequest/o")], True, ["ServiceRequest/o"]),
    ("entered-in-error", {"condition": "cervical-cancer"}, [condition("icd", "C53.9", status="entered-in-error")], False, []),
    ("refuted", {"condition": "cervical-cancer"}, [condition("icd", "C53.9", verification="refuted")], False, []),
    # order reasons
    ("order-reason-counts", {"condition": "pelvic-pain", "within_days": 30},
     [order_reason("icd", "R10.20", ago=None, source="ServiceRequest/o")], True, ["ServiceRequest/o"]),
    ("order-reason-excluded", {"condition": "pelvic-pain", "exclude_order_reasons": True},
     [order_reason("icd", "R10.20", source="ServiceRequest/o")], False, []),
    ("order-reason-excluded-condition-kept", {"condition": "pelvic-pain", "exclude_order_reasons": True},
     [order_reason("icd", "R10.20"), pelvic_pain()], True, ["Condition/pain"]),
    # procedure
    ("procedure-done", {"procedure": "cervix-cancer-treatment"}, [procedure_done("sct", "703423002", source="Procedure/p")], True, ["Procedure/p"]),
    ("procedure-not-done", {"procedure": "cervix-cancer-treatment"}, [procedure_done("sct", "703423002", status="not-done")], False, []),
    ("procedure-in-error", {"procedure": "cervix-cancer-treatment"}, [procedure_done("sct", "703423002", status="entered-in-error")], False, []),
    ("procedure-older-than", {"procedure": "cervix-cancer-treatment", "older_than_days": 180},
     [procedure_done("sct", "703423002", ago=100)], False, []),
    ("procedure-within", {"procedure": "cervix-cancer-treatment", "within_days": 180},
     [procedure_done("sct", "116143008", ago=100, source="Procedure/h")], True, ["Procedure/h"]),
    # medication
    ("medication", {"medication": "chemotherapy", "within_days": 365},
     [fact(FactKind.MEDICATION, "http://www.nlm.nih.gov/research/umls/rxnorm", "40048", ago=20, source="MedicationRequest/m")],
     True, ["MedicationRequest/m"]),
    ("medication-old", {"medication": "chemotherapy", "within_days": 365},
     [fact(FactKind.MEDICATION, "http://www.nlm.nih.gov/research/umls/rxnorm", "40048", ago=500)], False, []),
    ("medication-older-than", {"medication": "chemotherapy", "older_than_days": 365},
     [fact(FactKind.MEDICATION, "http://www.nlm.nih.gov/research/umls/rxnorm", "40048", ago=500, source="MedicationRequest/m")],
     True, ["MedicationRequest/m"]),
    # observation
    ("obs-below", {"observation": "egfr", "value_below": 30}, [LOW_EGFR], True, ["Observation/egfr"]),
    ("obs-below-edge", {"observation": "egfr", "value_below": 30}, [observation("loinc", "98979-8", 30)], False, []),
    ("obs-below-no-value", {"observation": "egfr", "value_below": 30}, [observation("loinc", "98979-8", None)], False, []),
    ("obs-above", {"observation": "scc-antigen", "value_above": 1.5}, [scc(2.0, 5, 1)], True, ["Observation/scc1"]),
    ("obs-above-no", {"observation": "scc-antigen", "value_above": 1.5}, [scc(1.5, 5, 1)], False, []),
    ("obs-range", {"observation": "egfr", "value_above": 15, "value_below": 30}, [LOW_EGFR], True, ["Observation/egfr"]),
    ("obs-existential-any-value", {"observation": "egfr", "value_below": 30},
     [observation("loinc", "98979-8", 80, ago=1), LOW_EGFR], True, ["Observation/egfr"]),
    ("obs-within", {"observation": "egfr", "value_below": 30, "within_days": 5}, [LOW_EGFR], False, []),
    ("obs-value-in", {"observation": "pregnancy-status", "value_in": "pregnant"},
     [observation("loinc", "82810-3", value_codes=(Code("http://snomed.info/sct", "77386006"),), source="Observation/preg")],
     True, ["Observation/preg"]),
    ("obs-value-in-no", {"observation": "pregnancy-status", "value_in": "pregnant"},
     [observation("loinc", "82810-3", value_codes=(Code("http://snomed.info/sct", "60001007"),))], False, []),
    ("obs-cancelled", {"observation": "egfr"}, [observation("loinc", "98979-8", 20, status="cancelled")], False, []),
    # device / allergy / finding
    ("device-active", {"device": "cardiac-device"}, [PACEMAKER], True, ["Device/pm"]),
    ("device-inactive", {"device": "cardiac-device"}, [struct_replace(PACEMAKER, status="inactive")], False, []),
    ("device-undated-ok", {"device": "cardiac-device"}, [struct_replace(PACEMAKER, date=None)], True, ["Device/pm"]),
    ("allergy-active", {"allergy": "contrast-allergy"}, [CONTRAST_ALLERGY], True, ["AllergyIntolerance/ci"]),
    ("allergy-resolved", {"allergy": "contrast-allergy"}, [struct_replace(CONTRAST_ALLERGY, status="resolved")], False, []),
    ("allergy-refuted", {"allergy": "contrast-allergy"}, [struct_replace(CONTRAST_ALLERGY, verification="refuted")], False, []),
    ("finding-within", {"finding": "hydronephrosis", "within_days": 180},
     [fact(FactKind.FINDING, "sct", "43064006", ago=20, source="DiagnosticReport/us")], True, ["DiagnosticReport/us"]),
    ("finding-too-old", {"finding": "hydronephrosis", "within_days": 180}, [fact(FactKind.FINDING, "sct", "43064006", ago=200)], False, []),
    # imaging (prior studies matched through the catalogue)
    ("imaging-cpt", {"imaging": ["ct-abdomen-pelvis-w"]}, [imaging("cpt", "74177", ago=40, source="ImagingStudy/ct")], True, ["ImagingStudy/ct"]),
    ("imaging-other-study", {"imaging": ["ct-abdomen-pelvis-w"]}, [imaging("cpt", "71260", ago=40)], False, []),
    ("imaging-shared-code", {"imaging": ["mri-abdomen-pelvis-wo-w"]}, [imaging("cpt", "72197", source="ImagingStudy/mr")], True, ["ImagingStudy/mr"]),
    ("imaging-within", {"imaging": ["ct-abdomen-pelvis-w", "ct-chest-w"], "within_days": 30},
     [imaging("cpt", "74177", ago=40), imaging("cpt", "71260", ago=10, source="ImagingStudy/chest")], True, ["ImagingStudy/chest"]),
    ("imaging-older-than", {"imaging": ["ct-abdomen-pelvis-w"], "older_than_days": 30},
     [imaging("cpt", "74177", ago=10)], False, []),
    ("imaging-undated", {"imaging": ["ct-abdomen-pelvis-w"], "within_days": 30}, [imaging("cpt", "74177", ago=None)], False, []),
    ("imaging-cancelled", {"imaging": ["ct-abdomen-pelvis-w"]}, [imaging("cpt", "74177", status="cancelled")], False, []),
    ("imaging-not-a-condition", {"condition": "cervical-cancer"}, [imaging("icd", "C53.9")], False, []),
    # logic
    ("all-true", {"all": [{"condition": "cervical-cancer"}, {"procedure": "cervix-cancer-treatment"}]},
     cervix_history(), True, ["Condition/cx", "Procedure/chemorad"]),  # logic keeps authored order
    ("all-false", {"all": [{"condition": "cervical-cancer"}, {"procedure": "cervix-cancer-treatment"}]},
     cervix_history()[:1], False, []),
    ("any-collects-every-branch", {"any": [{"condition": "pelvic-pain"}, {"condition": "leg-swelling"}, {"condition": "breast-cancer"}]},
     [pelvic_pain(50), condition("icd", "R60.0", ago=10, source="Condition/leg")], True, ["Condition/pain", "Condition/leg"]),
    ("any-false", {"any": [{"condition": "pelvic-pain"}, {"condition": "leg-swelling"}]}, cervix_history(), False, []),
    ("any-empty", {"any": []}, cervix_history(), False, []),
    ("all-empty", {"all": []}, [], True, []),
    ("not-true-no-evidence", {"not": {"condition": "pelvic-pain"}}, cervix_history(), True, []),
    ("not-false", {"not": {"condition": "pelvic-pain"}}, [pelvic_pain()], False, []),
    ("ref", {"ref": "treated-cervical-cancer"}, cervix_history(), True, ["Condition/cx", "Procedure/chemorad"]),
    ("ref-history-branch", {"ref": "treated-cervical-cancer"},
     [condition("icd", "C53.9", ago=900, source="Condition/cx"), condition("icd", "Z92.3", ago=800, source="Condition/rt")],
     True, ["Condition/cx", "Condition/rt"]),
    ("ref-false", {"ref": "treated-cervical-cancer"}, [condition("icd", "C53.9")], False, []),
    # marker trend
    ("marker-rising", {"marker_trend": "scc-antigen"}, [scc(1.0, 200, 1), scc(1.3, 100, 2), scc(2.5, 10, 3)], True, []),
    ("marker-small-rise", {"marker_trend": "scc-antigen"}, [scc(1.0, 200, 1), scc(1.1, 10, 2)], False, []),
    ("marker-rise-option", {"marker_trend": "scc-antigen", "min_rise_fraction": 0.05}, [scc(1.0, 200, 1), scc(1.1, 10, 2)], True, []),
    ("marker-outside-window", {"marker_trend": "scc-antigen", "window_days": 150}, [scc(1.0, 200, 1), scc(2.5, 10, 2)], False, []),
    ("marker-single-point", {"marker_trend": "scc-antigen"}, [scc(5.0, 10, 1)], False, []),
    ("marker-falling", {"marker_trend": "scc-antigen", "trend": "falling"}, [scc(3.0, 200, 1), scc(1.0, 10, 2)], True, []),
    ("marker-not-other-tests", {"marker_trend": "scc-antigen"}, [observation("loinc", "98979-8", 10, ago=200), LOW_EGFR], False, []),
]


@pytest.mark.parametrize(
    "criterion, facts, holds, sources", [case[1:] for case in CRITERIA_CASES], ids=[case[0] for case in CRITERIA_CASES]
)
def test_criterion(criterion, facts, holds, sources):
    result = evaluate(criterion, chart(*facts), KB)
    assert result.holds is holds
    assert [item.fact.source for item in result.evidence if item.fact is not None] == sources
    if not holds:
        assert result.evidence == ()


def test_evidence_labels_are_readable_name_no_resource_and_keep_the_fact():
    pain = condition("icd", "R10.21", on=date(2026, 10, 2), source="Condition/abc")
    result = evaluate({"condition": "pelvic-pain"}, chart(pain), KB)
    assert [item.label for item in result.evidence] == ["Pelvic pain (2026-10-02)"]
    assert result.evidence[0].fact is pain

    reason = order_reason("icd", "R10.2", ago=None, source="ServiceRequest/o1")
    assert evaluate({"condition": "pelvic-pain"}, chart(reason), KB).evidence[0].label == (
        "Pelvic pain (reason given on this order)"
    )
    egfr = evaluate({"observation": "egfr", "value_below": 30}, chart(LOW_EGFR), KB).evidence[0]
    assert egfr.label == f"eGFR 22 mL/min/1.73m2 ({days_ago(10).isoformat()})"
    prior = evaluate({"imaging": ["ct-abdomen-pelvis-w"]}, chart(imaging("cpt", "74177", on=date(2026, 5, 1), source="ImagingStudy/9")), KB)
    assert prior.evidence[0].label == "Prior CT abdomen and pelvis with IV contrast (2026-05-01)"


def test_marker_trend_evidence_is_the_series():
    points = [scc(1.0, 200, 1), scc(1.3, 100, 2), scc(2.5, 10, 3)]
    result = evaluate({"marker_trend": "scc-antigen"}, chart(*points, LOW_EGFR), KB)
    (item,) = result.evidence
    assert item.fact is None
    assert [p.source for p in item.facts] == ["Observation/scc1", "Observation/scc2", "Observation/scc3"]
    assert item.label.startswith("SCC antigen rising (1 → 2.5 ng/mL")


def test_marker_trend_asks_the_chart_module_with_the_options(monkeypatch):
    """One definition of "rising": the criterion passes its options through, and only the value
    set's observations count as markers."""
    from cds_service.chart import marker_trend

    calls = []

    def spy(facts, is_marker, today, window_days, min_rise_fraction):
        calls.append(([f.source for f in facts if is_marker(f)], today, window_days, min_rise_fraction))
        return MarkerTrend("rising", ())

    monkeypatch.setattr(marker_trend, "extract_tumour_marker_trend", spy)
    facts = chart(scc(1.0, 20, 1), LOW_EGFR, scc(2.0, 10, 2))
    assert evaluate({"marker_trend": "scc-antigen"}, facts, KB).holds
    assert evaluate({"marker_trend": "scc-antigen", "window_days": 90, "min_rise_fraction": 0.5}, facts, KB).holds
    assert calls == [
        (["Observation/scc1", "Observation/scc2"], TODAY, 365, 0.2),
        (["Observation/scc1", "Observation/scc2"], TODAY, 90, 0.5),
    ]


@pytest.mark.parametrize(
    "criterion",
    [
        {"nonsense": "x"},
        {},
        {"condition": "pelvic-pain", "procedure": "cervix-cancer-treatment"},
        {"condition": "pelvic-pain", "value_below": 3},
        {"condition": "no-such-valueset"},
        {"ref": "no-such-definition"},
        {"ref": "loop-a"},
        {"imaging": ["no-such-procedure"]},
        {"all": [{"condition": "pelvic-pain"}, {"bogus": 1}]},
    ],
    ids=["unknown-operator", "empty", "two-operators", "foreign-option", "unknown-valueset", "unknown-ref", "ref-cycle",
         "unknown-procedure", "nested-unknown"],
)
def test_programming_errors_raise_value_error(criterion):
    with pytest.raises(ValueError):
        evaluate(criterion, chart(pelvic_pain()), KB)


def test_evaluator_memoises_within_one_request_only():
    evaluator = CriteriaEvaluator(chart(pelvic_pain()), KB)
    criterion = {"condition": "pelvic-pain"}
    assert evaluator.evaluate(criterion) is evaluator.evaluate(criterion)
    assert not CriteriaEvaluator(chart(), KB).evaluate(criterion).holds


# == assessment ========================================================================================

MRI_AP = ("cpt", "74183"), ("cpt", "72197")
MRI_PELVIS = (("cpt", "72197"),)
CT_AP = (("cpt", "74177"),)
PET = (("cpt", "78815"),)
US_PELVIS = (("cpt", "76856"),)
KNEE = (("cpt", "73721"),)


def recurrence_chart(*extra: ClinicalFact) -> ChartFacts:
    return chart(*cervix_history(), pelvic_pain(), *extra)


def test_not_in_catalogue_is_silent():
    result = assess_order(draft_order(("cpt", "99999")), recurrence_chart(), KB)
    assert result.outcome is Outcome.NOT_RATED
    assert result.reason == "study not in catalogue"
    assert result.scenario is None and result.ordered is None


def test_no_scenario_is_silent():
    result = assess_order(draft_order(*KNEE), chart(condition("icd", "S83.511A", ago=3)), KB)
    assert result.outcome is Outcome.NOT_RATED
    assert result.scenario is None and result.rating is None and result.reason


def test_recurrence_rates_mri_usually_appropriate_without_nagging():
    result = assess_order(draft_order(*MRI_AP), recurrence_chart(), KB)
    assert result.outcome is Outcome.RATED
    assert result.scenario.id == "cervix-suspected-recurrence"
    assert result.ordered.id == "mri-abdomen-pelvis-wo-w"
    assert result.rating.rating is UA
    assert result.recommended is None and not result.recommend_cancel
    assert result.ordered_blocked_by == () and result.surveillance is None
    assert [row.procedure.id for row in result.table] == [
        "ct-abdomen-pelvis-w", "ct-chest-w", "fdg-pet-ct", "mri-abdomen-pelvis-wo-w", "us-pelvis",
    ]  # Usually Appropriate by name, then Usually Not Appropriate
    # newest first, each fact once: the symptom that triggered the scenario, then the history
    assert [item.fact.source for item in result.evidence] == ["Condition/pain", "Procedure/chemorad", "Condition/cx"]


def test_usually_not_appropriate_order_gets_the_preferred_study():
    result = assess_order(draft_order(*US_PELVIS), recurrence_chart(), KB)
    assert result.rating.rating is UNA
    assert result.recommended.procedure.id == "mri-abdomen-pelvis-wo-w"
    assert result.recommended.rating is UA
    assert not result.recommend_cancel  # not a low-value-surveillance scenario


@pytest.mark.parametrize(
    "ordered, extra, blocked_by, recommended",
    [
        (MRI_AP, [PACEMAKER], ["mri-cardiac-device"], "ct-abdomen-pelvis-w"),
        (MRI_AP, [LOW_EGFR], ["gadolinium-renal"], "ct-abdomen-pelvis-w"),
        (MRI_AP, [PACEMAKER, CONTRAST_ALLERGY], ["mri-cardiac-device"], "fdg-pet-ct"),
        (US_PELVIS, [PACEMAKER], [], "ct-abdomen-pelvis-w"),
        (US_PELVIS, [PACEMAKER, CONTRAST_ALLERGY], [], "fdg-pet-ct"),
        (CT_AP, [CONTRAST_ALLERGY], ["iodinated-allergy"], "mri-abdomen-pelvis-wo-w"),
        (CT_AP, [PACEMAKER], [], None),  # CT is UA and not blocked: no nagging
        (PET, [PACEMAKER, CONTRAST_ALLERGY], [], None),  # PET/CT is the first unblocked preference
        (MRI_AP, [PACEMAKER, CONTRAST_ALLERGY,
                  observation("loinc", "82810-3", value_codes=(Code("http://snomed.info/sct", "77386006"),), ago=3)],
         ["mri-cardiac-device"], None),  # everything blocked: nothing to recommend
    ],
    ids=["mri-device→ct", "gadolinium→ct", "mri+iodinated→pet", "us+device→ct", "us+device+allergy→pet",
         "ct-allergy→mri", "ct-ok", "pet-ok", "all-blocked"],
)
def test_contraindications_fall_through_the_preferences(ordered, extra, blocked_by, recommended):
    result = assess_order(draft_order(*ordered), recurrence_chart(*extra), KB)
    assert result.outcome is Outcome.RATED
    assert [item.contraindication.id for item in result.ordered_blocked_by] == blocked_by
    assert (result.recommended.procedure.id if result.recommended else None) == recommended
    assert {item.contraindication.id for item in result.contraindications} >= set(blocked_by)
    for item in result.contraindications:
        assert item.evidence  # each active contraindication shows its chart fact


CLAUSTROPHOBIA = condition("sct", "19887002", ago=400, source="Condition/claus")


def test_caution_is_shown_but_does_not_move_the_recommendation():
    mri = assess_order(draft_order(*MRI_AP), recurrence_chart(CLAUSTROPHOBIA), KB)
    assert mri.rating.rating is UA
    assert [item.contraindication.id for item in mri.ordered_blocked_by] == ["claustrophobia"]
    assert mri.recommended is None
    us = assess_order(draft_order(*US_PELVIS), recurrence_chart(CLAUSTROPHOBIA), KB)
    assert us.recommended.procedure.id == "mri-abdomen-pelvis-wo-w" and us.ordered_blocked_by == ()
    both = assess_order(draft_order(*MRI_AP), recurrence_chart(CLAUSTROPHOBIA, PACEMAKER), KB)
    assert both.recommended.procedure.id == "ct-abdomen-pelvis-w"


@pytest.mark.parametrize("min_rating, expected", [(None, None), ("may-be-appropriate", "us-pelvis")])
def test_min_rating_marks_a_fallback_preference(min_rating, expected):
    fallback = {"procedure": "us-pelvis"} | ({"min_rating": min_rating} if min_rating else {})
    scenario = dict(
        CERVIX_RECURRENCE,
        ratings=[{"procedure": "mri-abdomen-pelvis-wo-w", "rating": "usually-appropriate"},
                 {"procedure": "us-pelvis", "rating": "may-be-appropriate"}],
        preferred=[{"procedure": "mri-abdomen-pelvis-wo-w"}, fallback],
    )
    result = assess_order(draft_order(*MRI_AP), recurrence_chart(PACEMAKER), make_kb(scenario))
    assert (result.recommended.procedure.id if result.recommended else None) == expected
    ordered_fallback = assess_order(draft_order(*US_PELVIS), recurrence_chart(PACEMAKER), make_kb(scenario))
    assert ordered_fallback.recommended is None  # the fallback is what was ordered


def test_priority_orders_scenarios():
    with_symptom = assess_order(draft_order(*CT_AP), recurrence_chart(), KB)
    without = assess_order(draft_order(*CT_AP), chart(*cervix_history()), KB)
    assert with_symptom.scenario.id == "cervix-suspected-recurrence" and with_symptom.rating.rating is UA
    assert without.scenario.id == "cervix-routine-surveillance" and without.rating.rating is MBA
    assert without.recommended.procedure.id == "mri-pelvis-wo-w"


def test_equal_priority_keeps_file_order():
    first = dict(BREAST_SURVEILLANCE, id="first", priority=10, low_value_surveillance=False)
    second = dict(BREAST_SURVEILLANCE, id="second", priority=10)
    kb = make_kb(first, second)
    assert assess_order(draft_order(*PET), chart(condition("icd", "C50.911")), kb).scenario.id == "first"
    kb = make_kb(second, first)
    assert assess_order(draft_order(*PET), chart(condition("icd", "C50.911")), kb).scenario.id == "second"


def test_a_scenario_that_lists_the_study_beats_a_higher_one_that_does_not():
    # both cervix scenarios hold for a symptomatic patient; only routine surveillance lists MRI pelvis
    # alone when the order carries 72197 and the recurrence scenario rates only the combined study.
    recurrence = dict(CERVIX_RECURRENCE, ratings=[r for r in CERVIX_RECURRENCE["ratings"] if r["procedure"] != "mri-abdomen-pelvis-wo-w"],
                      preferred=[{"procedure": "ct-abdomen-pelvis-w"}])
    kb = make_kb(recurrence, CERVIX_ROUTINE)
    result = assess_order(draft_order(*MRI_PELVIS), recurrence_chart(), kb)
    assert result.scenario.id == "cervix-routine-surveillance"
    assert result.ordered.id == "mri-pelvis-wo-w" and result.rating.rating is UA


def test_scenario_without_rating_for_the_study_says_no_criteria_apply():
    result = assess_order(draft_order(*KNEE), recurrence_chart(), KB)
    assert result.outcome is Outcome.NO_CRITERIA_APPLY
    assert result.scenario.id == "cervix-suspected-recurrence"
    assert result.ordered.id == "mri-knee-wo" and result.rating is None
    assert result.recommended is None  # the scenario's best study answers another question
    assert [r.id for r in result.recommendations] == ["gyn-exam"]
    assert result.evidence and result.table


def test_symptom_directed_rating_applies_only_when_its_condition_holds():
    scenario = dict(CERVIX_RECURRENCE, ratings=[
        *CERVIX_RECURRENCE["ratings"],
        {"procedure": "bone-scan", "rating": "usually-appropriate", "when": {"condition": "leg-swelling", "within_days": 30}},
    ])
    kb = make_kb(scenario)
    without = assess_order(draft_order(("cpt", "78306")), recurrence_chart(), kb)
    assert without.outcome is Outcome.NO_CRITERIA_APPLY and without.scenario.id == "cervix-suspected-recurrence"
    assert without.recommended.procedure.id == "mri-abdomen-pelvis-wo-w"  # listed study: a suggestion
    assert "bone-scan" not in {row.procedure.id for row in without.table}
    swelling = condition("icd", "R60.0", ago=3)
    with_symptom = assess_order(draft_order(("cpt", "78306")), recurrence_chart(swelling), kb)
    assert with_symptom.outcome is Outcome.RATED and with_symptom.rating.rating is UA
    assert "bone-scan" in {row.procedure.id for row in with_symptom.table}


def test_first_applicable_rating_wins():
    scenario = dict(CERVIX_RECURRENCE, ratings=[
        {"procedure": "us-pelvis", "rating": "may-be-appropriate", "when": {"condition": "leg-swelling"}},
        *CERVIX_RECURRENCE["ratings"],
    ])
    kb = make_kb(scenario)
    assert assess_order(draft_order(*US_PELVIS), recurrence_chart(), kb).rating.rating is UNA
    swelling = condition("icd", "R60.0", ago=3)
    assert assess_order(draft_order(*US_PELVIS), recurrence_chart(swelling), kb).rating.rating is MBA


@pytest.mark.parametrize(
    "codes, scenario_ratings, expected",
    [
        (MRI_PELVIS, None, "mri-abdomen-pelvis-wo-w"),  # the scenario rates only the combined study
        (MRI_AP, None, "mri-abdomen-pelvis-wo-w"),
        (MRI_PELVIS, "both", "mri-pelvis-wo-w"),  # 72197 alone is completely "MRI pelvis"
        (MRI_AP, "both", "mri-abdomen-pelvis-wo-w"),  # both complete: the better rating
        ((("cpt", "74183"),), "both", "mri-abdomen-pelvis-wo-w"),
        ((("cpt", "71260"), ("cpt", "74177")), "ct", "ct-chest-abdomen-pelvis-w"),  # explains both codes
        ((("cpt", "71260"),), "ct", "ct-chest-w"),
        ((("cpt", "74177"),), "ct", "ct-abdomen-pelvis-w"),
        ((("cpt", "74177"),), None, "ct-abdomen-pelvis-w"),
    ],
    ids=["72197-combined-only", "74183+72197", "72197-both-rated", "both-codes-both-rated", "74183-only",
         "ct-cap", "ct-chest", "ct-ap", "ct-ap-cap-unrated"],
)
def test_shared_codes_are_resolved_by_the_scenario(codes, scenario_ratings, expected):
    scenario = CERVIX_RECURRENCE
    if scenario_ratings == "both":
        scenario = dict(CERVIX_RECURRENCE, ratings=[*CERVIX_RECURRENCE["ratings"],
                                                     {"procedure": "mri-pelvis-wo-w", "rating": "may-be-appropriate"}])
    if scenario_ratings == "ct":
        scenario = dict(CERVIX_RECURRENCE, ratings=[*CERVIX_RECURRENCE["ratings"],
                                                     {"procedure": "ct-chest-abdomen-pelvis-w", "rating": "may-be-appropriate"}])
    result = assess_order(draft_order(*codes), recurrence_chart(), make_kb(scenario))
    assert result.outcome is Outcome.RATED
    assert result.ordered.id == expected


def test_low_value_surveillance_suggests_cancelling():
    result = assess_order(draft_order(*PET), chart(condition("icd", "Z85.3", ago=2000)), KB)
    assert result.scenario.id == "breast-distant-surveillance"
    assert result.rating.rating is UNA
    assert result.recommend_cancel and result.recommended is None


def test_low_value_surveillance_does_not_cancel_when_a_usually_appropriate_study_applies():
    scenario = dict(BREAST_SURVEILLANCE, ratings=[*BREAST_SURVEILLANCE["ratings"],
                                                  {"procedure": "us-pelvis", "rating": "usually-appropriate"}],
                    preferred=[{"procedure": "us-pelvis"}])
    result = assess_order(draft_order(*PET), chart(condition("icd", "Z85.3", ago=2000)), make_kb(scenario))
    assert not result.recommend_cancel
    assert result.recommended.procedure.id == "us-pelvis"


def test_preference_when_must_hold():
    scenario = dict(CERVIX_RECURRENCE, preferred=[
        {"procedure": "mri-abdomen-pelvis-wo-w", "when": {"condition": "leg-swelling"}}, {"procedure": "ct-abdomen-pelvis-w"},
    ])
    result = assess_order(draft_order(*US_PELVIS), recurrence_chart(), make_kb(scenario))
    assert result.recommended.procedure.id == "ct-abdomen-pelvis-w"


def test_recommendations_filtered_by_when_and_applies_to():
    mri = assess_order(draft_order(*MRI_AP), recurrence_chart(), KB)
    us = assess_order(draft_order(*US_PELVIS), recurrence_chart(), KB)
    assert [r.id for r in mri.recommendations] == ["gyn-exam"]
    assert [r.id for r in us.recommendations] == ["gyn-exam", "us-not-enough"]


# -- surveillance -------------------------------------------------------------------------------------


def routine_chart(treated_ago: int, *studies: ClinicalFact) -> ChartFacts:
    return chart(*cervix_history(treated_ago=treated_ago), *studies)


@pytest.mark.parametrize(
    "treated_ago, last_ago, expected_interval, months",
    [
        (300, 30, 3, 9),       # month 9: every 3 months; 30 days after the last → early
        (300, 70, 3, 9),       # 70 < 3×30.4 − 14
        (300, 80, None, 9),    # inside tolerance: on schedule
        (540, 100, 6, 17),     # month 17: every 6 months
        (540, 170, None, 17),
        (1000, 200, 12, 32),   # thereafter: yearly
        (1000, 360, None, 32),
        (300, None, None, 9),  # no prior study: nothing to compare
    ],
)
def test_surveillance_interval(treated_ago, last_ago, expected_interval, months):
    studies = [] if last_ago is None else [imaging("cpt", "72197", ago=last_ago, source="ImagingStudy/last")]
    result = assess_order(draft_order(*MRI_PELVIS), routine_chart(treated_ago, *studies), KB)
    assert result.scenario.id == "cervix-routine-surveillance" and result.rating.rating is UA
    if expected_interval is None:
        assert result.surveillance is None
    else:
        notice = result.surveillance
        assert notice.expected_interval_months == expected_interval
        assert notice.days_since_last == last_ago
        assert notice.last_study.source == "ImagingStudy/last"
        assert notice.months_since_anchor == months


def test_surveillance_uses_latest_study_and_ignores_studies_before_the_anchor():
    studies = [imaging("cpt", "72197", ago=400, source="ImagingStudy/staging"), imaging("cpt", "72197", ago=250, source="ImagingStudy/a")]
    result = assess_order(draft_order(*MRI_PELVIS), routine_chart(300, *studies), KB)
    assert result.surveillance is None  # 250 days since the last post-treatment study
    staging_only = assess_order(draft_order(*MRI_PELVIS), routine_chart(300, studies[0]), KB)
    assert staging_only.surveillance is None


def test_surveillance_only_for_the_schedule_studies():
    studies = [imaging("cpt", "72197", ago=20)]
    result = assess_order(draft_order(*CT_AP), routine_chart(300, *studies), KB)
    assert result.surveillance is None


def test_surveillance_without_anchor_uses_the_shortest_interval():
    facts = chart(condition("icd", "C53.9", ago=900), condition("icd", "Z92.3", ago=None),
                  imaging("cpt", "72197", ago=40, source="ImagingStudy/x"))
    result = assess_order(draft_order(*MRI_PELVIS), facts, KB)
    assert result.surveillance.expected_interval_months == 3
    assert result.surveillance.months_since_anchor is None
    later = replace(facts, facts=facts.facts[:-1] + (imaging("cpt", "72197", ago=80),))
    assert assess_order(draft_order(*MRI_PELVIS), later, KB).surveillance is None


def test_surveillance_schedule_end():
    schedule = KB.scenarios[1].surveillance
    ended = replace(schedule, intervals=((36, 12),))
    assert expected_interval(ended, 36) == 12
    assert expected_interval(ended, 37) is None
    assert expected_interval(schedule, 12) == 3 and expected_interval(schedule, 13) == 6


@pytest.mark.parametrize(
    "start, end, months",
    [(date(2026, 1, 31), date(2026, 2, 28), 0), (date(2026, 1, 15), date(2026, 2, 15), 1), (date(2024, 11, 22), date(2026, 11, 21), 23)],
)
def test_months_between(start, end, months):
    assert months_between(start, end) == months


# -- no state between calls ---------------------------------------------------------------------------


def test_two_patients_in_a_row_do_not_share_state():
    """The CRD `docNeeded` bug: a per-request answer cached on a long-lived object."""
    order = draft_order(*MRI_AP)
    patient_a = recurrence_chart(PACEMAKER)
    patient_b = chart(condition("icd", "S83.511A", ago=3))
    patient_c = chart(*cervix_history())

    first = assess_order(order, patient_a, KB)
    second = assess_order(order, patient_b, KB)
    third = assess_order(order, patient_c, KB)
    again = assess_order(order, patient_a, KB)

    assert first.outcome is Outcome.RATED and first.recommended.procedure.id == "ct-abdomen-pelvis-w"
    assert second.outcome is Outcome.NOT_RATED and second.contraindications == ()
    assert third.scenario.id == "cervix-routine-surveillance" and third.ordered_blocked_by == ()
    assert again == first


def test_same_chart_different_day_is_reassessed():
    facts = chart(*cervix_history(), condition("icd", "R10.2", on=date(2026, 9, 1), source="Condition/pain"))
    recent = assess_order(draft_order(*CT_AP), facts, KB)
    months_later = assess_order(draft_order(*CT_AP), replace(facts, today=date(2027, 3, 1)), KB)
    assert recent.scenario.id == "cervix-suspected-recurrence"
    assert months_later.scenario.id == "cervix-routine-surveillance"
