"""Prefetch FHIR JSON → :class:`ChartFacts`; tumour-marker series → :class:`MarkerTrend`.

The chart layer knows FHIR but no medicine. It decides only what FHIR itself says: which
resources are void (entered-in-error, refuted, not-done...), which date is "the" date of a
resource, and which kind of fact it is. Whether a code is a cancer, a contrast allergy or an
MR-unsafe device is decided by the knowledge base's value sets.

Resources are read as JSON, never as typed FHIR models (typed parsing of a 300-resource Bundle
costs ~70 ms, reading the JSON about half a millisecond, see bench/bench_chart.py). Resources,
Bundles and entries are ``decoding.FhirObject``s, which keep only the elements read here; plain
dicts in the prefetch are converted to them as they are met (``decoding.as_fhir_objects``).

What the prefetch may hold (per key)
------------------------------------
* ``None``: no data → the key is listed in ``ChartFacts.missing``.
* a resource, a Bundle of any type (entries with ``resource``; nested Bundles are walked, up to
  a few levels), or a JSON list of those.
* an ``OperationOutcome`` instead of data, or Bundle entries with ``search.mode == "outcome"``:
  counted in ``ChartFacts.operation_outcomes``. The key is listed in ``missing`` when the
  outcome has an ``error``/``fatal`` issue (or no readable issue), because its data may be
  incomplete; warnings alone (e.g. "_count capped") do not make the key missing.
* anything else (a bare string, a dict without ``resourceType``, ``Bundle.entry`` not a list):
  unusable → ``missing``.

The same resource under several keys (same ``resourceType``/``id``) is read once. Junk inside
containers (an entry that is not an object, a resource without ``resourceType``) and resources
whose coded element has the wrong shape (``code`` is a string, ``coding`` is not a list), or
whose reading fails in any other way, are counted in ``ChartFacts.skipped_resources``. Smaller
defects degrade the fact instead (a bad date → ``date=None``, a bad value → ``value=None``, a
bad coding → that coding is dropped). Nothing here raises for any input.

Which resources become which facts
----------------------------------
========================  =========  =====================================================  ==========================
resource                  kind       date (first usable)                                    skipped when
========================  =========  =====================================================  ==========================
Condition                 CONDITION  onsetDateTime, onsetPeriod.start, recordedDate          verification entered-in-error
                                     (DSTU2 dateRecorded, STU3 assertedDate)                 or refuted
Procedure                 PROCEDURE  performedDateTime, performedPeriod.end, .start          not-done, entered-in-error
                                     (performedString is ignored)
MedicationRequest         MEDICATION authoredOn                                             entered-in-error
MedicationAdministration  MEDICATION effectiveDateTime, effectivePeriod.end, .start         entered-in-error, not-done
MedicationStatement       MEDICATION effectiveDateTime, effectivePeriod.end, .start,        entered-in-error, not-taken
                                     dateAsserted
Observation               OBSERV.    effectiveDateTime, effectiveInstant,                    entered-in-error, cancelled
                                     effectivePeriod.start, .end, issued
Device                    DEVICE     none                                                   inactive, entered-in-error
DeviceUseStatement        DEVICE     timingDateTime, timingPeriod.start, .end, recordedOn    entered-in-error
AllergyIntolerance        ALLERGY    onsetDateTime, recordedDate                            resolved, inactive, refuted,
                                                                                            entered-in-error
ImagingStudy              IMAGING    started                                                entered-in-error, cancelled
DiagnosticReport          IMAGING +  effectiveDateTime, effectivePeriod.start, .end, issued  entered-in-error, cancelled
                          FINDING
ServiceRequest completed  IMAGING    occurrenceDateTime, occurrencePeriod.start, .end,       any other status; laboratory
                                     authoredOn                                             category (SNOMED 108252007)
draft order reasonCode    ORDER_REA. ``today``                                              —
========================  =========  =====================================================  ==========================

Periods resolve to their *end* for things whose completion matters (a procedure or a
treatment course, e.g. mCODE RadiotherapyCourseSummary's performedPeriod.end) and to their
*start* otherwise. Codes are the resource's main CodeableConcept (Condition/Procedure/
Observation/AllergyIntolerance ``code``, Device ``type``, medication ``medicationCodeableConcept``
or the referenced Medication's ``code`` when that Medication is in the prefetch). Specifics:

* Every fact has at least one code with both system and code; uncoded resources give no fact.
* ``status`` holds clinicalStatus (Condition, AllergyIntolerance) or ``status`` (others), so
  criteria can ask for "active" or "recurrence"; ``verification`` holds Condition.verificationStatus.
  DSTU2/STU3 plain-string statuses are accepted too.
* ImagingStudy codes = procedureCode codings + modality codings (study and series level).
* DiagnosticReport: one IMAGING fact with the ``code`` codings followed by the ``category``
  codings, unless the category says it clearly is *not* imaging (a v2-0074 diagnostic service
  section other than the imaging ones — LAB, HM, CH, MB, SP, ... — or LOINC LP7839-6
  Pathology). Reports with no or an unknown category count as imaging. Each ``conclusionCode``
  CodeableConcept becomes one FINDING fact (all its codings) with the report's date, status and
  source — also for non-imaging reports (a pathology conclusion is a finding too).
* DeviceUseStatement codes come from an R5-style ``device.concept``, else from the ``type`` of
  the referenced Device when that Device is in the prefetch; otherwise no fact.
* Encounter, Patient and all other types are ignored: facts carry codes and dates, no PHI.
* Sources are "Type/id"; a resource without id uses its entry's ``fullUrl``, else its type.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Callable, Iterable, Mapping

from .decoding import CodeableConcept, Coding, FhirObject, ImagingSeries, Reference, as_fhir_objects
from .facts import ChartFacts, ClinicalFact, Code, DraftOrder, FactKind, MarkerTrend
from .fhirjson import (codings_of, coding_of, fhir_date, is_malformed_concept, number, period_date,
                       status_code, string, text_of)

#: How deep Bundles inside Bundles (or lists inside lists) are followed; hostile nesting stops here.
_MAX_NESTING = 4

# Flags returned while walking one prefetch value.
_USABLE = 1       # the value held data (possibly an empty search result)
_ERROR = 2        # an OperationOutcome with an error/fatal issue: the data may be incomplete

V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
#: v2-0074 diagnostic service sections that are imaging (RAD radiology, RX radiograph, CT, NMR,
#: NMS nuclear medicine, RUS/VUS/OUS/CUS ultrasound, XRC cineradiograph, CTH cardiac catheterisation).
_IMAGING_SECTIONS = frozenset({"RAD", "RX", "CT", "NMR", "NMS", "RUS", "VUS", "OUS", "CUS", "XRC", "CTH"})
_LOINC_RADIOLOGY = "LP29684-5"
_LOINC_PATHOLOGY = "LP7839-6"
_SNOMED_LABORATORY_PROCEDURE = "108252007"


class _Malformed(Exception):
    """The resource's main element has the wrong JSON shape: skip and count it."""


