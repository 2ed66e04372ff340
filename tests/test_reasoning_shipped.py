"""The engine over the shipped knowledge base: the five seed scenarios and their neighbours.

Charts are built from ClinicalFact values (no FHIR), so these tests pin the medicine the knowledge
files encode together with the engine's rules. Procedure and scenario ids are those of
``knowledge/*.json``.
"""

from __future__ import annotations

import pytest

from cds_service.chart.facts import ChartFacts, ClinicalFact, Code, FactKind
from cds_service.kb.model import ICD10PCS, Appropriateness
from cds_service.reasoning.assessment import OrderAssessment, Outcome
from cds_service.reasoning.criteria import CriteriaEvaluator
from cds_service.reasoning.engine import assess_order

from .reasoning_kb import chart, condition, draft_order, fact, imaging, observation, order_reason, procedure_done

knowledge_loader = pytest.importorskip("cds_service.kb.loader")

UA = Appropriateness.USUALLY_APPROPRIATE
MBA = Appropriateness.MAY_BE_APPROPRIATE
UNA = Appropriateness.USUALLY_NOT_APPROPRIATE


@pytest.fixture(scope="module")
def kb():
    return knowledge_loader.load_knowledge()


def assess(kb, facts: list[ClinicalFact] | ChartFacts, *codes: tuple[str, str]) -> OrderAssessment:
    return assess_order(draft_order(*codes), facts if isinstance(facts, ChartFacts) else chart(*facts), kb)


# -- orders (CPT) ---------------------------------------------------------------------------------------

MRI_AP = ("cpt", "74183"), ("cpt", "72197")
MRI_PELVIS = (("cpt", "72197"),)
CT_AP = (("cpt", "74177"),)
CT_CAP = ("cpt", "71260"), ("cpt", "74177")
CT_CHEST = (("cpt", "71260"),)
PET = (("cpt", "78815"),)
US_PELVIS = (("cpt", "76856"),)
XR_FEMUR = (("cpt", "73552"),)
MRI_THIGH = (("cpt", "73720"),)
BONE_SCAN = (("cpt", "78306"),)
MRI_SPINE = (("cpt", "72157"),)
MAMMOGRAM = (("cpt", "77067"),)
MRI_BRAIN = (("cpt", "70553"),)
KNEE_MRI = (("cpt", "73721"),)

# -- charts ---------------------------------------------------------------------------------------------

