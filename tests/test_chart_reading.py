"""What the chart really holds, read as EHRs record it, and asked the way knowledge asks it.

Each test starts from FHIR JSON shaped as US Core / mCODE charts carry it, goes through
``extract_chart_facts`` and then a criterion of the knowledge grammar over a small test knowledge
(tests/reasoning_kb.py), so it shows what a clinician would see change: a treatment linked to the
cancer it was for, a stage IV that is now visible, the latest eGFR deciding, a marker series in
mixed units read as one series.

Codes: SNOMED CT 254837009 breast cancer, 363351006 rectal cancer, 33195004 teleradiotherapy
(cds-hooks sandbox list, clinical-knowledge.md); RxNorm 10324 tamoxifen (mCODE examples); LOINC
98979-8 eGFR CKD-EPI 2021, 9679-2 SCC antigen, 21908-9 stage group (clinical) (HL7/fhir-mCODE-ig
input/fsh/VS_Staging.fsh); SNOMED CT 1222837003 AJCC stage IV (as in public mCODE-style examples);
CPT 74177 CT abdomen and pelvis with contrast.
"""

from __future__ import annotations

from datetime import date

from cds_service.chart.extract import extract_chart_facts
from cds_service.chart.facts import ChartFacts, FactKind
from cds_service.kb.model import normalise_code
from cds_service.reasoning.criteria import evaluate
from tests.fhir_builders import (CPT, ICD10CM, LOINC, SNOMED, bundle, concept, condition, observation, procedure,
                                 scc_antigen)
from tests.reasoning_kb import knowledge_from_dicts

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TODAY = date(2024, 6, 1)
BREAST_CANCER = "254837009"
RECTAL_CANCER = "363351006"
RADIOTHERAPY = "33195004"
TAMOXIFEN = "10324"
STAGE_IV = "1222837003"

KB = knowledge_from_dicts(
    procedures=[{"id": "ct-abdomen-pelvis-w", "modality": "CT", "codes": [{"system": "cpt", "code": "74177"}]}],
    valuesets=[
        {"id": "breast-cancer", "codes": [{"system": "sct", "code": BREAST_CANCER}], "prefixes": [{"system": "icd", "prefix": "C50"}]},
        {"id": "rectal-cancer", "codes": [{"system": "sct", "code": RECTAL_CANCER}]},
        {"id": "radiotherapy", "codes": [{"system": "sct", "code": RADIOTHERAPY}]},
        {"id": "endocrine-therapy", "codes": [{"system": RXNORM, "code": TAMOXIFEN}]},
        {"id": "egfr", "codes": [{"system": "loinc", "code": "98979-8"}]},
        {"id": "scc", "codes": [{"system": "loinc", "code": "9679-2"}]},
        {"id": "stage-group", "codes": [{"system": "loinc", "code": "21908-9"}]},
        {"id": "stage-iv", "codes": [{"system": "sct", "code": STAGE_IV}]},
    ],
)


def facts(*resources: dict, keys: dict | None = None) -> ChartFacts:
    prefetch = keys if keys is not None else {"chart": bundle(*resources)}
    return extract_chart_facts(prefetch, None, TODAY, is_relevant=KB.knows_code,
                               is_study=lambda s, c: normalise_code(s, c) in KB.code_index)


def holds(criterion: dict, chart: ChartFacts) -> bool:
    return evaluate(criterion, chart, KB).holds


def with_reasons(resource: dict, *codes: str, references: tuple[str, ...] = ()) -> dict:
    resource["reasonCode"] = [concept(code, SNOMED) for code in codes]
    if references:
        resource["reasonReference"] = [{"reference": ref} for ref in references]
    return resource


def radiotherapy(**kw) -> dict:
    return procedure(RADIOTHERAPY, SNOMED, id=kw.pop("id", "rt-1"), performed=kw.pop("performed", "2023-04-12"), **kw)


def administration(code: str, *, id: str = "ma-1", effective: str = "2024-05-20", status: str = "completed") -> dict:
    return {"resourceType": "MedicationAdministration", "id": id, "status": status,
            "medicationCodeableConcept": concept(code, RXNORM, "tamoxifen"),
            "subject": {"reference": "Patient/pat-onc-1"}, "effectiveDateTime": effective}


# -- treatments and what they were for --------------------------------------------------------