def extract_chart_facts(
    prefetch: Mapping[str, Any] | None,
    order: DraftOrder | None,
    today: date,
    *,
    is_relevant: Callable[[str, str], bool] | None = None,
) -> ChartFacts:
    """Read every prefetch value into clinical facts, plus the draft order's reasons.

    :param prefetch: the request's (completed) prefetch; ``None`` means no prefetch at all.
    :param order: the draft order being rated; each reasonCode coding becomes an ORDER_REASON
        fact dated ``today`` with the order's reference as source.
    :param today: the request date (dates order reasons; the caller's clock, not ours).
    :param is_relevant: ``(system, code) -> bool``; when given, a resource none of whose codes
        it accepts gives no fact, and is dropped before its dates and values are read. The caller
        decides what is relevant (the service passes ``Knowledge.knows_code``: a fact that no
        value set names can never match a criterion), so this module stays free of medicine.
        Order reasons are always kept.
    """
    gathered = _Gathered(is_relevant)
    if isinstance(prefetch, Mapping):
        for key, value in prefetch.items():
            gathered.add_key(str(key), value)

    context = _Context(gathered.index, order.reference if order is not None else None, is_relevant)
    facts: list[ClinicalFact] = []
    skipped = gathered.skipped
    for resource_type, source, resource in gathered.resources:
        reader = _READERS.get(resource_type)
        if reader is None:
            continue  # Patient, Encounter, Medication (used for look-ups), unknown types
        try:
            facts.extend(reader(resource, source, context))
        except Exception:  # _Malformed, or any shape the readers did not foresee
            skipped += 1

    if order is not None:
        facts.extend(_order_reasons(order, today))

    return ChartFacts(
        facts=tuple(facts),
        today=today,
        missing=tuple(gathered.missing),
        skipped_resources=skipped,
        operation_outcomes=gathered.outcomes,
    )