PACEMAKER = fact(FactKind.DEVICE, "sct", "441509002", ago=1500, status="active", source="Device/pm")
_NCIT_OID = "urn:oid:2.16.840.1.113883.3.26.1.1"  # as FHIR R4's device-safety value set writes NCI Thesaurus
MR_CONDITIONAL = Code(_NCIT_OID, "C106046", "Magnetic Resonance Conditional")
MR_UNSAFE = Code("http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "C106047", "Magnetic Resonance Unsafe")
NO_MR_INFO = Code(_NCIT_OID, "C113844", "Labeling does not Contain MRI Safety Information")
PACEMAKER_MR_CONDITIONAL = fact(FactKind.DEVICE, "sct", "14106009", ago=None, status="active", source="Device/pmc",
                                safety_codes=(MR_CONDITIONAL,))
PACEMAKER_MR_UNSAFE = fact(FactKind.DEVICE, "sct", "14106009", ago=None, status="active", source="Device/pmu",
                           safety_codes=(MR_UNSAFE,))
PACEMAKER_NO_MR_INFO = fact(FactKind.DEVICE, "sct", "14106009", ago=None, status="active", source="Device/pmx",
                            safety_codes=(NO_MR_INFO,))
PACEMAKER_CONFLICTING = fact(FactKind.DEVICE, "sct", "14106009", ago=None, status="active", source="Device/pmz",
                             safety_codes=(MR_CONDITIONAL, MR_UNSAFE))
PACEMAKER_PROBLEM = condition("icd", "Z95.0", ago=800, source="Condition/z950")
IODINATED_ALLERGY = condition("icd", "Z91.041", ago=2000, source="Condition/dye")
LOW_EGFR = observation("loinc", "98979-8", 24, ago=12, unit="mL/min/1.73m2", source="Observation/egfr")
CLAUSTROPHOBIA = condition("sct", "19887002", ago=900, source="Condition/claus")


def pcs(code: str, ago: int, source: str) -> ClinicalFact:
    return procedure_done(ICD10PCS, code, ago=ago, source=source)


def cervix(treated_ago: int = 730) -> list[ClinicalFact]:
    """Seed A background: FIGO IIB cervical cancer, chemoradiation two years ago."""
    return [
        condition("icd", "C53.9", ago=treated_ago + 60, status="remission", source="Condition/cx"),
        procedure_done("sct", "703423002", ago=treated_ago, source="Procedure/chemorad"),
    ]


def cervix_symptomatic() -> list[ClinicalFact]:
    return [*cervix(), condition("icd", "R10.20", ago=14, source="Condition/pelvic-pain"),
            condition("icd", "R22.41", ago=14, source="Condition/leg-swelling")]


def scc_series(*values_ago: tuple[float, int]) -> list[ClinicalFact]:
    return [observation("loinc", "9679-2", v, ago=a, unit="ng/mL", source=f"Observation/scc-{a}") for v, a in values_ago]


def bone_tumour() -> list[ClinicalFact]:
    """Seed B: distal femur osteosarcoma, limb-sparing resection 18 months ago, asymptomatic."""
    return [
        condition("icd", "C40.21", ago=700, status="remission", source="Condition/osteosarcoma"),
        pcs("0QTB0ZZ", 550, "Procedure/resection"),
        procedure_done("sct", "367336001", ago=480, source="Procedure/chemo"),
    ]


def spine_metastasis(treated_ago: int = 240) -> list[ClinicalFact]:
    """Seed C: vertebral metastasis, decompression then radiotherapy."""
    return [
        condition("icd", "C79.51", ago=treated_ago + 40, source="Condition/vert-met"),
        procedure_done("sct", "427752004", ago=treated_ago + 30, source="Procedure/decompression"),
        procedure_done("sct", "33195004", ago=treated_ago, source="Procedure/rt"),
    ]


def breast() -> list[ClinicalFact]:
    """Seed D: breast cancer treated with curative intent three years ago, feels well."""
    return [
        condition("icd", "C50.911", ago=1200, status="remission", source="Condition/breast"),
        procedure_done("sct", "392021009", ago=1150, source="Procedure/lumpectomy"),
        procedure_done("sct", "33195004", ago=1050, source="Procedure/rt"),
    ]


def rectal(*, mass: bool = True) -> list[ClinicalFact]:
    """Seed E: rectal adenocarcinoma after chemoradiation and resection; new presacral lesion."""
    facts = [
        condition("icd", "C20", ago=1000, status="remission", source="Condition/rectal"),
        procedure_done("sct", "703423002", ago=900, source="Procedure/chemorad"),
        pcs("0DTP0ZZ", 800, "Procedure/resection"),
    ]
    if mass:
        facts.append(fact(FactKind.FINDING, "sct", "74285003", ago=10, status="final", source="DiagnosticReport/mri"))
    return facts


# == seed A: cervix, suspected recurrence =============================================================


def test_seed_a_mri_abdomen_pelvis_is_usually_appropriate(kb):
    result = assess(kb, cervix_symptomatic(), *MRI_AP)
    assert result.outcome is Outcome.RATED
    assert result.scenario.id == "cervix-suspected-recurrence"
    assert result.ordered.id == "mri-abdomen-pelvis-wo-w"
    assert result.rating.rating is UA
    assert result.recommended is None and not result.recommend_cancel
    sources = [item.fact.source for item in result.evidence if item.fact]
    assert sources[:2] == ["Condition/pelvic-pain", "Condition/leg-swelling"]  # the triggers first
    assert {"Condition/cx", "Procedure/chemorad"} <= set(sources)
    assert {row.procedure.id: row.rating for row in result.table}["us-pelvis"] is UNA


def test_seed_a_mri_pelvis_code_means_the_rated_combined_study(kb):
    result = assess(kb, cervix_symptomatic(), *MRI_PELVIS)
    assert result.ordered.id == "mri-abdomen-pelvis-wo-w" and result.rating.rating is UA


def test_seed_a_ultrasound_gets_mri_instead(kb):
    result = assess(kb, cervix_symptomatic(), *US_PELVIS)
    assert result.rating.rating is UNA
    assert result.recommended.procedure.id == "mri-abdomen-pelvis-wo-w"


def test_seed_a_rising_scc_antigen_without_symptoms(kb):
    result = assess(kb, [*cervix(), *scc_series((1.2, 200), (1.5, 110), (3.1, 12))], *MRI_AP)
    assert result.scenario.id == "cervix-suspected-recurrence" and result.rating.rating is UA
    trend = [item for item in result.evidence if item.fact is None]
    assert trend and trend[0].label.startswith("SCC antigen rising") and len(trend[0].facts) == 3


@pytest.mark.parametrize(
    "extra, ordered, blocked, recommended",
    [
        ([PACEMAKER], MRI_AP, ["mri-implanted-cardiac-device"], "ct-abdomen-pelvis-w"),
        # ACR-NKF 2021: a caution (group II agent), not a switch to iodinated CT (test_gadolinium_kidney.py)
        ([LOW_EGFR], MRI_AP, ["gadolinium-severe-renal-impairment"], None),
        ([PACEMAKER, IODINATED_ALLERGY], MRI_AP, ["mri-implanted-cardiac-device"], "fdg-pet-ct-skull-base-mid-thigh"),
        ([PACEMAKER, IODINATED_ALLERGY], US_PELVIS, [], "fdg-pet-ct-skull-base-mid-thigh"),
        ([IODINATED_ALLERGY], CT_AP, ["iodinated-contrast-allergy"], "mri-abdomen-pelvis-wo-w"),
        ([CLAUSTROPHOBIA], MRI_AP, ["mri-claustrophobia"], None),  # caution: shown, no switch
    ],
    ids=["pacemaker", "egfr", "pacemaker+iodinated", "us+pacemaker+iodinated", "ct+iodinated", "claustrophobia"],
)
def test_seed_a_contraindications(kb, extra, ordered, blocked, recommended):
    result = assess(kb, [*cervix_symptomatic(), *extra], *ordered)
    assert result.scenario.id == "cervix-suspected-recurrence"
    assert [item.contraindication.id for item in result.ordered_blocked_by] == blocked
    assert (result.recommended.procedure.id if result.recommended else None) == recommended


MR_BLOCK, MR_CAUTION = "mri-implanted-cardiac-device", "mri-cardiac-device-mr-conditional"


@pytest.mark.parametrize(
    "devices, ordered, blocked, recommended",
    [
        ([PACEMAKER_MR_CONDITIONAL], MRI_AP, [MR_CAUTION], None),              # MRI stays, with the protocol
        ([PACEMAKER_MR_CONDITIONAL, PACEMAKER_PROBLEM], MRI_AP, [MR_CAUTION], None),  # Z95.0 is that device
        ([PACEMAKER_MR_CONDITIONAL], US_PELVIS, [], "mri-abdomen-pelvis-wo-w"),  # the MRI is still preferred
        ([PACEMAKER_MR_UNSAFE], MRI_AP, [MR_BLOCK], "ct-abdomen-pelvis-w"),
        ([PACEMAKER_NO_MR_INFO], MRI_AP, [MR_BLOCK], "ct-abdomen-pelvis-w"),
        ([PACEMAKER_CONFLICTING], MRI_AP, [MR_BLOCK], "ct-abdomen-pelvis-w"),    # conflicting labels: the unsafe one
        ([PACEMAKER_MR_CONDITIONAL, PACEMAKER_MR_UNSAFE], MRI_AP, [MR_BLOCK, MR_CAUTION], "ct-abdomen-pelvis-w"),
        ([PACEMAKER_PROBLEM], MRI_AP, [MR_BLOCK], "ct-abdomen-pelvis-w"),        # a problem-list code alone
    ],
    ids=["conditional", "conditional+z95", "us+conditional", "unsafe", "no-mr-info", "conflicting",
         "conditional+unsafe-device", "z95-only"],
)
def test_seed_a_mr_labelling_grades_the_cardiac_device(kb, devices, ordered, blocked, recommended):
    """HRS 2017 Table 5: an MR-conditional system is scanned under its labelling (a caution naming the
    device protocol); MR Unsafe or unknown labelling stays a block that moves the order to CT."""
    result = assess(kb, [*cervix_symptomatic(), *devices], *ordered)
    assert [item.contraindication.id for item in result.ordered_blocked_by] == blocked
    assert (result.recommended.procedure.id if result.recommended else None) == recommended
    active = {item.contraindication.id: item for item in result.contraindications}
    if MR_CAUTION in active:
        assert active[MR_CAUTION].contraindication.severity == "caution"
        assert "labelled MR Conditional" in active[MR_CAUTION].evidence[0].label


# -- cervix neighbours --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [
        [condition("icd", "C53.9", ago=20, source="Condition/new"), condition("icd", "R10.20", ago=20)],
        [*cervix(treated_ago=60), condition("icd", "R10.20", ago=10)],
        cervix(),
        [*cervix(), *scc_series((1.2, 200), (1.25, 100), (1.3, 12))],
    ],
    ids=["staging-new-diagnosis", "early-post-treatment-window", "routine-asymptomatic", "stable-scc"],
)
def test_cervix_neighbours_are_not_rated(kb, facts):
    result = assess(kb, facts, *MRI_AP)
    assert result.outcome is Outcome.NOT_RATED and result.scenario is None