def test_cancer_named_only_in_the_radiotherapy_reason_is_a_cancer_of_the_patient():
    chart = facts(with_reasons(radiotherapy(), BREAST_CANCER))
    assert holds({"condition": "breast-cancer"}, chart)
    # ... but undated and of unknown status: no "recent" or "active" criterion can rest on it.
    assert not holds({"condition": "breast-cancer", "within_days": 3650}, chart)
    assert not holds({"condition": "breast-cancer", "clinical_status": ["active"]}, chart)
    [derived] = [f for f in chart.facts if f.kind is FactKind.CONDITION]
    assert derived.source == "Procedure/rt-1" and derived.date is None


def test_radiotherapy_for_breast_cancer_is_told_from_radiotherapy_for_rectal_cancer():
    breast = facts(with_reasons(radiotherapy(), BREAST_CANCER))
    rectal = facts(with_reasons(radiotherapy(), RECTAL_CANCER))
    criterion = {"procedure": "radiotherapy", "reason_in": "breast-cancer", "within_days": 730}
    assert holds(criterion, breast)
    assert not holds(criterion, rectal)
    assert holds({"procedure": "radiotherapy", "within_days": 730}, rectal)  # still radiotherapy


def test_reason_reference_links_the_treatment_to_the_prefetched_condition():
    cancer = condition("C50.912", ICD10CM, id="bc-1", onset="2022-11-01")
    treatment = with_reasons(radiotherapy(), references=("Condition/bc-1",))
    chart = facts(keys={"conditions": bundle(cancer), "procedures": bundle(treatment)})
    assert holds({"procedure": "radiotherapy", "reason_in": "breast-cancer"}, chart)
    # The referenced Condition is a fact of its own; the link adds no second copy of it.
    assert [f.source for f in chart.facts if f.kind is FactKind.CONDITION] == ["Condition/bc-1"]


def test_a_treatment_whose_own_code_is_unknown_still_shows_the_cancer_it_was_for():
    unknown_treatment = with_reasons(procedure("77427", CPT, id="rt-cpt", performed="2023-04-01"), RECTAL_CANCER)
    chart = facts(unknown_treatment)
    assert holds({"condition": "rectal-cancer"}, chart)
    assert not any(f.kind is FactKind.PROCEDURE for f in chart.facts)


def test_endocrine_therapy_given_as_administrations_and_statements_is_read():
    statement = {"resourceType": "MedicationStatement", "id": "ms-1", "status": "active",
                 "medicationReference": {"reference": "Medication/tam"}, "effectivePeriod": {"start": "2023-01-01"},
                 "subject": {"reference": "Patient/pat-onc-1"}, "reasonCode": [concept(BREAST_CANCER)]}
    medication = {"resourceType": "Medication", "id": "tam", "code": concept(TAMOXIFEN, RXNORM)}
    included = bundle(statement)
    included["entry"].append({"resource": medication, "search": {"mode": "include"}})  # _include=...:medication
    chart = facts(keys={"medicationStatements": included, "medicationAdministrations": bundle(administration(TAMOXIFEN))})
    assert holds({"medication": "endocrine-therapy", "within_days": 30}, chart)        # the administration
    assert holds({"medication": "endocrine-therapy", "reason_in": "breast-cancer"}, chart)  # the statement
    not_given = facts(administration(TAMOXIFEN, status="not-done"))
    assert not holds({"medication": "endocrine-therapy"}, not_given)


# -- stage ---------------------------------------------------------------------------------------


def test_stage_iv_in_condition_stage_is_a_stage_fact_of_that_cancer():
    cancer = condition(BREAST_CANCER, SNOMED, id="bc-1", onset="2021-05-01")
    cancer["stage"] = [{"summary": concept(STAGE_IV, SNOMED, "AJCC stage IV"), "type": concept("21908-9", LOINC)}]
    chart = facts(cancer)
    assert holds({"stage": "stage-iv"}, chart)
    assert holds({"stage": "stage-iv", "reason_in": "breast-cancer"}, chart)
    assert not holds({"stage": "stage-iv", "reason_in": "rectal-cancer"}, chart)
    refuted = condition(BREAST_CANCER, SNOMED, id="bc-2", verification="refuted")
    refuted["stage"] = cancer["stage"]
    assert not holds({"stage": "stage-iv"}, facts(refuted))


