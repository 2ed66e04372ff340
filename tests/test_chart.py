"""Chart layer: draft orders, prefetch → facts, tumour-marker trend. No medicine is tested here."""

from __future__ import annotations

import copy
import importlib.util
from datetime import date
from pathlib import Path

import pytest

from cds_service.chart.extract import extract_chart_facts
from cds_service.chart.marker_trend import extract_tumour_marker_trend
from cds_service.chart.facts import ChartFacts, ClinicalFact, Code, DraftOrder, FactKind
from cds_service.chart.fhirjson import fhir_date
from cds_service.chart import orders as orders_module
from cds_service.chart.orders import read_draft_orders, warm_up
from tests.fhir_builders import (CPT, ICD10CM, LAB_CATEGORY, LOINC, MCODE_DISEASE_STATUS, MCODE_PRIMARY_CANCER,
                           MCODE_RADIOTHERAPY_SUMMARY, MCODE_TUMOR_MARKER, RADIOLOGY_CATEGORY, SNOMED,
                           US_CORE_CONDITION, allergy, bundle, cancer_disease_status, concept, condition,
                           device, device_use_statement, diagnostic_report, draft_orders, hook_request,
                           imaging_study, medication_request, observation, operation_outcome, patient,
                           procedure, radiotherapy_course_summary, scc_antigen, service_request)

TODAY = date(2024, 6, 1)