def test_order_reason_can_carry_the_symptom(kb):
    facts = [*cervix(), order_reason("icd", "R10.20", ago=None, source="ServiceRequest/order-1")]
    result = assess(kb, facts, *MRI_AP)
    assert result.scenario.id == "cervix-suspected-recurrence"
    assert result.evidence[0].fact.source == "ServiceRequest/order-1"


# == seed B: primary bone tumour, local surveillance ==================================================


@pytest.mark.parametrize(
    "ordered, procedure_id, rating, recommended",
    [
        (XR_FEMUR, "xr-femur", UA, None),
        (MRI_THIGH, "mri-lower-extremity-wo-w", UA, None),
        # A femur lies outside a skull-base-to-mid-thigh field: that PET is not rated for a limb
        # tumour (radiographs are suggested); the whole-body PET/CT is (issue 10, point 6).
        (PET, "fdg-pet-ct-skull-base-mid-thigh", None, "xr-femur"),
        ((("cpt", "78816"),), "pet-ct-whole-body", MBA, "xr-femur"),
        (BONE_SCAN, "bone-scan-whole-body", UNA, "xr-femur"),
    ],
)
def test_seed_b_bone_tumour_local_surveillance(kb, ordered, procedure_id, rating, recommended):
    result = assess(kb, bone_tumour(), *ordered)
    assert result.scenario.id == "bone-tumour-local-surveillance"
    assert result.ordered.id == procedure_id
    assert (result.rating.rating if result.rating else None) is rating
    assert (result.recommended.procedure.id if result.recommended else None) == recommended


