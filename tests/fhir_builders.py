"""Small builders for FHIR R4 JSON (plain dicts) shaped like US Core / mCODE, for tests and fixtures.

Each builder returns a fresh dict, fills only what a real EHR would send, and takes keyword
arguments for the parts a test cares about. Dates are FHIR strings ("2024-05-17",
"2024-05-17T10:00:00+02:00", partial "2024-05"); pass ``None`` to leave an element out.

    >>> bundle(condition("C53.9", ICD10CM, id="c1", onset="2023-02-01"),
    ...        scc_antigen("o1", 2.4, "2024-05-01"))
"""

from __future__ import annotations

from typing import Any, Iterable

CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/"
US_CORE_CONDITION = US_CORE + "us-core-condition-problems-health-concerns"
US_CORE_PROCEDURE = US_CORE + "us-core-procedure"
US_CORE_LAB = US_CORE + "us-core-observation-lab"
US_CORE_REPORT_IMAGING = US_CORE + "us-core-diagnosticreport-note"
MCODE_PRIMARY_CANCER = MCODE + "mcode-primary-cancer-condition"
MCODE_SECONDARY_CANCER = MCODE + "mcode-secondary-cancer-condition"
MCODE_DISEASE_STATUS = MCODE + "mcode-cancer-disease-status"
MCODE_TUMOR_MARKER = MCODE + "mcode-tumor-marker-test"
MCODE_RADIOTHERAPY_SUMMARY = MCODE + "mcode-radiotherapy-course-summary"

PATIENT_ID = "pat-onc-1"


# ---------------------------------------------------------------------------------------------
# Data types


def coding(code: str, system: str = SNOMED, display: str | None = None) -> dict:
    result = {"system": system, "code": code}
    if display is not None:
        result["display"] = display
    return result


def concept(code: str, system: str = SNOMED, display: str | None = None, text: str | None = None) -> dict:
    result: dict[str, Any] = {"coding": [coding(code, system, display)]}
    if text is not None:
        result["text"] = text
    return result