def load_synthetic_chart():
    """bench/synthetic_chart.py, the benchmark's chart generator (bench/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "bench" / "synthetic_chart.py"
    spec = importlib.util.spec_from_file_location("synthetic_chart", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def facts_of(*resources: dict, order: DraftOrder | None = None) -> ChartFacts:
    return extract_chart_facts({"chart": bundle(*resources)}, order, TODAY)


def only_fact(*resources: dict) -> ClinicalFact:
    chart = facts_of(*resources)
    assert len(chart.facts) == 1, chart.facts
    return chart.facts[0]


def codes(*pairs: tuple[str, str]) -> set[tuple[str, str]]:
    return set(pairs)


def code_pairs(fact: ClinicalFact) -> set[tuple[str, str]]:
    return {(c.system, c.code) for c in fact.codes}


# =============================================================================================
# Draft orders


class TestReadDraftOrders:
    def test_sandbox_order_select_body(self):
        request = hook_request(service_request(reasons=[("25064002", "Headache (finding)"),
                                                        ("423341008", "Edema of optic disc (disorder)")]))
        context = request["context"]
        orders, notes = read_draft_orders(context["draftOrders"], context["selections"])
        assert notes == []
        [order] = orders
        assert order.resource is context["draftOrders"]["entry"][0]["resource"]  # untouched, not a copy
        assert order.resource_id == "example-request-id"
        assert order.reference == "ServiceRequest/example-request-id"
        assert order.codes == (Code(CPT, "70450", "Computed tomography, head or brain; without contrast material"),)
        assert [c.code for c in order.reason_codes] == ["25064002", "423341008"]
        assert order.text == "Computed tomography, head or brain; without contrast material"

    def test_order_select_rates_only_selected(self):
        orders, notes = read_draft_orders(
            draft_orders(service_request("70450", id="a"), service_request("71250", id="b")), ["ServiceRequest/b"])
        assert [o.resource_id for o in orders] == ["b"]
        assert notes == []  # unselected orders are simply not rated

    def test_order_sign_rates_all_service_requests(self):
        orders, notes = read_draft_orders(
            draft_orders(service_request("70450", id="a"), service_request("71250", id="b")), None)
        assert [o.resource_id for o in orders] == ["a", "b"]
        assert notes == []

    @pytest.mark.parametrize("other", [
        medication_request("1234", id="m1"),
        {"resourceType": "NutritionOrder", "id": "n1", "status": "draft", "intent": "order",
         "patient": {"reference": "Patient/p"}, "dateTime": "2024-01-01"},
        {"resourceType": "DeviceRequest", "id": "d1", "status": "draft", "intent": "order",
         "codeCodeableConcept": concept("1234"), "subject": {"reference": "Patient/p"}},
    ])
    def test_other_request_types_are_skipped_with_a_note(self, other):
        orders, notes = read_draft_orders(draft_orders(other, service_request()), None)
        assert [o.resource_id for o in orders] == ["example-request-id"]
        assert len(notes) == 1 and other["resourceType"] in notes[0]

    def test_selected_medication_request_is_noted(self):
        orders, notes = read_draft_orders(draft_orders(medication_request("1234", id="m1"), service_request()),
                                          ["MedicationRequest/m1"])
        assert orders == []
        assert "MedicationRequest" in notes[0]

    def test_selection_not_in_draft_orders_is_noted(self):
        orders, notes = read_draft_orders(draft_orders(service_request()), ["ServiceRequest/other"])
        assert orders == []
        assert notes == ["selections: ServiceRequest/other is not in draftOrders"]

    def test_selection_by_full_url_for_orders_without_id(self):
        resource = service_request(id=None)
        body = {"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:1f4e", "resource": resource}]}
        orders, _ = read_draft_orders(body, ["urn:uuid:1f4e"])
        assert len(orders) == 1 and orders[0].resource_id is None and orders[0].reference is None

    def test_empty_sandbox_state_gives_an_order_without_codes(self):
        orders, notes = read_draft_orders(draft_orders(service_request(code=None)), ["ServiceRequest/example-request-id"])
        [order] = orders
        assert order.codes == () and order.reason_codes == () and order.text is None
        assert notes == []

    @pytest.mark.parametrize("value", [None, [], "Bundle", 42, [service_request()],
                                       {"resourceType": "ServiceRequest"}, {"entry": []},
                                       {"resourceType": "Bundle"}, {"resourceType": "Bundle", "entry": "x"}])
    def test_draft_orders_of_the_wrong_shape_give_no_orders_and_a_note(self, value):
        orders, notes = read_draft_orders(value, None)
        assert orders == [] and len(notes) == 1

    def test_junk_entries_are_noted_and_good_orders_kept(self):
        body = {"resourceType": "Bundle", "entry": ["x", None, {}, {"resource": "ServiceRequest/1"},
                                                    {"resource": {"id": "no-type"}}, {"resource": service_request()}]}
        orders, notes = read_draft_orders(body, None)
        assert [o.resource_id for o in orders] == ["example-request-id"]
        assert len(notes) == 5

    @pytest.mark.parametrize("bad_code", [
        "CT head",                                                  # string instead of CodeableConcept
        {"coding": {"system": CPT, "code": "70450"}},               # coding not a list
        {"coding": ["70450"]},                                      # coding item not an object
        {"coding": [{"system": {"uri": CPT}, "code": "70450"}]},    # system not a string
        {"coding": [{"system": CPT, "code": 70450}]},               # code is a number
        {"coding": [{"system": CPT, "code": "70450"}], "text": 7},  # text is a number
    ])
    def test_malformed_code_skips_the_order_with_a_note(self, bad_code):
        resource = service_request()
        resource["code"] = bad_code
        orders, notes = read_draft_orders(draft_orders(resource, service_request("71250", id="ok")), None)
        assert [o.resource_id for o in orders] == ["ok"]
        assert notes == ["draftOrders.entry[0] (ServiceRequest/example-request-id): skipped, ServiceRequest.code is malformed"]

    @pytest.mark.parametrize("change", [
        lambda r: r.pop("subject"),                                    # 1..1 element missing
        lambda r: r.update(vendorPriority="stat"),                     # unknown element
        lambda r: r.update(reason=[{"concept": concept("1")}]),        # R5-only element
        lambda r: r.update(authoredOn="2024-05-01T10:00:00"),          # dateTime without timezone
        lambda r: r.update(id="with_underscore"),                      # id pattern
        lambda r: r["code"]["coding"][0].update(code=" 70450 "),       # untrimmed code
        lambda r: r.update(status="done"),                             # required binding
        lambda r: r.update(contained=[{"resourceType": "FooType"}]),   # fhir.resources raises KeyError
        lambda r: r.update(subject="Patient/p"),                       # wrong type outside code
    ])
    def test_benign_validation_failures_do_not_stop_the_order(self, change):
        resource = service_request()
        change(resource)
        orders, _ = read_draft_orders(draft_orders(resource), None)
        [order] = orders
        assert [(c.system, c.code) for c in order.codes] == [(CPT, "70450")]

    def test_the_fast_shape_check_agrees_with_the_r4b_model(self):
        # Clean concepts skip the R4B model; for every concept the fast check passes, the model must
        # find no wrong-type error either, and every concept it does not pass goes to the model.
        values = ["70450", "", " x ", 7, 1.5, True, None, [], ["x"], {}, {"url": "x"}]
        good_coding = {"system": CPT, "code": "70450", "display": "CT head"}
        variants = [{}, {"coding": []}, {"coding": [{}]}, {"coding": [good_coding]}, {"text": "CT head"}]
        for member in ("id", "coding", "text", "extension"):
            variants += [{member: value, "coding": [good_coding]} if member != "coding" else {member: value}
                         for value in values]
        for member in ("id", "system", "version", "code", "display", "userSelected", "extension", "_code"):
            variants += [{"coding": [{**good_coding, member: value}]} for value in values]
        assert len(variants) > 100
        for variant in variants:
            fast = orders_module._shape_errors(variant)
            assert fast == orders_module._model_shape_errors(variant), variant

    def test_codings_need_both_system_and_code(self):
        resource = service_request()
        resource["code"]["coding"] = [{"code": "70450"}, {"system": CPT}, {"system": " ", "code": "x"},
                                      {"system": CPT, "code": ""}, {"system": f" {CPT} ", "code": "70551\n"}]
        [order], _ = read_draft_orders(draft_orders(resource), None)
        assert order.codes == (Code(CPT, "70551"),)

    def test_malformed_reasons_are_dropped_with_a_note(self):
        resource = service_request(reasons=[("25064002", "Headache")])
        resource["reasonCode"].extend(["headache", {"coding": "x"}, {"coding": [{}]}])
        [order], notes = read_draft_orders(draft_orders(resource), None)
        assert [c.code for c in order.reason_codes] == ["25064002"]
        assert notes == ["draftOrders.entry[0] (ServiceRequest/example-request-id): malformed reasonCode entries ignored"]

    def test_reason_code_not_a_list(self):
        resource = service_request()
        resource["reasonCode"] = {"coding": [{"system": SNOMED, "code": "1"}]}
        [order], notes = read_draft_orders(draft_orders(resource), None)
        assert order.reason_codes == () and len(notes) == 1

    @pytest.mark.parametrize("selections", ["ServiceRequest/example-request-id", ("ServiceRequest/example-request-id",)])
    def test_lenient_selection_shapes(self, selections):
        orders, _ = read_draft_orders(draft_orders(service_request()), selections)
        assert len(orders) == 1

    @pytest.mark.parametrize("selections", [[], 5, [None, 3]])
    def test_unusable_selections_select_nothing(self, selections):
        orders, _ = read_draft_orders(draft_orders(service_request()), selections)
        assert orders == []

    def test_notes_are_capped(self):
        body = {"resourceType": "Bundle", "entry": [None] * 5_000 + [{"resource": service_request()}]}
        orders, notes = read_draft_orders(body, None)
        assert len(orders) == 1
        assert len(notes) == 21 and notes[-1] == "... and 4980 more notes"

    def test_duplicate_selections_are_not_noted(self):
        selected = ["ServiceRequest/example-request-id"] * 2
        assert read_draft_orders(draft_orders(service_request()), selected)[1] == []

    def test_hostile_order_never_raises(self):
        nested: dict = {"url": "http://example.org/x", "valueString": "a"}
        for _ in range(900):
            nested = {"url": "http://example.org/x", "extension": [nested]}
        resource = service_request()
        resource["extension"] = [nested]
        resource["contained"] = [[[[]]], "x", {"resourceType": None}]
        orders, _ = read_draft_orders(draft_orders(resource), None)
        assert len(orders) == 1 and orders[0].codes

    def test_typed_bundle_type_collection_is_fine(self):
        body = bundle(service_request(), type="collection")
        assert len(read_draft_orders(body, None)[0]) == 1

    def test_warm_up_runs(self):
        warm_up()


# =============================================================================================
# Dates


@pytest.mark.parametrize("text, expected", [
    ("2024", date(2024, 1, 1)),
    ("2024-05", date(2024, 5, 1)),
    ("2024-05-17", date(2024, 5, 17)),
    ("2024-05-17T10:00:00Z", date(2024, 5, 17)),
    ("2024-05-17T23:30:00-05:00", date(2024, 5, 17)),     # the date in its own offset, not UTC
    ("2024-05-17T00:30:00+14:00", date(2024, 5, 17)),
    ("2024-05-17T10:00:00.123+02:00", date(2024, 5, 17)),
    (" 2024-05-17 ", date(2024, 5, 17)),
    ("2024-13", None), ("2023-02-30", None), ("0000-01-01", None), ("24-05-17", None),
    ("2024/05/17", None), ("May 2024", None), ("", None), ("2024-5-7", None),
    (20240517, None), (2024.5, None), (None, None), (["2024"], None), ({"value": "2024"}, None),
    ("2024-05-17T" + "0" * 10_000, None),                  # junk this long is not even parsed
])
def test_fhir_date(text, expected):
    assert fhir_date(text) == expected


# =============================================================================================
# Conditions


@pytest.mark.parametrize("resource, expected", [
    # mCODE primary cancer, ICD-10-CM, with profile
    (condition("C53.9", ICD10CM, onset="2023-02-14", profile=MCODE_PRIMARY_CANCER),
     dict(codes={(ICD10CM, "C53.9")}, date=date(2023, 2, 14), status="active", profiles=(MCODE_PRIMARY_CANCER,))),
    # SNOMED, no meta.profile (many EHRs send none)
    (condition("363354003", SNOMED, display="Malignant tumor of cervix", onset="2023-02"),
     dict(codes={(SNOMED, "363354003")}, date=date(2023, 2, 1), text="Malignant tumor of cervix", profiles=())),
    # history code Z85.*, US Core profile, recorded date only
    (condition("Z85.41", ICD10CM, recorded="2021", profile=US_CORE_CONDITION, clinical_status="inactive"),
     dict(codes={(ICD10CM, "Z85.41")}, date=date(2021, 1, 1), status="inactive")),
    # recurrence is a clinicalStatus, passed through for criteria
    (condition("C53.9", ICD10CM, onset="2024-04-30T09:00:00+02:00", clinical_status="recurrence"),
     dict(date=date(2024, 4, 30), status="recurrence", verification="confirmed")),
    (condition("C53.9", ICD10CM, clinical_status="relapse", verification="provisional"),
     dict(date=None, status="relapse", verification="provisional")),
])
def test_condition_facts(resource, expected):
    fact = only_fact(resource)
    assert fact.kind is FactKind.CONDITION
    assert fact.source == f"Condition/{resource['id']}"
    for name, value in expected.items():
        actual = code_pairs(fact) if name == "codes" else getattr(fact, name)
        assert actual == value, name


@pytest.mark.parametrize("verification", ["entered-in-error", "refuted"])
def test_void_conditions_are_skipped(verification):
    chart = facts_of(condition("C53.9", ICD10CM, verification=verification))
    assert chart.facts == () and chart.skipped_resources == 0


def test_condition_onset_not_a_date_falls_back_to_recorded_date():
    resource = condition("C53.9", ICD10CM, recorded="2022-03-04")
    resource["onsetString"] = "spring 2021"
    assert only_fact(resource).date == date(2022, 3, 4)


def test_condition_onset_period_start_and_body_site():
    resource = condition("C53.9", ICD10CM, body_site=concept("71252005", display="Cervix uteri structure"))
    resource["onsetPeriod"] = {"start": "2020-07", "end": "2021-01"}
    fact = only_fact(resource)
    assert fact.date == date(2020, 7, 1)
    assert [c.code for c in fact.body_site_codes] == ["71252005"]


def test_dstu2_shaped_condition_is_read():
    resource = {"resourceType": "Condition", "id": "d2", "patient": {"reference": "Patient/p"},
                "code": concept("C53.9", ICD10CM), "clinicalStatus": "active", "verificationStatus": "confirmed",
                "dateRecorded": "2019-05-06"}
    fact = only_fact(resource)
    assert (fact.status, fact.verification, fact.date) == ("active", "confirmed", date(2019, 5, 6))
    resource["verificationStatus"] = "entered-in-error"
    assert facts_of(resource).facts == ()


# =============================================================================================
# Procedures and medications


@pytest.mark.parametrize("resource, expected_date", [
    (procedure("116140006", performed="2023-01-20T08:00:00-05:00"), date(2023, 1, 20)),
    (procedure("367336001", period=("2023-02-01", "2023-03-15")), date(2023, 3, 15)),   # end of the course
    (procedure("367336001", period=("2023-02-01", None)), date(2023, 2, 1)),            # ongoing: start
    (radiotherapy_course_summary(start="2023-03-01", end="2023-04-12"), date(2023, 4, 12)),
])
def test_procedure_dates(resource, expected_date):
    fact = only_fact(resource)
    assert fact.kind is FactKind.PROCEDURE and fact.date == expected_date


def test_radiotherapy_course_summary():
    fact = only_fact(radiotherapy_course_summary())
    assert code_pairs(fact) == {(SNOMED, "1217123003")}
    assert fact.profiles == (MCODE_RADIOTHERAPY_SUMMARY,) and fact.status == "completed"


def test_performed_string_gives_no_date():
    resource = procedure("116140006")
    resource["performedString"] = "years ago"
    assert only_fact(resource).date is None


@pytest.mark.parametrize("status", ["not-done", "entered-in-error"])
def test_void_procedures_are_skipped(status):
    assert facts_of(procedure("116140006", status=status)).facts == ()


def test_medications():
    administration = {"resourceType": "MedicationAdministration", "id": "ma1", "status": "completed",
                      "medicationCodeableConcept": concept("40048", "http://www.nlm.nih.gov/research/umls/rxnorm"),
                      "subject": {"reference": "Patient/p"},
                      "effectivePeriod": {"start": "2023-02-01T09:00:00Z", "end": "2023-02-01T13:00:00Z"}}
    statement = {"resourceType": "MedicationStatement", "id": "ms1", "status": "not-taken",
                 "medicationCodeableConcept": concept("40048", "http://www.nlm.nih.gov/research/umls/rxnorm"),
                 "subject": {"reference": "Patient/p"}}
    referenced = {"resourceType": "MedicationRequest", "id": "mr2", "status": "completed", "intent": "order",
                  "medicationReference": {"reference": "Medication/cisplatin"}, "subject": {"reference": "Patient/p"},
                  "authoredOn": "2023-01-05"}
    medication = {"resourceType": "Medication", "id": "cisplatin", "code": concept("2555", "http://www.nlm.nih.gov/research/umls/rxnorm")}
    chart = facts_of(medication_request("40048", authored="2023-01-02"), administration, statement, referenced, medication)
    by_source = {f.source: f for f in chart.facts}
    assert set(by_source) == {"MedicationRequest/med-1", "MedicationAdministration/ma1", "MedicationRequest/mr2"}
    assert all(f.kind is FactKind.MEDICATION for f in chart.facts)
    assert by_source["MedicationRequest/med-1"].date == date(2023, 1, 2)
    assert by_source["MedicationAdministration/ma1"].date == date(2023, 2, 1)
    assert [c.code for c in by_source["MedicationRequest/mr2"].codes] == ["2555"]


# =============================================================================================
# Observations


def test_tumour_marker_observation():
    fact = only_fact(scc_antigen("scc-1", 2.4, "2024-05-02T08:15:00+02:00"))
    assert fact.kind is FactKind.OBSERVATION
    assert code_pairs(fact) == {(LOINC, "9679-2")}
    assert (fact.value, fact.unit, fact.reference_high, fact.date) == (2.4, "ng/mL", 1.5, date(2024, 5, 2))
    assert fact.status == "final" and fact.profiles == (MCODE_TUMOR_MARKER,)


def test_tumour_marker_without_profile_is_the_same_fact():
    with_profile = only_fact(scc_antigen("scc-1", 2.4, "2024-05-02"))
    without = only_fact(scc_antigen("scc-1", 2.4, "2024-05-02", profile=None))
    assert without.profiles == () and without.codes == with_profile.codes and without.value == with_profile.value


def test_cancer_disease_status_is_an_observation_with_value_codes():
    fact = only_fact(cancer_disease_status("271299001"))
    assert code_pairs(fact) == {(LOINC, "97509-4")}
    assert [c.code for c in fact.value_codes] == ["271299001"]
    assert fact.value is None and fact.profiles == (MCODE_DISEASE_STATUS,)


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_void_observations_are_skipped(status):
    assert facts_of(observation("2039-6", value=3.0, status=status)).facts == ()


def test_observation_date_falls_back_to_issued_and_unit_to_code():
    resource = observation("2039-6", issued="2024-02-03T10:00:00Z")
    resource["valueQuantity"] = {"value": 4, "system": "http://unitsofmeasure.org", "code": "ng/mL"}
    fact = only_fact(resource)
    assert (fact.date, fact.value, fact.unit) == (date(2024, 2, 3), 4.0, "ng/mL")


@pytest.mark.parametrize("quantity", [{"value": "4.2"}, {"value": True}, {"value": None}, "4.2", [4.2],
                                      {"value": float("nan")}, {"value": 10 ** 400}])
def test_observation_bad_values_degrade_to_none(quantity):
    resource = observation("2039-6", effective="2024-01-01")
    resource["valueQuantity"] = quantity
    chart = facts_of(resource)
    assert chart.facts[0].value is None and chart.skipped_resources == 0


# =============================================================================================
# Devices and allergies


def test_device_and_device_use_statement():
    chart = facts_of(device("14106009", display="Cardiac pacemaker", id="pm"),
                     device_use_statement("pm", id="use-1", timing="2019-03-02"),
                     device_use_statement("not-in-prefetch", id="use-2"))
    by_source = {f.source: f for f in chart.facts}
    assert set(by_source) == {"Device/pm", "DeviceUseStatement/use-1"}
    assert all(f.kind is FactKind.DEVICE for f in chart.facts)
    assert [c.code for c in by_source["DeviceUseStatement/use-1"].codes] == ["14106009"]
    assert by_source["DeviceUseStatement/use-1"].date == date(2019, 3, 2)


def test_device_use_statement_with_r5_concept():
    resource = device_use_statement("x")
    resource["device"] = {"concept": concept("14106009")}
    assert code_pairs(only_fact(resource)) == {(SNOMED, "14106009")}


MR_CONDITIONAL = {"coding": [{"system": "urn:oid:2.16.840.1.113883.3.26.1.1", "code": "C106046",
                               "display": "Magnetic Resonance Conditional"}]}  # FHIR R4 device-safety value set


def test_device_safety_is_read_from_the_device_and_through_its_use_statement():
    labelled = device("14106009", id="pm")
    labelled["safety"] = [MR_CONDITIONAL, {"text": "no coding"}]
    chart = facts_of(labelled, device_use_statement("pm", id="use-1"), device("72506001", id="icd"))
    by_source = {f.source: f for f in chart.facts}
    for source in ("Device/pm", "DeviceUseStatement/use-1"):
        assert [(c.system, c.code) for c in by_source[source].safety_codes] == [
            ("urn:oid:2.16.840.1.113883.3.26.1.1", "C106046")]
    assert by_source["Device/icd"].safety_codes == ()  # nothing recorded: no labelling claimed


@pytest.mark.parametrize("status", ["inactive", "entered-in-error"])
def test_inactive_devices_are_skipped(status):
    assert facts_of(device("14106009", status=status)).facts == ()


@pytest.mark.parametrize("clinical, verification, kept", [
    ("active", "confirmed", True),
    ("active", "unconfirmed", True),
    ("resolved", "confirmed", False),
    ("inactive", "confirmed", False),
    ("active", "refuted", False),
    ("active", "entered-in-error", False),
])
def test_allergies(clinical, verification, kept):
    chart = facts_of(allergy("293637006", display="Allergy to iodinated contrast", clinical_status=clinical,
                             verification=verification, recorded="2015"))
    assert bool(chart.facts) is kept
    if kept:
        assert chart.facts[0].kind is FactKind.ALLERGY and chart.facts[0].date == date(2015, 1, 1)


# =============================================================================================
# Imaging and findings


def test_imaging_study():
    fact = only_fact(imaging_study(started="2024-01-10T14:00:00-05:00", modality="MR",
                                   procedure_code=concept("72197", CPT)))
    assert fact.kind is FactKind.IMAGING and fact.date == date(2024, 1, 10)
    assert code_pairs(fact) == {(CPT, "72197"), ("http://dicom.nema.org/resources/ontology/DCM", "MR")}


def test_radiology_report_with_conclusion_codes_gives_imaging_and_findings():
    report = diagnostic_report("24627-2", effective="2024-03-05", category=RADIOLOGY_CATEGORY,
                               conclusion_codes=[concept("94381002", display="Secondary malignant neoplasm of liver"),
                                                 concept("C78.7", ICD10CM)])
    chart = facts_of(report)
    kinds = [f.kind for f in chart.facts]
    assert kinds == [FactKind.IMAGING, FactKind.FINDING, FactKind.FINDING]
    assert {f.source for f in chart.facts} == {"DiagnosticReport/dr-1"}
    assert {f.date for f in chart.facts} == {date(2024, 3, 5)}
    assert chart.facts[1].text == "Secondary malignant neoplasm of liver"
    assert (LOINC, "LP29684-5") in code_pairs(chart.facts[0])


@pytest.mark.parametrize("category, imaging", [
    (None, True),                                                                     # not clearly lab
    (RADIOLOGY_CATEGORY, True),
    ({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}, True),
    ({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "CT"}]}, True),
    (LAB_CATEGORY, False),
    ({"coding": [{"system": LOINC, "code": "LP7839-6", "display": "Pathology"}]}, False),
    ({"coding": [{"system": "http://example.org/local", "code": "XYZ"}]}, True),
])
def test_report_kind_from_category(category, imaging):
    chart = facts_of(diagnostic_report("24627-2", issued="2024-03-06T10:00:00Z", category=category,
                                       conclusion_codes=[concept("1234")]))
    assert (FactKind.IMAGING in [f.kind for f in chart.facts]) is imaging
    assert [f.kind for f in chart.facts].count(FactKind.FINDING) == 1   # findings in any case
    assert {f.date for f in chart.facts} == {date(2024, 3, 6)}


def test_completed_service_request_is_prior_imaging():
    done = service_request("74177", id="prior-ct", status="completed", occurrence="2024-02-01T10:00:00Z",
                           authored="2024-01-20")
    active = service_request("71250", id="pending", status="active")
    fact = only_fact(done, active)
    assert (fact.kind, fact.source, fact.date, fact.status) == (FactKind.IMAGING, "ServiceRequest/prior-ct",
                                                                date(2024, 2, 1), "completed")
    assert only_fact(service_request("74177", id="x", status="completed", authored="2024-01-20")).date == date(2024, 1, 20)


def test_the_order_being_rated_is_not_its_own_prior_imaging():
    resource = service_request(status="completed", occurrence="2024-05-01")
    [order], _ = read_draft_orders(draft_orders(resource), None)
    chart = extract_chart_facts({"imaging": bundle(resource)}, order, TODAY)
    assert chart.of_kind(FactKind.IMAGING) == ()


def test_completed_laboratory_service_request_is_not_imaging():
    resource = service_request("2039-6", LOINC, id="lab", status="completed", occurrence="2024-01-01")
    resource["category"] = [concept("108252007", display="Laboratory procedure")]
    assert facts_of(resource).facts == ()


def test_patient_and_encounter_give_no_facts():
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
                 "reasonCode": [concept("C53.9", ICD10CM)]}
    assert facts_of(patient(), encounter).facts == ()


# =============================================================================================
# Relevance filter (the caller says which codes matter; the chart layer only applies it)


def test_relevance_filter_drops_facts_without_a_relevant_code_and_keeps_order_reasons():
    relevant = {(LOINC, "2039-6"), (SNOMED, "94381002"), (CPT, "74177")}
    report = diagnostic_report("74177", CPT, effective="2024-03-05", category=RADIOLOGY_CATEGORY,
                               conclusion_codes=[concept("94381002"), concept("1234")])
    resources = (observation("718-7", id="hb", value=13.1, effective="2024-05-01"),
                 observation("2039-6", id="cea", value=4.2, effective="2024-05-01"),
                 condition("38341003", id="htn"), report)
    [order], _ = read_draft_orders(draft_orders(service_request(reasons=[("30473006", "Pain in pelvis")])), None)
    chart = extract_chart_facts({"chart": bundle(*resources)}, order, TODAY,
                                is_relevant=lambda system, code: (system, code) in relevant)
    assert [(f.kind, f.source) for f in chart.facts] == [
        (FactKind.OBSERVATION, "Observation/cea"),
        (FactKind.IMAGING, "DiagnosticReport/dr-1"),
        (FactKind.FINDING, "DiagnosticReport/dr-1"),          # the unknown conclusion code is dropped
        (FactKind.ORDER_REASON, "ServiceRequest.reasonCode"),
    ]
    # Kept facts are read in full, exactly as without the filter.
    unfiltered = extract_chart_facts({"chart": bundle(*resources)}, order, TODAY)
    assert chart.facts[0] == next(f for f in unfiltered.facts if f.source == "Observation/cea")


def test_relevance_filter_still_counts_malformed_resources():
    broken = observation("718-7", id="bad")
    broken["code"] = "718-7"
    chart = extract_chart_facts({"chart": bundle(broken)}, None, TODAY, is_relevant=lambda system, code: False)
    assert chart.facts == () and chart.skipped_resources == 1


# =============================================================================================
# Order reasons


def test_order_reasons_become_facts_dated_today():
    [order], _ = read_draft_orders(draft_orders(service_request(reasons=[("30473006", "Pain in pelvis"),
                                                                         ("396152005", "Raised PSA")])), None)
    chart = extract_chart_facts(None, order, TODAY)
    assert [f.kind for f in chart.facts] == [FactKind.ORDER_REASON] * 2
    assert {f.date for f in chart.facts} == {TODAY}
    assert {f.source for f in chart.facts} == {"ServiceRequest.reasonCode"}
    assert chart.facts[0].text == "Pain in pelvis"


def test_order_without_reasons_adds_nothing():
    [order], _ = read_draft_orders(draft_orders(service_request(code=None)), None)
    assert extract_chart_facts({}, order, TODAY).facts == ()


# =============================================================================================
# Prefetch shapes


def test_no_prefetch_at_all():
    chart = extract_chart_facts(None, None, TODAY)
    assert (chart.facts, chart.missing, chart.skipped_resources, chart.today) == ((), (), 0, TODAY)


def test_null_keys_are_missing_and_empty_results_are_not():
    chart = extract_chart_facts({"conditions": None, "observations": bundle(), "procedures": []}, None, TODAY)
    assert chart.missing == ("conditions",)


def test_operation_outcome_instead_of_bundle():
    chart = extract_chart_facts({"conditions": operation_outcome(), "procedures": bundle(procedure("116140006"))},
                                None, TODAY)
    assert chart.missing == ("conditions",)
    assert chart.operation_outcomes == 1
    assert len(chart.facts) == 1


def test_search_outcome_entry_with_warning_is_counted_not_missing():
    chart = extract_chart_facts(
        {"conditions": bundle(condition("C53.9", ICD10CM), outcomes=[operation_outcome("warning", "_count capped")])},
        None, TODAY)
    assert (len(chart.facts), chart.operation_outcomes, chart.missing, chart.skipped_resources) == (1, 1, (), 0)


def test_search_outcome_entry_with_error_marks_key_missing_but_keeps_data():
    chart = extract_chart_facts({"conditions": bundle(condition("C53.9", ICD10CM), outcomes=[operation_outcome()])},
                                None, TODAY)
    assert (len(chart.facts), chart.operation_outcomes, chart.missing) == (1, 1, ("conditions",))


def test_same_resource_under_two_keys_is_read_once():
    shared = condition("C53.9", ICD10CM, id="c1")
    chart = extract_chart_facts({"problems": bundle(shared), "cancer": bundle(copy.deepcopy(shared)),
                                 "one": shared}, None, TODAY)
    assert len(chart.facts) == 1


def test_values_may_be_resources_lists_and_nested_bundles():
    chart = extract_chart_facts({
        "condition": condition("C53.9", ICD10CM, id="c1"),
        "list": [procedure("116140006", id="p1"), bundle(scc_antigen("o1", 1, "2024-01-01"))],
        "nested": bundle(bundle(scc_antigen("o2", 1, "2024-02-01")), type="collection"),
    }, None, TODAY)
    assert {f.source for f in chart.facts} == {"Condition/c1", "Procedure/p1", "Observation/o1", "Observation/o2"}
    assert chart.missing == ()


@pytest.mark.parametrize("value", ["123", 5, True, {"no": "resourceType"}, {"resourceType": "Bundle", "entry": {}}])
def test_unusable_values_are_missing(value):
    chart = extract_chart_facts({"user": value}, None, TODAY)
    assert chart.missing == ("user",) and chart.facts == ()


def test_resources_without_id_use_full_url_as_source():
    resource = condition("C53.9", ICD10CM, id=None)
    chart = extract_chart_facts({"k": {"resourceType": "Bundle", "entry": [
        {"fullUrl": "urn:uuid:abc", "resource": resource}]}}, None, TODAY)
    assert chart.facts[0].source == "urn:uuid:abc"
    chart = extract_chart_facts({"k": resource}, None, TODAY)
    assert chart.facts[0].source == "Condition"


def test_prefetch_not_a_mapping():
    assert extract_chart_facts(["x"], None, TODAY).facts == ()  # type: ignore[arg-type]


# =============================================================================================
# Hostile input: never raises, malformed resources are counted


_JUNK_VALUES = ["", "x", 0, -1.5, True, None, [], {}, [None], [[[[]]]], {"resourceType": None},
                {"resourceType": 7}, {"resourceType": "Bundle", "entry": [1, "two", None, [], {}]},
                {"resourceType": "Bundle", "entry": [{"resource": "Condition/1"}, {"resource": []}]},
                {"resourceType": "OperationOutcome", "issue": "bad"},
                {"resourceType": "Bundle", "entry": [{"search": {"mode": "outcome"}}]}]


@pytest.mark.parametrize("value", _JUNK_VALUES)
def test_junk_prefetch_values_never_raise(value):
    chart = extract_chart_facts({"k": value, "also": [value, value]}, None, TODAY)
    assert chart.facts == ()


_MALFORMED_RESOURCES = [
    {"resourceType": "Condition", "id": "c", "code": "C53.9"},
    {"resourceType": "Condition", "id": "c", "code": {"coding": {"system": ICD10CM, "code": "C53.9"}}},
    {"resourceType": "Procedure", "id": "p", "code": ["x"]},
    {"resourceType": "Observation", "id": "o", "code": 9679},
    {"resourceType": "DiagnosticReport", "id": "d", "code": "CT"},
    {"resourceType": "MedicationRequest", "id": "m", "medicationCodeableConcept": "cisplatin"},
    {"resourceType": "Device", "id": "dv", "type": [concept("14106009")]},
    {"resourceType": "AllergyIntolerance", "id": "a", "code": "contrast"},
    {"resourceType": "ServiceRequest", "id": "s", "status": "completed", "code": "CT"},
]


@pytest.mark.parametrize("resource", _MALFORMED_RESOURCES, ids=lambda r: r["resourceType"])
def test_malformed_resources_are_skipped_and_counted(resource):
    chart = facts_of(resource, scc_antigen("ok", 1.0, "2024-01-01"))
    assert [f.source for f in chart.facts] == ["Observation/ok"]
    assert chart.skipped_resources == 1


def _wrong_everywhere(resource: dict) -> dict:
    """Keep the code, replace every other element by junk of a wrong type."""
    junk = [5, "x", [None], {"a": {"b": [1]}}, True, 1e308, [[["deep"]]]]
    return {key: (value if key in ("resourceType", "id", "code", "medicationCodeableConcept", "type")
                  else junk[i % len(junk)]) for i, (key, value) in enumerate(resource.items())} | {
        "meta": "profile", "onsetPeriod": 3, "performedPeriod": [1], "effectivePeriod": "2024",
        "valueQuantity": [1], "referenceRange": [None], "bodySite": "pelvis", "conclusionCode": {"x": 1},
        "modality": "CT", "series": [1, {"modality": 5}], "procedureCode": "72197", "category": 5,
        "device": "Device/1", "medicationReference": "Medication/1", "clinicalStatus": [1],
        "verificationStatus": 3, "status": ["final"], "effectiveDateTime": 20240101, "issued": {"a": 1}}


@pytest.mark.parametrize("resource", [
    condition("C53.9", ICD10CM, onset="2024-01-01"), procedure("116140006", performed="2024"),
    scc_antigen("o", 1.0, "2024-01-01"), diagnostic_report("24627-2", conclusion_codes=[concept("1")]),
    imaging_study(procedure_code=concept("72197", CPT)), device("14106009"), device_use_statement("helper"),
    allergy("293637006"), medication_request("40048"), service_request(status="completed"),
], ids=lambda r: r["resourceType"])
def test_wrong_types_in_other_elements_degrade(resource):
    chart = facts_of(_wrong_everywhere(resource), device("14106009", id="helper"))
    for fact in chart.facts:
        if fact.source == "Device/helper":
            continue
        assert fact.date is None and fact.value is None and fact.profiles == () and fact.body_site_codes == ()


def test_deeply_nested_junk_never_raises():
    deep: object = "bottom"
    for _ in range(500):
        deep = [deep, {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": deep}}]}]
    nested_bundle: dict = {"resourceType": "Bundle", "entry": []}
    for _ in range(200):
        nested_bundle = {"resourceType": "Bundle", "entry": [{"resource": nested_bundle}]}
    resource = condition("C53.9", ICD10CM)
    resource["code"]["coding"][0]["system"] = deep
    chart = extract_chart_facts({"a": deep, "b": nested_bundle, "c": resource}, None, TODAY)
    assert chart.facts == ()


def test_ten_thousand_junk_entries():
    junk = [None, 1, "x", [], {}, {"resource": None}, {"resource": {"resourceType": "Observation", "code": "x"}},
            {"resource": {"resourceType": "Condition", "id": 5, "code": {"coding": [None, 1, {"system": 1}]}}},
            {"resource": {"resourceType": "Observation", "code": concept("1", LOINC), "valueQuantity": "NaN"}},
            {"search": {"mode": "outcome"}}]
    entries = [copy.deepcopy(junk[i % len(junk)]) for i in range(10_000)]  # distinct objects, as from JSON
    chart = extract_chart_facts({"junk": {"resourceType": "Bundle", "entry": entries}}, None, TODAY)
    assert chart.skipped_resources == 7_000  # 6 junk entry kinds + the Observation whose code is a string
    assert chart.operation_outcomes == 1_000
    # The last junk kind is a valid (if odd) Observation without id: one fact per entry.
    assert len(chart.facts) == 1_000 and all(f.value is None for f in chart.facts)


def test_every_fact_has_codes_and_a_source():
    chart = extract_chart_facts({"chart": load_synthetic_chart().synthetic_chart_bundle(today=TODAY)}, None, TODAY)
    assert chart.skipped_resources == 0 and len(chart.facts) > 250
    assert all(f.codes and f.source for f in chart.facts)


# =============================================================================================
# Tumour-marker trend


def is_scc(fact: ClinicalFact) -> bool:
    return any(c.system == LOINC and c.code == "9679-2" for c in fact.codes)


def trend_of(*series: tuple[str, float | None] | tuple[str, float | None, str | None, float | None],
             today: date = TODAY, **kwargs):
    """series items: (date, value) or (date, value, unit, reference_high)."""
    resources = []
    for i, item in enumerate(series):
        when, value, unit, high = (*item, "ng/mL", 1.5)[:4] if len(item) == 2 else item
        resources.append(scc_antigen(f"scc-{i}", value, when, unit=unit, high=high))
    resources.append(observation("2039-6", id="cea", value=50.0, unit="ng/mL", effective="2024-05-30"))  # other marker
    return extract_tumour_marker_trend(facts_of(*resources).facts, is_scc, today, **kwargs)


@pytest.mark.parametrize("series, direction", [
    # rising: +20 % over previous, above nadir, above the reference high (1.5)
    ([("2023-09-01", 0.8), ("2024-01-10", 1.4), ("2024-05-20", 2.1)], "rising"),
    # exactly +20 % counts (inclusive)
    ([("2024-01-01", 10.0), ("2024-05-01", 12.0)], "rising"),
    # +19 % is stable
    ([("2024-01-01", 10.0), ("2024-05-01", 11.9)], "stable"),
    # a rise within the reference range is not "rising"
    ([("2024-01-01", 0.5), ("2024-05-01", 1.2)], "stable"),
    # no reference range: the relative rise decides
    ([("2024-01-01", 0.5, "ng/mL", None), ("2024-05-01", 1.2, "ng/mL", None)], "rising"),
    # falling by ≥ 20 %
    ([("2024-01-01", 4.0), ("2024-03-01", 3.0)], "falling"),
    ([("2024-01-01", 4.0), ("2024-03-01", 3.5)], "stable"),
    # from zero: any rise is relative-infinite
    ([("2024-01-01", 0.0, "ng/mL", None), ("2024-03-01", 0.1, "ng/mL", None)], "rising"),
    ([("2024-01-01", 0.0), ("2024-03-01", 0.0)], "stable"),
    # fewer than two usable points
    ([], "insufficient-data"),
    ([("2024-05-01", 3.0)], "insufficient-data"),
    ([("2024-05-01", 3.0), ("2024-05-02", None)], "insufficient-data"),
    # outside the window (365 days before 2024-06-01) and in the future are ignored
    ([("2023-05-01", 0.5), ("2024-05-01", 3.0)], "insufficient-data"),
    ([("2024-05-01", 1.0), ("2024-07-01", 3.0)], "insufficient-data"),
])
def test_marker_trend(series, direction):
    assert trend_of(*series).direction == direction


def test_marker_trend_points_are_oldest_first_and_only_the_marker():
    trend = trend_of(("2024-05-20", 2.1), ("2023-09-01", 0.8), ("2024-01-10", 1.4))
    assert [p.date for p in trend.points] == [date(2023, 9, 1), date(2024, 1, 10), date(2024, 5, 20)]
    assert all(is_scc(p) for p in trend.points)


def test_marker_trend_ignores_points_in_another_unit():
    # The 0.5 U/mL point would make 2.0 ng/mL a rise; compared with 1.9 ng/mL it is stable.
    trend = trend_of(("2024-01-01", 1.9, "ng/mL", 1.5), ("2024-03-01", 0.5, "U/mL", 1.5), ("2024-05-01", 2.0, "ng/mL", 1.5))
    assert trend.direction == "stable"
    assert [p.value for p in trend.points] == [1.9, 2.0]


def test_marker_trend_unit_case_and_missing_units_are_compatible():
    trend = trend_of(("2024-01-01", 1.0, "NG/ML", None), ("2024-03-01", 1.1, None, None), ("2024-05-01", 2.0, "ng/mL", None))
    assert trend.direction == "rising" and len(trend.points) == 3


def test_marker_trend_latest_without_unit_uses_most_recent_unit():
    trend = trend_of(("2024-01-01", 1.0, "U/mL", None), ("2024-03-01", 1.0, "ng/mL", None), ("2024-05-01", 2.0, None, None))
    assert [p.date for p in trend.points] == [date(2024, 3, 1), date(2024, 5, 1)]


def test_marker_trend_same_date_keeps_the_later_listed():
    trend = trend_of(("2024-01-01", 1.0), ("2024-05-01", 5.0), ("2024-05-01", 1.1))
    assert trend.direction == "stable"
    assert [p.value for p in trend.points] == [1.0, 1.1]


def test_marker_trend_window_and_fraction_are_parameters():
    series = [("2023-01-01", 1.0, "ng/mL", None), ("2024-05-01", 1.1, "ng/mL", None)]
    assert trend_of(*series).direction == "insufficient-data"
    assert trend_of(*series, window_days=730, min_rise_fraction=0.05).direction == "rising"


def test_marker_trend_uses_the_latest_reference_high():
    trend = trend_of(("2024-01-01", 1.0, "ng/mL", 5.0), ("2024-05-01", 2.0, "ng/mL", 1.5))
    assert trend.direction == "rising"