@pytest.mark.parametrize(
    "facts",
    [
        [*bone_tumour(), condition("icd", "M79.651", ago=10, source="Condition/thigh-pain")],
        [condition("icd", "C49.22", ago=700), pcs("0QTB0ZZ", 550, "Procedure/resection")],
    ],
    ids=["symptomatic-bone-tumour", "soft-tissue-sarcoma"],
)
def test_bone_neighbours_are_not_rated(kb, facts):
    assert assess(kb, facts, *XR_FEMUR).outcome is Outcome.NOT_RATED


# == seed C: spinal metastasis after surgery and radiotherapy ==========================================


def test_seed_c_scheduled_mri_spine(kb):
    result = assess(kb, spine_metastasis(), *MRI_SPINE)
    assert result.scenario.id == "spine-metastasis-follow-up"
    assert result.ordered.id == "mri-spine-wo-w" and result.rating.rating is UA
    assert result.surveillance is None  # no earlier post-treatment study


def test_seed_c_early_repeat_gets_a_surveillance_notice(kb):
    facts = [*spine_metastasis(treated_ago=240), imaging("cpt", "72157", ago=40, source="ImagingStudy/last-mri")]
    notice = assess(kb, facts, *MRI_SPINE).surveillance
    assert notice is not None
    assert notice.expected_interval_months == 3 and notice.months_since_anchor == 7
    assert notice.days_since_last == 40 and notice.last_study.source == "ImagingStudy/last-mri"
    on_schedule = [*spine_metastasis(treated_ago=240), imaging("cpt", "72157", ago=85)]
    assert assess(kb, on_schedule, *MRI_SPINE).surveillance is None


