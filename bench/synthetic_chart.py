"""A realistic synthetic oncology chart as one FHIR R4 searchset Bundle (plain dicts), for benchmarks.

Default shape: 1 Patient, 60 Conditions, 180 Observations, 60 Procedures (301 entries), shaped
like US Core / mCODE STU4 (meta.profile on about half, narrative text, identifiers, encounters,
categories, referenceRange), with cervical-cancer follow-up content: an mCODE primary cancer,
history codes, comorbidities, SCC antigen and CEA series, CancerDiseaseStatus, routine labs and
vitals, a RadiotherapyCourseSummary, surgery and chemotherapy procedures. It is deterministic
for a given ``seed`` and ``today``. Entirely synthetic: no real patient data.

    from synthetic_chart import synthetic_chart_bundle     # bench/ on sys.path
    bundle = synthetic_chart_bundle()                       # ~300 entries, ~450 KiB as JSON
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/"
BASE_URL = "http://fhir.example.org/r4"

# (system, code, display) — a cancer-follow-up problem list mixing ICD-10-CM and SNOMED CT.
_CONDITIONS = [
    (ICD10CM, "C53.9", "Malignant neoplasm of cervix uteri, unspecified"),
    (SNOMED, "363354003", "Malignant tumor of cervix"),
    (ICD10CM, "Z85.41", "Personal history of malignant neoplasm of cervix uteri"),
    (ICD10CM, "Z92.3", "Personal history of irradiation"),
    (ICD10CM, "I10", "Essential (primary) hypertension"),
    (SNOMED, "38341003", "Hypertensive disorder"),
    (ICD10CM, "E11.9", "Type 2 diabetes mellitus without complications"),
    (SNOMED, "44054006", "Diabetes mellitus type 2"),
    (ICD10CM, "N18.3", "Chronic kidney disease, stage 3"),
    (ICD10CM, "R10.2", "Pelvic and perineal pain"),
    (SNOMED, "30473006", "Pain in pelvis"),
    (ICD10CM, "E78.5", "Hyperlipidemia, unspecified"),
    (SNOMED, "35489007", "Depressive disorder"),
    (ICD10CM, "K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    (ICD10CM, "M81.0", "Age-related osteoporosis without current pathological fracture"),
    (SNOMED, "195967001", "Asthma"),
    (ICD10CM, "N30.40", "Irradiation cystitis without hematuria"),
    (ICD10CM, "K62.7", "Radiation proctitis"),
    (ICD10CM, "D64.9", "Anemia, unspecified"),
    (SNOMED, "73211009", "Diabetes mellitus"),
]

# (code, display, unit, low, high, reference_high or None)
_LABS = [
    ("9679-2", "Squamous cell carcinoma Ag [Mass/volume] in Serum or Plasma", "ng/mL", 0.3, 3.0, 1.5),
    ("2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma", "ng/mL", 0.5, 6.0, 3.0),
    ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based formula (MDRD)", "mL/min/{1.73_m2}", 35, 95, None),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.6, 1.1),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 9.5, 14.0, 15.5),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3.0, 11.0, 10.5),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 140, 420, 400),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 180, 99),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.2, 8.5, 5.6),
]
_VITALS = [
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 105, 160),
    ("8867-4", "Heart rate", "/min", 55, 100),
    ("29463-7", "Body weight", "kg", 55, 90),
]
_PROCEDURES = [
    (SNOMED, "1217123003", "Radiotherapy course of treatment (regime/therapy)"),
    (SNOMED, "116140006", "Total hysterectomy"),
    (SNOMED, "367336001", "Chemotherapy"),
    (CPT, "57500", "Biopsy of cervix, single or multiple"),
    (SNOMED, "386813002", "Pelvic examination"),
    (CPT, "74177", "CT abdomen and pelvis with contrast"),
    (SNOMED, "241615005", "MRI of pelvis"),
    (SNOMED, "73761001", "Colonoscopy"),
    (CPT, "36561", "Insertion of tunneled centrally inserted central venous access device"),
    (SNOMED, "18286008", "Catheter ablation"),
]


def _narrative(text: str) -> dict:
    # Real EHR resources carry generated narrative; it is most of their size.
    return {"status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Generated Narrative</b></p><p>{text}</p>'
                   f'<table class="grid"><tr><td>Recorded by</td><td>Practitioner COREPRACTITIONER1</td></tr>'
                   f'<tr><td>Source system</td><td>Synthetic EHR export, test data only</td></tr></table></div>'}


def _codeable(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _stamp(day: date, rng: random.Random) -> str:
    return f"{day.isoformat()}T{rng.randint(7, 18):02d}:{rng.randint(0, 59):02d}:00-05:00"


def synthetic_chart_bundle(patient_id: str = "pat-bench-1", *, seed: int = 7, conditions: int = 60,
                           observations: int = 180, procedures: int = 60, today: date | None = None) -> dict:
    """Return a searchset Bundle: 1 Patient + ``conditions`` + ``observations`` + ``procedures``."""
    rng = random.Random(seed)
    today = today or date(2025, 6, 1)
    subject = {"reference": f"Patient/{patient_id}"}
    resources: list[dict[str, Any]] = [{
        "resourceType": "Patient", "id": patient_id,
        "meta": {"profile": [US_CORE + "us-core-patient"], "lastUpdated": "2025-05-30T10:00:00Z"},
        "text": _narrative("Synthetic Patient"),
        "identifier": [{"system": "http://hospital.example.org/mrn", "value": "MRN-000001"}],
        "name": [{"family": "Synthetic", "given": ["Pat"]}], "gender": "female", "birthDate": "1966-03-14",
    }]

    for i in range(conditions):
        system, code, display = _CONDITIONS[i % len(_CONDITIONS)]
        onset = today - timedelta(days=rng.randint(30, 3000))
        primary = code in ("C53.9", "363354003")
        profile = MCODE + "mcode-primary-cancer-condition" if primary else US_CORE + "us-core-condition-problems-health-concerns"
        resource: dict[str, Any] = {
            "resourceType": "Condition", "id": f"cond-{i}",
            "meta": {"lastUpdated": "2025-05-30T10:00:00Z", **({"profile": [profile]} if i % 2 == 0 or primary else {})},
            "text": _narrative(display),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": rng.choice(["active", "active", "resolved", "remission"])}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                               "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item", "display": "Problem List Item"}]}],
            "code": _codeable(system, code, display),
            "subject": subject,
            "encounter": {"reference": f"Encounter/enc-{rng.randint(1, 40)}"},
            "onsetDateTime": _stamp(onset, rng),
            "recordedDate": _stamp(onset + timedelta(days=rng.randint(0, 20)), rng),
        }
        if primary:
            resource["bodySite"] = [_codeable(SNOMED, "71252005", "Cervix uteri structure")]
            resource["extension"] = [{"url": MCODE + "mcode-histology-morphology-behavior",
                                      "valueCodeableConcept": _codeable(SNOMED, "1162767002", "Squamous cell carcinoma")}]
        resources.append(resource)

    for i in range(observations):
        when = today - timedelta(days=rng.randint(1, 900))
        resource = {"resourceType": "Observation", "id": f"obs-{i}", "status": "final", "subject": subject,
                    "effectiveDateTime": _stamp(when, rng), "issued": f"{when.isoformat()}T20:00:00Z"}
        if i % 30 == 29:  # mCODE CancerDiseaseStatus
            resource.update(
                meta={"profile": [MCODE + "mcode-cancer-disease-status"]}, text=_narrative("Cancer disease status"),
                category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                       "code": "survey"}]}],
                code=_codeable(LOINC, "97509-4", "Cancer disease status"),
                focus=[{"reference": "Condition/cond-0"}],
                valueCodeableConcept=_codeable(SNOMED, rng.choice(["359746009", "268910001", "271299001"]),
                                               "Condition status"))
        elif i % 5 == 4:  # vital signs
            code, display, unit, low, high = _VITALS[i % len(_VITALS)]
            resource.update(
                meta={"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]}, text=_narrative(display),
                category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                       "code": "vital-signs"}]}],
                code=_codeable(LOINC, code, display),
                valueQuantity={"value": round(rng.uniform(low, high), 1), "unit": unit, "system": UCUM, "code": unit})
        else:  # laboratory, incl. tumour markers
            code, display, unit, low, high, ref_high = _LABS[i % len(_LABS)]
            marker = code in ("9679-2", "2039-6")
            resource.update(
                meta=({"profile": [MCODE + "mcode-tumor-marker-test" if marker else US_CORE + "us-core-observation-lab"]}
                      if i % 2 == 0 else {"lastUpdated": "2025-05-30T10:00:00Z"}),
                text=_narrative(display),
                category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                       "code": "laboratory", "display": "Laboratory"}]}],
                code=_codeable(LOINC, code, display),
                valueQuantity={"value": round(rng.uniform(low, high), 2), "unit": unit, "system": UCUM, "code": unit},
                interpretation=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                             "code": "N"}]}])
            if ref_high is not None:
                resource["referenceRange"] = [{"high": {"value": ref_high, "unit": unit, "system": UCUM, "code": unit}}]
        resources.append(resource)

    for i in range(procedures):
        system, code, display = _PROCEDURES[i % len(_PROCEDURES)]
        start = today - timedelta(days=rng.randint(30, 2500))
        resource = {"resourceType": "Procedure", "id": f"proc-{i}", "text": _narrative(display),
                    "status": rng.choice(["completed"] * 8 + ["in-progress", "not-done"]),
                    "code": _codeable(system, code, display), "subject": subject,
                    "encounter": {"reference": f"Encounter/enc-{rng.randint(1, 40)}"}}
        if code == "1217123003":
            resource["meta"] = {"profile": [MCODE + "mcode-radiotherapy-course-summary"]}
            resource["performedPeriod"] = {"start": start.isoformat(), "end": (start + timedelta(days=42)).isoformat()}
            resource["extension"] = [
                {"url": MCODE + "mcode-procedure-intent", "valueCodeableConcept": _codeable(SNOMED, "373808002", "Curative")},
                {"url": MCODE + "mcode-radiotherapy-sessions", "valueUnsignedInt": 28}]
        else:
            resource["meta"] = {"profile": [US_CORE + "us-core-procedure"]}
            resource["performedDateTime"] = _stamp(start, rng)
        resources.append(resource)

    return {
        "resourceType": "Bundle", "id": f"bench-{seed}", "type": "searchset", "total": len(resources),
        "link": [{"relation": "self", "url": f"{BASE_URL}/Patient/{patient_id}/$everything"}],
        "entry": [{"fullUrl": f"{BASE_URL}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                  for r in resources],
    }


def synthetic_prefetch(patient_id: str = "pat-bench-1", **kwargs: Any) -> dict:
    """The same chart split the way prefetch templates usually split it (one searchset per type)."""
    whole = synthetic_chart_bundle(patient_id, **kwargs)
    by_type: dict[str, list[dict]] = {}
    for entry in whole["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)
    prefetch: dict[str, Any] = {"patient": by_type.pop("Patient")[0]["resource"]}
    for resource_type, entries in by_type.items():
        key = {"Condition": "conditions", "Observation": "observations", "Procedure": "procedures"}.get(
            resource_type, resource_type.lower())
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return prefetch
