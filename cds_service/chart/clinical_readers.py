"""Readers of the clinical record: problems (Condition, and its stage), treatments (Procedure,
medications, with what they were for), devices and allergies. Each returns the facts of one resource and raises ``Malformed`` on a
coded element of the wrong shape (the resource is then skipped and counted)."""

from __future__ import annotations

from datetime import date
from typing import Any, Iterable

import msgspec

from cds_service.chart.decoding import FhirObject, Reference, as_codeable_concept
from cds_service.chart.facts import ClinicalFact, Code, FactKind
from cds_service.chart.fhirjson import codings_of, fhir_date, period_date, status_code, string, text_of
from cds_service.chart.reading import ReadContext, codes_of_list, main_codes, profiles_of, reasons_of

def read_condition(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    verification = status_code(resource.verificationStatus)
    clinical = status_code(resource.clinicalStatus)
    if verification in ("entered-in-error", "refuted") or clinical == "entered-in-error":
        return ()
    concept = resource.code
    codes = main_codes(concept)
    if not codes:
        return ()
    when = (fhir_date(resource.onsetDateTime)
            or period_date(resource.onsetPeriod, prefer_end=False)
            or fhir_date(resource.recordedDate)
            or fhir_date(resource.dateRecorded)      # DSTU2
            or fhir_date(resource.assertedDate))     # STU3
    condition = ClinicalFact(
        kind=FactKind.CONDITION, codes=codes, source=source, date=when, text=text_of(concept),
        status=clinical, verification=verification,
        body_site_codes=codes_of_list(resource.bodySite), profiles=profiles_of(resource),
    )
    stages = resource.stage
    if not stages:
        return (condition,)
    return (condition, *_stages(stages, condition, context))


def _stages(stages: Any, condition: ClinicalFact, context: ReadContext) -> list[ClinicalFact]:
    """One STAGE fact per ``Condition.stage`` with a coded summary ("stage IV"), for that Condition.

    The fact carries the Condition's date, statuses and source; ``reason_codes`` are the
    Condition's codes (which cancer is staged) and ``value_codes`` the ``stage.type`` codings (which
    staging: clinical, pathological, a staging system).
    """
    if isinstance(stages, dict):
        stages = [stages]
    if not isinstance(stages, list):
        return []
    facts = []
    for stage in stages:
        if not isinstance(stage, dict):
            continue
        summary = as_codeable_concept(stage.get("summary"))
        codes = codings_of(summary)
        if codes and context.keeps(codes):
            facts.append(ClinicalFact(
                kind=FactKind.STAGE, codes=codes, source=condition.source, date=condition.date,
                text=text_of(summary), status=condition.status, verification=condition.verification,
                value_codes=codings_of(as_codeable_concept(stage.get("type"))),
                reason_codes=condition.codes, profiles=condition.profiles,
            ))
    return facts


def read_procedure(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("not-done", "entered-in-error") or resource.notPerformed is True:  # DSTU2 flag
        return ()
    concept = resource.code
    codes = main_codes(concept)
    reasons, named = reasons_of(resource, context)
    facts: list[ClinicalFact] = []
    if codes and context.keeps(codes):
        when = (fhir_date(resource.performedDateTime)
                or _ongoing(status, resource.performedPeriod, context)
                or period_date(resource.performedPeriod, prefer_end=True))
        procedure = ClinicalFact(
            kind=FactKind.PROCEDURE, codes=codes, source=source, date=when, text=text_of(concept),
            status=status, body_site_codes=codes_of_list(resource.bodySite),
            profiles=profiles_of(resource), reason_codes=reasons,
        )
        facts.append(procedure)
        if context.is_study is not None and any(context.is_study(c.system, c.code) for c in codes):
            # A study recorded as a Procedure (CT, MRI, bone scan) is prior imaging as well.
            facts.append(msgspec.structs.replace(procedure, kind=FactKind.IMAGING))
    facts.extend(_conditions_named(named, source, context))
    return facts


def _ongoing(status: str | None, period: Any, context: ReadContext) -> date | None:
    """Today for a procedure under way (``in-progress``, a period with a start and no end)."""
    if status == "in-progress" and isinstance(period, dict) and period.get("end") is None and period.get("start"):
        return context.today
    return None


def _conditions_named(named: list[tuple[tuple[Code, ...], str | None]], source: str,
                      context: ReadContext) -> list[ClinicalFact]:
    """A problem named only in a treatment's ``reasonCode`` ("radiotherapy for breast cancer") is a
    Condition of the patient too: undated and without clinical status, since the treatment says
    neither when it began nor whether it is still active (so no date window or status filter holds)."""
    return [ClinicalFact(kind=FactKind.CONDITION, codes=codes, source=source, text=text)
            for codes, text in named if context.keeps(codes)]


def read_medication(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("entered-in-error", "not-done", "not-taken"):
        return ()
    concept = resource.medicationCodeableConcept
    codes = main_codes(concept)
    if not codes:
        medication = context.resolve(resource.medicationReference, "Medication")
        if medication is not None:
            concept = medication.code
            codes = codings_of(concept)
    reasons, named = reasons_of(resource, context)
    facts: list[ClinicalFact] = []
    if codes and context.keeps(codes):
        if resource.resourceType == "MedicationRequest":
            when = fhir_date(resource.authoredOn)
        else:
            when = (fhir_date(resource.effectiveDateTime)
                    or period_date(resource.effectivePeriod, prefer_end=True)
                    or fhir_date(resource.dateAsserted))
        facts.append(ClinicalFact(
            kind=FactKind.MEDICATION, codes=codes, source=source, date=when, text=text_of(concept),
            status=status, profiles=profiles_of(resource), reason_codes=reasons,
        ))
    facts.extend(_conditions_named(named, source, context))
    return facts


def read_device(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("inactive", "entered-in-error"):
        return ()
    concept = resource.type
    codes = main_codes(concept)
    if not codes:
        return ()
    return (ClinicalFact(
        kind=FactKind.DEVICE, codes=codes, source=source, text=text_of(concept) or _device_name(resource),
        status=status, profiles=profiles_of(resource), safety_codes=codes_of_list(resource.safety),
    ),)


def _device_name(device: FhirObject) -> str | None:
    names = device.deviceName
    if isinstance(names, list) and names and isinstance(names[0], dict):
        return string(names[0].get("name"))
    return None


def read_device_use(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status == "entered-in-error":
        return ()
    device = resource.device
    if not isinstance(device, Reference):
        return ()  # R4 requires it; without it there is nothing to say
    concept = device.concept                                  # R5 CodeableReference
    codes = codings_of(concept)
    # The MR labelling is on the Device itself (Device.safety), also when the statement codes it.
    target = context.resolve(device, "Device")               # R4 Reference to a prefetched Device
    safety = codes_of_list(target.safety) if target is not None else ()
    if not codes and target is not None:
        concept = target.type
        codes = codings_of(concept)
    if not context.keeps(codes):
        return ()
    when = (fhir_date(resource.timingDateTime)
            or period_date(resource.timingPeriod, prefer_end=False)
            or fhir_date(resource.recordedOn))
    return (ClinicalFact(
        kind=FactKind.DEVICE, codes=codes, source=source, date=when,
        text=text_of(concept) or string(device.display), status=status,
        body_site_codes=codes_of_list(resource.bodySite), profiles=profiles_of(resource), safety_codes=safety,
    ),)


_VOID_ALLERGY_STATUSES = frozenset({"resolved", "inactive", "refuted", "entered-in-error"})


def read_allergy(resource: FhirObject, source: str, context: ReadContext) -> Iterable[ClinicalFact]:
    clinical = status_code(resource.clinicalStatus)
    verification = status_code(resource.verificationStatus)
    legacy_status = string(resource.status)            # DSTU2 mixes both into "status"
    if (clinical in _VOID_ALLERGY_STATUSES or verification in _VOID_ALLERGY_STATUSES
            or legacy_status in _VOID_ALLERGY_STATUSES):
        return ()
    concept = resource.code
    codes = main_codes(concept)
    if not codes and concept is None:
        concept = resource.substance                   # DSTU2
        codes = codings_of(concept)
    if not context.keeps(codes):
        return ()
    when = fhir_date(resource.onsetDateTime) or fhir_date(resource.recordedDate)
    return (ClinicalFact(
        kind=FactKind.ALLERGY, codes=codes, source=source, date=when, text=text_of(concept),
        status=clinical or legacy_status, verification=verification, profiles=profiles_of(resource),
    ),)