# ---------------------------------------------------------------------------------------------
# Walking the prefetch


class _Gathered:
    """Resources found in the prefetch, de-duplicated, with the bookkeeping for ChartFacts."""

    def __init__(self, is_relevant: Callable[[str, str], bool] | None) -> None:
        self.is_relevant = is_relevant
        self.resources: list[tuple[str, str, FhirObject]] = []   # (resourceType, source, resource)
        self.index: dict[str, FhirObject] = {}                   # "Device/x", "Medication/y" → resource
        self.missing: list[str] = []
        self.skipped = 0
        self.outcomes = 0
        self._seen: set[Any] = set()

    def add_key(self, key: str, value: Any) -> None:
        flags = 0 if value is None else self._add_value(value, depth=0)
        if (not flags & _USABLE or flags & _ERROR) and key not in self.missing:
            self.missing.append(key)

    def _add_value(self, value: Any, depth: int) -> int:
        if isinstance(value, dict):  # plain JSON: fetched from the FHIR server, or a caller's dict
            value = as_fhir_objects(value)
        if isinstance(value, FhirObject):
            resource_type = value.resourceType
            if resource_type == "Bundle":
                return self._add_bundle(value, depth)
            if resource_type == "OperationOutcome":
                self.outcomes += 1
                return _ERROR  # an outcome *instead of* data: no data for this key
            if isinstance(resource_type, str) and resource_type:
                self._add_resource(value, resource_type, None)
                return _USABLE
        elif isinstance(value, list) and depth < _MAX_NESTING:
            flags = _USABLE if not value else 0  # an empty list is an empty result, not an error
            for item in value:
                flags |= self._add_value(item, depth + 1)
            return flags
        if depth > 0:
            self.skipped += 1  # junk inside a container; a junk top-level value is just unusable
        return 0

    def _add_bundle(self, bundle: FhirObject, depth: int) -> int:
        entries = bundle.entry
        if entries is None:
            return _USABLE  # an empty searchset: "no such resources", which is data
        if not isinstance(entries, list):
            self.skipped += 1
            return 0
        flags = _USABLE
        for entry in entries:
            if not isinstance(entry, FhirObject):
                self.skipped += 1
                continue
            resource = entry.resource
            search = entry.search
            is_outcome_entry = isinstance(search, dict) and search.get("mode") == "outcome"
            if isinstance(resource, FhirObject):
                resource_type = resource.resourceType
            else:
                resource_type = None
            if is_outcome_entry or resource_type == "OperationOutcome":
                self.outcomes += 1
                if _is_error_outcome(resource):
                    flags |= _ERROR
                continue
            if resource_type == "Bundle" and depth < _MAX_NESTING:
                flags |= self._add_bundle(resource, depth + 1) & _ERROR
                continue
            if not isinstance(resource_type, str) or not resource_type or resource_type == "Bundle":
                self.skipped += 1  # no resource, not an object, no resourceType, or nested too deep
                continue
            self._add_resource(resource, resource_type, entry.fullUrl)
        return flags

    def _add_resource(self, resource: FhirObject, resource_type: str, full_url: Any) -> None:
        if self.is_relevant is not None:
            # Most of a chart is irrelevant: drop it here, before it costs a reader call. Only
            # types whose one coded element decides are dropped; a wrong shape goes on to the
            # reader, which counts it.
            element = _DECIDING_ELEMENT.get(resource_type)
            if element is not None:
                concept = getattr(resource, element)
                if (isinstance(concept, CodeableConcept) and isinstance(concept.coding, list)
                        and not _mentions_relevant(concept.coding, self.is_relevant)):
                    return
        resource_id = resource.id
        if isinstance(resource_id, str) and resource_id:
            source = f"{resource_type}/{resource_id}"
            identity: Any = source
            if resource_type in _LOOKUP_TYPES:
                self.index.setdefault(source, resource)
        else:
            # No id: only the very same object under two keys is recognised as a duplicate.
            source = full_url if isinstance(full_url, str) and full_url else resource_type
            identity = id(resource)
        if identity in self._seen:
            return
        self._seen.add(identity)
        self.resources.append((resource_type, source, resource))