def test_stage_group_observation_with_focus_gives_its_stage_and_its_cancer():
    cancer = condition(BREAST_CANCER, SNOMED, id="bc-1", onset="2021-05-01")
    group = observation("21908-9", LOINC, id="sg-1", effective="2024-02-01", category="survey",
                        value_code=concept(STAGE_IV, SNOMED))
    group["focus"] = [{"reference": "Condition/bc-1"}]
    chart = facts(cancer, group)
    assert holds({"observation": "stage-group", "value_in": "stage-iv"}, chart)
    [stage] = [f for f in chart.facts if f.kind is FactKind.OBSERVATION]
    assert {c.code for c in stage.reason_codes} == {BREAST_CANCER}


# -- prior imaging recorded as a Procedure ------------------------------------------------------


def test_a_ct_recorded_as_a_procedure_is_prior_imaging():
    chart = facts(procedure("74177", CPT, id="ct-1", performed="2024-03-01"))
    assert holds({"imaging": ["ct-abdomen-pelvis-w"], "within_days": 120}, chart)
    assert not holds({"imaging": ["ct-abdomen-pelvis-w"], "within_days": 60}, chart)
    without_catalogue = extract_chart_facts({"chart": bundle(procedure("74177", CPT, performed="2024-03-01"))},
                                            None, TODAY, is_relevant=KB.knows_code)
    assert not holds({"imaging": ["ct-abdomen-pelvis-w"]}, without_catalogue)


# -- labs: the latest value, units, the reference range -----------------------------------------


def egfr(id: str, value: float, effective: str) -> dict:
    return observation("98979-8", LOINC, id=id, value=value, unit="mL/min/{1.73_m2}", effective=effective)


def test_the_latest_egfr_decides_not_an_old_low_one():
    recovered = facts(egfr("e1", 22, "2024-04-01"), egfr("e2", 65, "2024-05-25"))
    assert holds({"observation": "egfr", "value_below": 30, "within_days": 90}, recovered)  # any value: the old bug
    assert not holds({"observation": "egfr", "value_below": 30, "latest": True}, recovered)
    worsened = facts(egfr("e1", 65, "2024-04-01"), egfr("e2", 22, "2024-05-25"))
    assert holds({"observation": "egfr", "value_below": 30, "latest": True, "within_days": 90}, worsened)
    stale = facts(egfr("e1", 22, "2023-01-01"))
    assert not holds({"observation": "egfr", "value_below": 30, "latest": True, "within_days": 90}, stale)


def test_value_bounds_in_a_stated_unit_convert_equivalent_units():
    in_pg = observation("9679-2", LOINC, id="s1", value=2500, unit="pg/mL", effective="2024-05-01")
    assert holds({"observation": "scc", "value_above": 2, "unit": "ng/mL"}, facts(in_pg))
    assert not holds({"observation": "scc", "value_above": 2}, facts(
        observation("9679-2", LOINC, id="s2", value=1.9, unit="ug/L", effective="2024-05-01")))
    other_kind = observation("9679-2", LOINC, id="s3", value=5, unit="U/mL", effective="2024-05-01")
    assert not holds({"observation": "scc", "value_above": 2, "unit": "ng/mL"}, facts(other_kind))


def test_one_value_above_the_reference_range_counts_where_the_source_says_so():
    above = facts(scc_antigen("s1", 2.1, "2024-05-01", high=1.5))
    within = facts(scc_antigen("s1", 1.2, "2024-05-01", high=1.5))
    no_range = facts(scc_antigen("s1", 9.0, "2024-05-01", high=None))
    criterion = {"observation": "scc", "above_reference_high": True, "within_days": 90}
    assert holds(criterion, above)
    assert not holds(criterion, within)
    assert not holds(criterion, no_range)  # no range given: nothing says it is abnormal


def test_scc_series_in_ng_per_ml_and_ug_per_l_is_one_rising_series():
    series = facts(scc_antigen("s1", 1.0, "2023-09-01", unit="ng/mL"),
                   scc_antigen("s2", 1.1, "2024-01-10", unit="ug/L"),
                   scc_antigen("s3", 3.4, "2024-05-01", unit="ng/mL"))
    result = evaluate({"marker_trend": "scc"}, series, KB)
    assert result.holds
    [evidence] = result.evidence
    assert [p.value for p in evidence.facts] == [1.0, 1.1, 3.4] and {p.unit for p in evidence.facts} == {"ng/mL"}
    falling = facts(scc_antigen("s1", 4.0, "2024-01-10", unit="ug/L"), scc_antigen("s2", 1.0, "2024-05-01", unit="ng/mL"))
    assert evaluate({"marker_trend": "scc", "trend": "falling"}, falling, KB).holds