def test_seed_c_mri_blocked_falls_back_to_ct_myelography(kb):
    result = assess(kb, [*spine_metastasis(), PACEMAKER], *MRI_SPINE)
    assert [item.contraindication.id for item in result.ordered_blocked_by] == ["mri-implanted-cardiac-device"]
    assert result.recommended.procedure.id == "ct-myelography-spine"
    assert result.recommended.rating is MBA


def test_seed_c_new_symptoms(kb):
    result = assess(kb, [*spine_metastasis(), condition("icd", "M54.50", ago=5, source="Condition/back-pain")], *MRI_SPINE)
    assert result.scenario.id == "spine-metastasis-new-symptoms" and result.rating.rating is UA
    assert result.surveillance is None


# == seed D: breast cancer, asymptomatic distant surveillance =========================================


@pytest.mark.parametrize(
    "ordered, procedure_id",
    [(PET, "fdg-pet-ct-skull-base-mid-thigh"), (CT_CAP, "ct-chest-abdomen-pelvis-w"), (BONE_SCAN, "bone-scan-whole-body"),
     (CT_CHEST, "ct-chest-w"), (CT_AP, "ct-abdomen-pelvis-w")],
)
def test_seed_d_systemic_imaging_is_low_value(kb, ordered, procedure_id):
    result = assess(kb, breast(), *ordered)
    assert result.scenario.id == "breast-distant-surveillance-asymptomatic"
    assert result.ordered.id == procedure_id
    assert result.rating.rating is UNA
    assert result.recommend_cancel and result.recommended is None


def test_seed_d_mammography_is_a_different_question(kb):
    result = assess(kb, breast(), *MAMMOGRAM)
    assert result.scenario.id == "breast-local-surveillance-mammography"
    assert result.rating.rating is UA and not result.recommend_cancel


@pytest.mark.parametrize(
    "symptom, ordered, procedure_id",
    [
        (condition("sct", "12584003", ago=10), BONE_SCAN, "bone-scan-whole-body"),
        (condition("icd", "R05.9", ago=10), CT_CHEST, "ct-chest-w"),
        (condition("icd", "R51.9", ago=10), MRI_BRAIN, "mri-brain-wo-w"),
    ],
    ids=["bone-pain", "cough", "headache"],
)
def test_breast_symptoms_move_to_directed_workup(kb, symptom, ordered, procedure_id):
    result = assess(kb, [*breast(), symptom], *ordered)
    assert result.scenario.id == "breast-symptom-directed-workup"
    assert result.ordered.id == procedure_id and result.rating.rating is UA
    assert not result.recommend_cancel


def test_breast_symptom_does_not_rate_an_unrelated_directed_study(kb):
    result = assess(kb, [*breast(), condition("icd", "R05.9", ago=10)], *BONE_SCAN)
    assert result.scenario.id == "breast-symptom-directed-workup"
    assert result.outcome is Outcome.NO_CRITERIA_APPLY
    assert result.recommended.procedure.id == "ct-chest-w"


def test_unrelated_catalogue_study_in_a_recognised_patient(kb):
    """A head CT after a fall in a patient with suspected cervical recurrence: the criteria do not
    cover it (PAMA "no criteria apply"), and MRI abdomen/pelvis must not be offered instead."""
    result = assess(kb, cervix_symptomatic(), ("cpt", "70450"))
    assert result.outcome is Outcome.NO_CRITERIA_APPLY
    assert result.scenario.id == "cervix-suspected-recurrence" and result.ordered.id == "ct-head-wo"
    assert result.recommended is None and result.rating is None