_LOOKUP_TYPES = frozenset({"Device", "Medication"})
#: Types whose facts come from this one CodeableConcept alone (no fallback to another element):
#: irrelevant ones are dropped while gathering, so their readers need no relevance check. Readers
#: of the other types check with ``_Context.keeps`` once their codes are known.
_DECIDING_ELEMENT = {"Condition": "code", "Procedure": "code", "Observation": "code",
                     "ServiceRequest": "code", "AllergyIntolerance": "code", "Device": "type"}


def _mentions_relevant(codings: list, is_relevant: Callable[[str, str], bool]) -> bool:
    """Whether a CodeableConcept's codings include one ``is_relevant`` accepts (before any Code is made)."""
    for coding in codings:
        if isinstance(coding, Coding):
            system, value = coding.system, coding.code
            if isinstance(system, str) and isinstance(value, str) and is_relevant(system.strip(), value.strip()):
                return True
    return False


def _is_error_outcome(outcome: Any) -> bool:
    """An OperationOutcome reporting an error; one without readable issues counts as an error."""
    if not isinstance(outcome, FhirObject):
        return False  # an outcome entry without a resource tells nothing
    issues = outcome.issue
    if not isinstance(issues, list) or not issues:
        return True
    readable = False
    for issue in issues:
        if isinstance(issue, dict) and isinstance(issue.get("severity"), str):
            readable = True
            if issue["severity"] in ("error", "fatal"):
                return True
    return not readable


# ---------------------------------------------------------------------------------------------
# Readers: one per resource type, each returning the facts of one resource


class _Context:
    """What readers need beyond the resource itself."""

    __slots__ = ("index", "order_reference", "is_relevant")

    def __init__(self, index: dict[str, FhirObject], order_reference: str | None,
                 is_relevant: Callable[[str, str], bool] | None) -> None:
        self.index = index
        self.order_reference = order_reference
        self.is_relevant = is_relevant

    def keeps(self, codes: Iterable[Code]) -> bool:
        """Whether a fact with these codes is worth making: it has codes, and one is relevant."""
        if self.is_relevant is None:
            return bool(codes)
        return any(self.is_relevant(c.system, c.code) for c in codes)

    def resolve(self, reference: Any, resource_type: str) -> FhirObject | None:
        """The prefetched resource a Reference points to ("Device/1" or ".../Device/1"), if any."""
        if not isinstance(reference, Reference):
            return None
        target = reference.reference
        if not isinstance(target, str):
            return None
        parts = target.rstrip("/").rsplit("/", 3)
        if len(parts) >= 4 and parts[-2] == "_history":  # ".../Device/1/_history/2"
            parts = parts[:-2]
        if len(parts) < 2 or parts[-2] != resource_type:
            return None
        return self.index.get(f"{resource_type}/{parts[-1]}")


Reader = Callable[[FhirObject, str, _Context], "Iterable[ClinicalFact]"]


def _codes(concept: Any) -> tuple[Code, ...]:
    """Usable codings of the resource's main CodeableConcept; a wrong shape skips the resource."""
    if is_malformed_concept(concept):
        raise _Malformed
    return codings_of(concept)


def _codes_of_list(concepts: Any) -> tuple[Code, ...]:
    """Codings of a list of CodeableConcepts (bodySite, category...); tolerant of one object."""
    if isinstance(concepts, CodeableConcept):
        return codings_of(concepts)
    if not isinstance(concepts, list):
        return ()
    found: list[Code] = []
    for concept in concepts:
        found.extend(codings_of(concept))
    return tuple(found)


def _profiles(resource: FhirObject) -> tuple[str, ...]:
    meta = resource.meta
    if not isinstance(meta, dict):
        return ()
    profiles = meta.get("profile")
    if not isinstance(profiles, list):
        return ()
    return tuple(p for p in profiles if isinstance(p, str))


