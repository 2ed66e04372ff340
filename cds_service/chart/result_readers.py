"""Readers of results: Observations (labs, markers, stage), imaging studies, diagnostic reports
and completed imaging orders (prior studies)."""

from __future__ import annotations

from typing import Any, Iterable

from cds_service.chart.decoding import FhirObject, ImagingSeries
from cds_service.chart.facts import ClinicalFact, Code, FactKind
from cds_service.chart.fhirjson import codings_of, coding_of, fhir_date, number, period_date, string, text_of
from cds_service.chart.reading import (ReadContext, codes_of_list, focus_codes, main_codes, profiles_of,
                                      without_duplicates)

V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"


LOINC = "http://loinc.org"


SNOMED = "http://snomed.info/sct"


UCUM = "http://unitsofmeasure.org"


#: v2-0074 diagnostic service sections that are imaging (RAD radiology, RX radiograph, CT, NMR,
#: NMS nuclear medicine, RUS/VUS/OUS/CUS ultrasound, XRC cineradiograph, CTH cardiac catheterisation).
_IMAGING_SECTIONS = frozenset({"RAD", "RX", "CT", "NMR", "NMS", "RUS", "VUS", "OUS", "CUS", "XRC", "CTH"})


_LOINC_RADIOLOGY = "LP29684-5"


_LOINC_PATHOLOGY = "LP7839-6"


_SNOMED_LABORATORY_PROCEDURE = "108252007"


def read_observation(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("entered-in-error", "cancelled"):
        return ()
    concept = resource.code
    codes = main_codes(concept)
    if not codes:
        return ()
    when = (fhir_date(resource.effectiveDateTime)
            or fhir_date(resource.effectiveInstant)
            or period_date(resource.effectivePeriod, prefer_end=False)
            or fhir_date(resource.issued))
    value = unit = ucum = None
    quantity = resource.valueQuantity
    if isinstance(quantity, dict):
        value = number(quantity.get("value"))
        unit = string(quantity.get("unit")) or string(quantity.get("code"))
        if quantity.get("system") == UCUM:
            ucum = string(quantity.get("code"))
    else:
        value = number(resource.valueInteger)             # None when absent
    return (ClinicalFact(
        kind=FactKind.OBSERVATION, codes=codes, source=source, date=when, text=text_of(concept),
        status=status, value=value, unit=unit, ucum=ucum,
        value_codes=codings_of(resource.valueCodeableConcept),
        reference_high=_reference_high(resource.referenceRange),
        body_site_codes=codes_of_list(resource.bodySite), profiles=profiles_of(resource),
        reason_codes=focus_codes(focus, context) if (focus := resource.focus) is not None else (),
    ),)


def _reference_high(ranges: Any) -> float | None:
    if not isinstance(ranges, list) or not ranges or not isinstance(ranges[0], dict):
        return None
    high = ranges[0].get("high")
    return number(high.get("value")) if isinstance(high, dict) else None


def read_imaging_study(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("entered-in-error", "cancelled"):
        return ()
    procedure_codes = resource.procedureCode
    codes: list[Code] = list(codes_of_list(procedure_codes))
    modalities = resource.modality
    if isinstance(modalities, list):
        codes.extend(c for c in map(coding_of, modalities) if c is not None)
    series = resource.series
    if isinstance(series, list):
        for one in series:
            if isinstance(one, ImagingSeries):
                modality = coding_of(one.modality)
                if modality is not None:
                    codes.append(modality)
    if not context.keeps(codes):
        return ()
    text = string(resource.description)
    if text is None and isinstance(procedure_codes, list) and procedure_codes:
        text = text_of(procedure_codes[0])
    return (ClinicalFact(
        kind=FactKind.IMAGING, codes=without_duplicates(codes), source=source,
        date=fhir_date(resource.started), text=text, status=status, profiles=profiles_of(resource),
    ),)


def read_diagnostic_report(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("entered-in-error", "cancelled"):
        return ()
    concept = resource.code
    codes = main_codes(concept)
    category_codes = codes_of_list(resource.category)
    when = (fhir_date(resource.effectiveDateTime)
            or period_date(resource.effectivePeriod, prefer_end=False)
            or fhir_date(resource.issued))
    profiles = profiles_of(resource)
    facts: list[ClinicalFact] = []
    if context.keeps(codes + category_codes) and _is_imaging_report(category_codes):
        facts.append(ClinicalFact(
            kind=FactKind.IMAGING, codes=without_duplicates(codes + category_codes), source=source,
            date=when, text=text_of(concept), status=status, profiles=profiles,
        ))
    conclusions = resource.conclusionCode
    if isinstance(conclusions, list):
        for conclusion in conclusions:
            conclusion_codes = codings_of(conclusion)
            if context.keeps(conclusion_codes):
                facts.append(ClinicalFact(
                    kind=FactKind.FINDING, codes=conclusion_codes, source=source, date=when,
                    text=text_of(conclusion), status=status, profiles=profiles,
                ))
    return facts


def _is_imaging_report(category_codes: tuple[Code, ...]) -> bool:
    """Imaging unless the category clearly says otherwise (pragmatic: most EHRs omit it)."""
    clearly_not_imaging = False
    for code in category_codes:
        if code.system == V2_0074:
            if code.code in _IMAGING_SECTIONS:
                return True
            clearly_not_imaging = True
        elif code.system == LOINC:
            if code.code == _LOINC_RADIOLOGY:
                return True
            if code.code == _LOINC_PATHOLOGY:
                clearly_not_imaging = True
    return not clearly_not_imaging


def read_service_request(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    # Only a *completed* request is a prior study; drafts and active orders are not facts, and the
    # order being rated never counts as its own prior imaging.
    if resource.status != "completed" or source == context.order_reference:
        return ()
    if any(c.system == SNOMED and c.code == _SNOMED_LABORATORY_PROCEDURE
           for c in codes_of_list(resource.category)):
        return ()
    concept = resource.code
    codes = main_codes(concept)
    if not codes:
        return ()
    when = (fhir_date(resource.occurrenceDateTime)
            or period_date(resource.occurrencePeriod, prefer_end=False)
            or fhir_date(resource.authoredOn))
    return (ClinicalFact(
        kind=FactKind.IMAGING, codes=codes, source=source, date=when, text=text_of(concept),
        status="completed", body_site_codes=codes_of_list(resource.bodySite),
        profiles=profiles_of(resource),
    ),)