# == seed E: rectal cancer, new presacral lesion ======================================================


def test_seed_e_restaging_ct_is_usually_appropriate(kb):
    result = assess(kb, rectal(), *CT_CAP)
    assert result.scenario.id == "rectal-presacral-recurrence"
    assert result.ordered.id == "ct-chest-abdomen-pelvis-w" and result.rating.rating is UA


def test_seed_e_more_pelvic_imaging_after_mri_suggests_biopsy_and_restaging(kb):
    facts = [*rectal(), imaging("cpt", "72197", ago=10, source="ImagingStudy/pelvic-mri")]
    result = assess(kb, facts, *MRI_PELVIS)
    assert result.outcome is Outcome.NO_CRITERIA_APPLY
    assert result.scenario.id == "rectal-presacral-recurrence"
    assert result.ordered.id == "mri-pelvis-wo-w"
    assert [r.id for r in result.recommendations] == ["tissue-confirmation-first", "restaging-ct"]
    restaged = [*facts, imaging("cpt", "71260", ago=5), imaging("cpt", "74177", ago=5)]
    assert [r.id for r in assess(kb, restaged, *MRI_PELVIS).recommendations] == ["tissue-confirmation-first"]


def test_rectal_surveillance_ct_early_repeat(kb):
    facts = [*rectal(mass=False), imaging("cpt", "74177", ago=150, source="ImagingStudy/ct")]
    result = assess(kb, facts, *CT_CAP)
    assert result.scenario.id == "rectal-post-treatment-surveillance" and result.rating.rating is UA
    assert result.surveillance.expected_interval_months == 12 and result.surveillance.days_since_last == 150
    yearly = [*rectal(mass=False), imaging("cpt", "74177", ago=350)]
    assert assess(kb, yearly, *CT_CAP).surveillance is None


# == no cancer ========================================================================================


@pytest.mark.parametrize(
    "facts, ordered, reason",
    [
        ([condition("icd", "S83.511A", ago=3), order_reason("icd", "S83.511A")], KNEE_MRI, "no scenario applies to this patient"),
        ([condition("icd", "I10", ago=300)], CT_AP, "no scenario applies to this patient"),
        ([], MRI_AP, "no scenario applies to this patient"),
    ],
    ids=["knee-mri-after-injury", "no-cancer-ct", "empty-chart"],
)
def test_no_cancer_is_silent(kb, facts, ordered, reason):
    result = assess(kb, facts, *ordered)
    assert result.outcome is Outcome.NOT_RATED and result.reason == reason


# == every shipped criterion evaluates ================================================================


@pytest.mark.parametrize("facts", [[], "everything"], ids=["empty-chart", "busy-chart"])
def test_every_shipped_criterion_evaluates(kb, facts):
    """The loader's schema and this evaluator agree on every operator and option shipped: every
    criterion of the knowledge (definitions, contraindications, scenarios, and each nested one, which
    an ``all`` or ``any`` may not reach on a given chart), as the compiled knowledge lists them."""
    if facts == "everything":
        facts = [*cervix_symptomatic(), *bone_tumour(), *spine_metastasis(), *breast(), *rectal(), PACEMAKER,
                 LOW_EGFR, IODINATED_ALLERGY, *scc_series((1.0, 100), (2.0, 10)),
                 imaging("cpt", "72197", ago=10), observation("loinc", "97509-4", ago=5,
                                                               value_codes=(Code("http://snomed.info/sct", "271299001"),))]
    evaluator = CriteriaEvaluator(chart(*facts), kb)
    criteria = [criterion for criterion, _ in kb.compiled.operators.values()]
    assert len(criteria) > len(kb.scenarios) + len(kb.definitions)
    for criterion in criteria:
        evaluator.evaluate(criterion)


def test_shipped_assessments_do_not_share_state(kb):
    first = assess(kb, [*cervix_symptomatic(), PACEMAKER], *MRI_AP)
    assess(kb, breast(), *PET)
    assess(kb, [], *MRI_AP)
    assert assess(kb, [*cervix_symptomatic(), PACEMAKER], *MRI_AP) == first