def _without_duplicates(codes: Iterable[Code]) -> tuple[Code, ...]:
    return tuple(dict.fromkeys(codes))


def _read_condition(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    verification = status_code(resource.verificationStatus)
    clinical = status_code(resource.clinicalStatus)
    if verification in ("entered-in-error", "refuted") or clinical == "entered-in-error":
        return ()
    concept = resource.code
    codes = _codes(concept)
    if not codes:
        return ()
    when = (fhir_date(resource.onsetDateTime)
            or period_date(resource.onsetPeriod, prefer_end=False)
            or fhir_date(resource.recordedDate)
            or fhir_date(resource.dateRecorded)      # DSTU2
            or fhir_date(resource.assertedDate))     # STU3
    return (ClinicalFact(
        kind=FactKind.CONDITION, codes=codes, source=source, date=when, text=text_of(concept),
        status=clinical, verification=verification,
        body_site_codes=_codes_of_list(resource.bodySite), profiles=_profiles(resource),
    ),)


def _read_procedure(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("not-done", "entered-in-error") or resource.notPerformed is True:  # DSTU2 flag
        return ()
    concept = resource.code
    codes = _codes(concept)
    if not codes:
        return ()
    when = (fhir_date(resource.performedDateTime)
            or period_date(resource.performedPeriod, prefer_end=True))
    return (ClinicalFact(
        kind=FactKind.PROCEDURE, codes=codes, source=source, date=when, text=text_of(concept),
        status=status, body_site_codes=_codes_of_list(resource.bodySite),
        profiles=_profiles(resource),
    ),)


def _read_medication(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("entered-in-error", "not-done", "not-taken"):
        return ()
    concept = resource.medicationCodeableConcept
    codes = _codes(concept)
    if not codes:
        medication = context.resolve(resource.medicationReference, "Medication")
        if medication is not None:
            concept = medication.code
            codes = codings_of(concept)
    if not context.keeps(codes):
        return ()
    if resource.resourceType == "MedicationRequest":
        when = fhir_date(resource.authoredOn)
    else:
        when = (fhir_date(resource.effectiveDateTime)
                or period_date(resource.effectivePeriod, prefer_end=True)
                or fhir_date(resource.dateAsserted))
    return (ClinicalFact(
        kind=FactKind.MEDICATION, codes=codes, source=source, date=when, text=text_of(concept),
        status=status, profiles=_profiles(resource),
    ),)


def _read_observation(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("entered-in-error", "cancelled"):
        return ()
    concept = resource.code
    codes = _codes(concept)
    if not codes:
        return ()
    when = (fhir_date(resource.effectiveDateTime)
            or fhir_date(resource.effectiveInstant)
            or period_date(resource.effectivePeriod, prefer_end=False)
            or fhir_date(resource.issued))
    value = unit = None
    quantity = resource.valueQuantity
    if isinstance(quantity, dict):
        value = number(quantity.get("value"))
        unit = string(quantity.get("unit")) or string(quantity.get("code"))
    else:
        value = number(resource.valueInteger)             # None when absent
    return (ClinicalFact(
        kind=FactKind.OBSERVATION, codes=codes, source=source, date=when, text=text_of(concept),
        status=status, value=value, unit=unit,
        value_codes=codings_of(resource.valueCodeableConcept),
        reference_high=_reference_high(resource.referenceRange),
        body_site_codes=_codes_of_list(resource.bodySite), profiles=_profiles(resource),
    ),)


def _reference_high(ranges: Any) -> float | None:
    if not isinstance(ranges, list) or not ranges or not isinstance(ranges[0], dict):
        return None
    high = ranges[0].get("high")
    return number(high.get("value")) if isinstance(high, dict) else None


def _read_device(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("inactive", "entered-in-error"):
        return ()
    concept = resource.type
    codes = _codes(concept)
    if not codes:
        return ()
    return (ClinicalFact(
        kind=FactKind.DEVICE, codes=codes, source=source, text=text_of(concept) or _device_name(resource),
        status=status, profiles=_profiles(resource),
    ),)


def _device_name(device: FhirObject) -> str | None:
    names = device.deviceName
    if isinstance(names, list) and names and isinstance(names[0], dict):
        return string(names[0].get("name"))
    return None


def _read_device_use(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status == "entered-in-error":
        return ()
    device = resource.device
    if not isinstance(device, Reference):
        return ()  # R4 requires it; without it there is nothing to say
    concept = device.concept                                  # R5 CodeableReference
    codes = codings_of(concept)
    if not codes:
        target = context.resolve(device, "Device")           # R4 Reference to a prefetched Device
        if target is not None:
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
        body_site_codes=_codes_of_list(resource.bodySite), profiles=_profiles(resource),
    ),)


_VOID_ALLERGY_STATUSES = frozenset({"resolved", "inactive", "refuted", "entered-in-error"})


def _read_allergy(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    clinical = status_code(resource.clinicalStatus)
    verification = status_code(resource.verificationStatus)
    legacy_status = string(resource.status)            # DSTU2 mixes both into "status"
    if (clinical in _VOID_ALLERGY_STATUSES or verification in _VOID_ALLERGY_STATUSES
            or legacy_status in _VOID_ALLERGY_STATUSES):
        return ()
    concept = resource.code
    codes = _codes(concept)
    if not codes and concept is None:
        concept = resource.substance                   # DSTU2
        codes = codings_of(concept)
    if not context.keeps(codes):
        return ()
    when = fhir_date(resource.onsetDateTime) or fhir_date(resource.recordedDate)
    return (ClinicalFact(
        kind=FactKind.ALLERGY, codes=codes, source=source, date=when, text=text_of(concept),
        status=clinical or legacy_status, verification=verification, profiles=_profiles(resource),
    ),)


def _read_imaging_study(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("entered-in-error", "cancelled"):
        return ()
    procedure_codes = resource.procedureCode
    codes: list[Code] = list(_codes_of_list(procedure_codes))
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
        kind=FactKind.IMAGING, codes=_without_duplicates(codes), source=source,
        date=fhir_date(resource.started), text=text, status=status, profiles=_profiles(resource),
    ),)


def _read_diagnostic_report(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    status = string(resource.status)
    if status in ("entered-in-error", "cancelled"):
        return ()
    concept = resource.code
    codes = _codes(concept)
    category_codes = _codes_of_list(resource.category)
    when = (fhir_date(resource.effectiveDateTime)
            or period_date(resource.effectivePeriod, prefer_end=False)
            or fhir_date(resource.issued))
    profiles = _profiles(resource)
    facts: list[ClinicalFact] = []
    if context.keeps(codes + category_codes) and _is_imaging_report(category_codes):
        facts.append(ClinicalFact(
            kind=FactKind.IMAGING, codes=_without_duplicates(codes + category_codes), source=source,
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


def _read_service_request(resource: FhirObject, source: str, context: _Context) -> Iterable[ClinicalFact]:
    # Only a *completed* request is a prior study; drafts and active orders are not facts, and the
    # order being rated never counts as its own prior imaging.
    if resource.status != "completed" or source == context.order_reference:
        return ()
    if any(c.system == SNOMED and c.code == _SNOMED_LABORATORY_PROCEDURE
           for c in _codes_of_list(resource.category)):
        return ()
    concept = resource.code
    codes = _codes(concept)
    if not codes:
        return ()
    when = (fhir_date(resource.occurrenceDateTime)
            or period_date(resource.occurrencePeriod, prefer_end=False)
            or fhir_date(resource.authoredOn))
    return (ClinicalFact(
        kind=FactKind.IMAGING, codes=codes, source=source, date=when, text=text_of(concept),
        status="completed", body_site_codes=_codes_of_list(resource.bodySite),
        profiles=_profiles(resource),
    ),)


_READERS: dict[str, Reader] = {
    "Condition": _read_condition,
    "Procedure": _read_procedure,
    "MedicationRequest": _read_medication,
    "MedicationAdministration": _read_medication,
    "MedicationStatement": _read_medication,
    "Observation": _read_observation,
    "Device": _read_device,
    "DeviceUseStatement": _read_device_use,
    "AllergyIntolerance": _read_allergy,
    "ImagingStudy": _read_imaging_study,
    "DiagnosticReport": _read_diagnostic_report,
    "ServiceRequest": _read_service_request,
}


def _order_reasons(order: DraftOrder, today: date) -> list[ClinicalFact]:
    source = order.reference or "ServiceRequest"
    return [ClinicalFact(kind=FactKind.ORDER_REASON, codes=(code,), source=source, date=today,
                         text=code.display)
            for code in order.reason_codes]


# ---------------------------------------------------------------------------------------------
# Tumour-marker trend


def extract_tumour_marker_trend(
    facts: Iterable[ClinicalFact],
    is_marker: Callable[[ClinicalFact], bool],
    today: date,
    window_days: int = 365,
    min_rise_fraction: float = 0.2,
) -> MarkerTrend:
    """Whether a tumour marker is rising, falling or stable over the recent window.

    Definition (``f`` = ``min_rise_fraction``, e.g. 0.2 = 20 %):

    1. **Points.** Facts for which ``is_marker(fact)`` holds that have a numeric value and a date
       with ``today - window_days <= date <= today`` (future-dated results are ignored). They are
       ordered by date; when several fall on the same date only the one listed *last* is kept
       (dates have no time of day, and a later entry usually corrects an earlier one).
    2. **Units.** Only points whose unit matches the unit of the latest point are compared
       (case-insensitive, surrounding spaces ignored); a point without a unit is compatible with
       any. If the latest point has no unit, the unit of the most recent point that has one is
       used. Points in other units are dropped, never converted.
    3. **Fewer than 2 points** → ``"insufficient-data"``.
    4. **Rising** when all of these hold, with *latest* and *previous* the last two points and
       *nadir* the lowest value among the points:

       * latest > previous and latest − previous ≥ f × |previous|;
       * latest > nadir and latest − nadir ≥ f × |nadir| (for non-negative values this follows
         from the first condition; it is stated so that the rule reads "rising from the nadir");
       * if the latest point carries a reference-range upper limit (``reference_high``), the
         latest value is strictly above it (a rise within the normal range is not "rising").
    5. **Falling** when latest < previous and previous − latest ≥ f × |previous|.
    6. Otherwise **stable** (including a ≥ f rise that stays within the reference range).

    "At least f" is inclusive (a tiny tolerance absorbs floating-point error, so 10 → 12 with
    f = 0.2 is rising). ``points`` in the result are the compared points, oldest → newest.
    """
    window_start = today - timedelta(days=window_days)
    by_date: dict[date, ClinicalFact] = {}
    for fact in facts:
        if fact.value is None or fact.date is None or not window_start <= fact.date <= today:
            continue
        if not is_marker(fact):
            continue
        by_date.pop(fact.date, None)  # the later-listed fact wins its date
        by_date[fact.date] = fact
    points = sorted(by_date.values(), key=_date_of)
    points = _same_unit_as_latest(points)
    if len(points) < 2:
        return MarkerTrend("insufficient-data", tuple(points))

    values = [p.value for p in points if p.value is not None]  # all of them; narrows the type
    latest, previous, nadir = values[-1], values[-2], min(values)
    high = points[-1].reference_high
    if (_rose_by(previous, latest, min_rise_fraction) and _rose_by(nadir, latest, min_rise_fraction)
            and (high is None or latest > high)):
        direction = "rising"
    elif _fell_by(previous, latest, min_rise_fraction):
        direction = "falling"
    else:
        direction = "stable"
    return MarkerTrend(direction, tuple(points))


def _date_of(fact: ClinicalFact) -> date:
    return fact.date or date.min


def _rose_by(old: float, new: float, fraction: float) -> bool:
    """``new`` exceeds ``old`` by at least ``fraction`` of |old| (inclusive, float-tolerant)."""
    return new > old and new - old >= fraction * abs(old) - 1e-9 * max(1.0, abs(old))


def _fell_by(old: float, new: float, fraction: float) -> bool:
    """``new`` is below ``old`` by at least ``fraction`` of |old| (inclusive, float-tolerant)."""
    return new < old and old - new >= fraction * abs(old) - 1e-9 * max(1.0, abs(old))


def _same_unit_as_latest(points: list[ClinicalFact]) -> list[ClinicalFact]:
    reference_unit = None
    for point in reversed(points):
        if point.unit is not None:
            reference_unit = point.unit.strip().lower()
            break
    if reference_unit is None:
        return points
    return [p for p in points if p.unit is None or p.unit.strip().lower() == reference_unit]