# -- medications coded by reference arrive with their Medication (_include) -------------------------


def test_a_fetched_medication_request_coded_by_reference_is_read_with_its_medication():
    """Through the shipped template over real HTTP: the FHIR server includes the Medication, so the
    request's drug is known (without it the request has no code and tells nothing)."""
    from cds_service.devtools.fixture_fhir_server import FixtureFhirServer
    from cds_service.ehr.fhir_client import FhirClient
    from cds_service.ehr.prefetch_completion import complete_prefetch
    from cds_service.hooks.services import PREFETCH_TEMPLATES

    request = {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
               "medicationReference": {"reference": "Medication/tam"}, "authoredOn": "2024-01-05",
               "subject": {"reference": "Patient/pat-onc-1"}, "reasonCode": [concept(BREAST_CANCER)]}
    medication = {"resourceType": "Medication", "id": "tam", "code": concept(TAMOXIFEN, RXNORM, "tamoxifen")}
    templates = {"medications": PREFETCH_TEMPLATES["medications"]}
    with FixtureFhirServer([request, medication]) as ehr:
        client = FhirClient(allowed_servers=(), allow_loopback=True)
        try:
            prefetch = complete_prefetch(templates=templates, prefetch=None, context={"patientId": "pat-onc-1"},
                                         fhir_server=ehr.base_url, access_token=None, client=client)
        finally:
            client.close()
    modes = [e["search"]["mode"] for e in prefetch["medications"]["entry"]]
    assert modes == ["match", "include"]
    chart = facts(keys=prefetch)
    assert holds({"medication": "endocrine-therapy", "reason_in": "breast-cancer", "within_days": 200}, chart)


def test_a_radiotherapy_course_under_way_is_recent_treatment_however_long_ago_it_began():
    ongoing = radiotherapy(id="rt-now", performed=None, period=("2023-12-01", None), status="in-progress")
    finished = radiotherapy(id="rt-old", performed=None, period=("2023-12-01", "2024-01-20"), status="completed")
    assert holds({"procedure": "radiotherapy", "within_days": 30}, facts(ongoing))
    assert not holds({"procedure": "radiotherapy", "within_days": 30}, facts(finished))


def test_a_chart_naming_hundreds_of_made_up_units_costs_a_bounded_number_of_parses(monkeypatch):
    """Units come from the chart and each new one is a parse: after a few that do not convert, a
    series (or a criterion) stops trying new ones and claims nothing from them."""
    from cds_service.chart import units

    parsed: list[str] = []
    real_quantity = units._quantity
    monkeypatch.setattr(units, "_quantity", lambda unit: parsed.append(unit) or real_quantity(unit))
    points = [scc_antigen(f"s{i}", 1.0 + i, f"2024-0{1 + i % 4}-{10 + i % 15:02d}", unit=f"zz{i}/mL")
              for i in range(200)]
    points.append(scc_antigen("last", 9.0, "2024-05-30", unit="ng/mL"))
    chart = facts(*points)
    assert not evaluate({"marker_trend": "scc"}, chart, KB).holds  # nothing comparable: no trend claimed
    evaluate({"observation": "scc", "value_above": 2, "unit": "ug/L"}, chart, KB)
    made_up = {u for u in parsed if u.startswith("zz")}
    assert len(made_up) <= 2 * units.MAX_FAILED_UNITS
    assert units.convert(1.0, "(" * 12 + "ng" + ")" * 12 + "/mL", "ng/mL") is None  # nested: not parsed


def test_a_few_inconvertible_units_do_not_stop_the_real_ones_from_being_compared():
    points = [scc_antigen(f"s{i}", 50.0, f"2024-03-{10 + i:02d}", unit=f"zz{i}/mL") for i in range(3)]
    points.append(scc_antigen("last", 9.0, "2024-05-30", unit="ng/mL"))
    bounded = evaluate({"observation": "scc", "value_above": 2, "unit": "ug/L"}, facts(*points), KB)
    assert [e.fact.source for e in bounded.evidence] == ["Observation/last"]