def _status(code: str, system: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def _base(resource_type: str, id: str | None, profile: str | Iterable[str] | None) -> dict:
    resource: dict[str, Any] = {"resourceType": resource_type}
    if id is not None:
        resource["id"] = id
    if profile is not None:
        resource["meta"] = {"profile": [profile] if isinstance(profile, str) else list(profile)}
    return resource


def _subject(patient_id: str) -> dict:
    return {"reference": f"Patient/{patient_id}"}


# ---------------------------------------------------------------------------------------------
# Clinical resources


def patient(id: str = PATIENT_ID) -> dict:
    return {"resourceType": "Patient", "id": id, "name": [{"family": "Test", "given": ["Pat"]}],
            "gender": "female", "birthDate": "1968-04-02"}


def condition(code: str, system: str = SNOMED, *, id: str | None = "cond-1", display: str | None = None,
              onset: str | None = None, recorded: str | None = None, clinical_status: str | None = "active",
              verification: str | None = "confirmed", body_site: dict | None = None,
              profile: str | Iterable[str] | None = None, patient_id: str = PATIENT_ID) -> dict:
    resource = _base("Condition", id, profile)
    if clinical_status is not None:
        resource["clinicalStatus"] = _status(clinical_status, CONDITION_CLINICAL)
    if verification is not None:
        resource["verificationStatus"] = _status(verification, CONDITION_VERIFICATION)
    resource["category"] = [concept("problem-list-item",
                                    "http://terminology.hl7.org/CodeSystem/condition-category")]
    resource["code"] = concept(code, system, display)
    if body_site is not None:
        resource["bodySite"] = [body_site]
    resource["subject"] = _subject(patient_id)
    if onset is not None:
        resource["onsetDateTime"] = onset
    if recorded is not None:
        resource["recordedDate"] = recorded
    return resource


def procedure(code: str, system: str = SNOMED, *, id: str | None = "proc-1", display: str | None = None,
              performed: str | None = None, period: tuple[str | None, str | None] | None = None,
              status: str = "completed", body_site: dict | None = None,
              profile: str | Iterable[str] | None = None, patient_id: str = PATIENT_ID) -> dict:
    resource = _base("Procedure", id, profile)
    resource["status"] = status
    resource["code"] = concept(code, system, display)
    resource["subject"] = _subject(patient_id)
    if performed is not None:
        resource["performedDateTime"] = performed
    if period is not None:
        resource["performedPeriod"] = {k: v for k, v in (("start", period[0]), ("end", period[1])) if v}
    if body_site is not None:
        resource["bodySite"] = [body_site]
    return resource


def radiotherapy_course_summary(*, id: str = "rt-1", start: str | None = "2023-03-01",
                                end: str | None = "2023-04-12", status: str = "completed",
                                patient_id: str = PATIENT_ID) -> dict:
    """mCODE RadiotherapyCourseSummary: SNOMED 1217123003, performedPeriod only, mCODE extensions."""
    resource = procedure("1217123003", SNOMED, id=id, display="Radiotherapy course of treatment (regime/therapy)",
                         period=(start, end), status=status, profile=MCODE_RADIOTHERAPY_SUMMARY,
                         patient_id=patient_id)
    resource["extension"] = [
        {"url": MCODE + "mcode-procedure-intent", "valueCodeableConcept": concept("373808002", display="Curative")},
        {"url": MCODE + "mcode-radiotherapy-sessions", "valueUnsignedInt": 28},
    ]
    return resource


def observation(code: str, system: str = LOINC, *, id: str | None = "obs-1", display: str | None = None,
                value: float | None = None, unit: str | None = None, effective: str | None = None,
                issued: str | None = None, high: float | None = None, status: str = "final",
                value_code: dict | None = None, category: str = "laboratory",
                profile: str | Iterable[str] | None = None, patient_id: str = PATIENT_ID) -> dict:
    resource = _base("Observation", id, profile)
    resource["status"] = status
    resource["category"] = [concept(category, OBSERVATION_CATEGORY)]
    resource["code"] = concept(code, system, display)
    resource["subject"] = _subject(patient_id)
    if effective is not None:
        resource["effectiveDateTime"] = effective
    if issued is not None:
        resource["issued"] = issued
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity.update(unit=unit, system=UCUM, code=unit)
        resource["valueQuantity"] = quantity
    if value_code is not None:
        resource["valueCodeableConcept"] = value_code
    if high is not None:
        resource["referenceRange"] = [{"high": {"value": high, "unit": unit or "", "system": UCUM, "code": unit or ""}}]
    return resource


def scc_antigen(id: str, value: float | None, effective: str | None, *, unit: str | None = "ng/mL",
                high: float | None = 1.5, profile: str | Iterable[str] | None = MCODE_TUMOR_MARKER) -> dict:
    """Squamous cell carcinoma antigen (LOINC 9679-2), an mCODE TumorMarkerTest."""
    return observation("9679-2", LOINC, id=id, display="Squamous cell carcinoma Ag [Mass/volume] in Serum or Plasma",
                       value=value, unit=unit, effective=effective, high=high, profile=profile)


def cancer_disease_status(trend_code: str, *, id: str = "cds-1", effective: str | None = "2024-05-01",
                          patient_id: str = PATIENT_ID) -> dict:
    """mCODE CancerDiseaseStatus (LOINC 97509-4) with a condition-status-trend value."""
    resource = observation("97509-4", LOINC, id=id, display="Cancer disease status", effective=effective,
                           value_code=concept(trend_code, SNOMED), category="survey",
                           profile=MCODE_DISEASE_STATUS, patient_id=patient_id)
    resource["focus"] = [{"reference": "Condition/primary-1"}]
    return resource


def diagnostic_report(code: str, system: str = LOINC, *, id: str | None = "dr-1", display: str | None = None,
                      effective: str | None = None, issued: str | None = None, category: dict | None = None,
                      conclusion_codes: Iterable[dict] = (), status: str = "final",
                      profile: str | Iterable[str] | None = None, patient_id: str = PATIENT_ID) -> dict:
    resource = _base("DiagnosticReport", id, profile)
    resource["status"] = status
    if category is not None:
        resource["category"] = [category]
    resource["code"] = concept(code, system, display)
    resource["subject"] = _subject(patient_id)
    if effective is not None:
        resource["effectiveDateTime"] = effective
    if issued is not None:
        resource["issued"] = issued
    conclusions = list(conclusion_codes)
    if conclusions:
        resource["conclusionCode"] = conclusions
    return resource


RADIOLOGY_CATEGORY = {"coding": [{"system": LOINC, "code": "LP29684-5", "display": "Radiology"}]}
LAB_CATEGORY = {"coding": [{"system": V2_0074, "code": "LAB"}]}


def imaging_study(*, id: str | None = "is-1", started: str | None = "2024-01-10", modality: str = "CT",
                  procedure_code: dict | None = None, status: str = "available",
                  patient_id: str = PATIENT_ID) -> dict:
    resource = _base("ImagingStudy", id, None)
    resource["status"] = status
    resource["subject"] = _subject(patient_id)
    if started is not None:
        resource["started"] = started
    resource["modality"] = [coding(modality, DICOM)]
    if procedure_code is not None:
        resource["procedureCode"] = [procedure_code]
    return resource


def device(code: str, system: str = SNOMED, *, id: str | None = "dev-1", display: str | None = None,
           status: str = "active", patient_id: str = PATIENT_ID) -> dict:
    resource = _base("Device", id, US_CORE + "us-core-implantable-device")
    resource["status"] = status
    resource["type"] = concept(code, system, display)
    resource["patient"] = _subject(patient_id)
    return resource


def device_use_statement(device_id: str, *, id: str | None = "dus-1", status: str = "active",
                         timing: str | None = None, patient_id: str = PATIENT_ID) -> dict:
    resource = _base("DeviceUseStatement", id, None)
    resource["status"] = status
    resource["subject"] = _subject(patient_id)
    resource["device"] = {"reference": f"Device/{device_id}"}
    if timing is not None:
        resource["timingDateTime"] = timing
    return resource


def allergy(code: str, system: str = SNOMED, *, id: str | None = "alg-1", display: str | None = None,
            clinical_status: str | None = "active", verification: str | None = "confirmed",
            recorded: str | None = None, patient_id: str = PATIENT_ID) -> dict:
    resource = _base("AllergyIntolerance", id, US_CORE + "us-core-allergyintolerance")
    if clinical_status is not None:
        resource["clinicalStatus"] = _status(clinical_status, ALLERGY_CLINICAL)
    if verification is not None:
        resource["verificationStatus"] = _status(verification, ALLERGY_VERIFICATION)
    resource["code"] = concept(code, system, display)
    resource["patient"] = _subject(patient_id)
    if recorded is not None:
        resource["recordedDate"] = recorded
    return resource


def medication_request(code: str, system: str = "http://www.nlm.nih.gov/research/umls/rxnorm", *,
                       id: str | None = "med-1", display: str | None = None, authored: str | None = None,
                       status: str = "active", intent: str = "order", patient_id: str = PATIENT_ID) -> dict:
    resource = _base("MedicationRequest", id, None)
    resource.update(status=status, intent=intent, medicationCodeableConcept=concept(code, system, display),
                    subject=_subject(patient_id))
    if authored is not None:
        resource["authoredOn"] = authored
    return resource


# ---------------------------------------------------------------------------------------------
# Orders, Bundles and hook requests


def service_request(code: str | None = "70450", system: str = CPT, *, id: str | None = "example-request-id",
                    display: str | None = "Computed tomography, head or brain; without contrast material",
                    reasons: Iterable[tuple[str, str] | dict] = (), status: str = "draft", intent: str = "plan",
                    occurrence: str | None = None, authored: str | None = None,
                    patient_id: str = PATIENT_ID) -> dict:
    """A ServiceRequest shaped like the CDS Hooks sandbox's PAMA draft order.

    ``code=None`` gives the sandbox's empty state ``"code": {"coding": [{}]}``. ``reasons`` are
    (code, display) SNOMED pairs, or ready CodeableConcept dicts.
    """
    resource = _base("ServiceRequest", id, None)
    resource.update(status=status, intent=intent)
    if code is None:
        resource["code"] = {"coding": [{}]}
    else:
        resource["code"] = {"coding": [coding(code, system, display)]}
        if display is not None:
            resource["code"]["text"] = display
    resource["subject"] = _subject(patient_id)
    resource["reasonCode"] = [
        r if isinstance(r, dict) else {"coding": [coding(r[0], SNOMED, r[1])], "text": r[1]} for r in reasons
    ]
    if occurrence is not None:
        resource["occurrenceDateTime"] = occurrence
    if authored is not None:
        resource["authoredOn"] = authored
    return resource


def operation_outcome(severity: str = "error", diagnostics: str = "search failed") -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": "processing", "diagnostics": diagnostics}]}


def bundle(*resources: dict, type: str | None = "searchset", outcomes: Iterable[dict] = (),
           base: str = "http://fhir.example.org/r4") -> dict:
    """A Bundle of ``resources`` (search.mode match) plus ``outcomes`` as search.mode outcome entries.

    ``type=None`` leaves ``Bundle.type`` out, as CDS Hooks ``draftOrders`` do.
    """
    result: dict[str, Any] = {"resourceType": "Bundle"}
    if type is not None:
        result["type"] = type
    entries = []
    for resource in resources:
        entry: dict[str, Any] = {"resource": resource}
        if "id" in resource:
            entry["fullUrl"] = f"{base}/{resource['resourceType']}/{resource['id']}"
        if type == "searchset":
            entry["search"] = {"mode": "match"}
        entries.append(entry)
    for outcome in outcomes:
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    if type == "searchset":
        result["total"] = len(resources)
    result["entry"] = entries
    return result


def draft_orders(*resources: dict) -> dict:
    """``context.draftOrders`` as the sandbox sends it: a Bundle without ``type``."""
    return bundle(*resources, type=None)


def hook_request(*orders: dict, hook: str = "order-select", selections: Iterable[str] | None = None,
                 prefetch: dict | None = None, patient_id: str = PATIENT_ID,
                 fhir_server: str | None = None, hook_instance: str = "4e25cb71-6285-4e47-a999-2ecfee210f80") -> dict:
    """A CDS Hooks 2.0 order-select / order-sign request body.

    For order-select, ``selections`` defaults to every order's "ServiceRequest/id"; order-sign
    has no selections. With no ``orders``, the sandbox's default draft order is used.
    """
    orders = orders or (service_request(),)
    context: dict[str, Any] = {"patientId": patient_id, "userId": "Practitioner/COREPRACTITIONER1"}
    if hook == "order-select":
        context["selections"] = list(selections) if selections is not None else [
            f"{o['resourceType']}/{o['id']}" for o in orders if "id" in o]
    context["draftOrders"] = draft_orders(*orders)
    body: dict[str, Any] = {"hookInstance": hook_instance, "hook": hook, "context": context}
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body
