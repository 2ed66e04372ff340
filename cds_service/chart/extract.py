"""Prefetch FHIR JSON → :class:`ChartFacts` (the readers live in clinical_readers and result_readers).

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
                          (+ STAGE)  (DSTU2 dateRecorded, STU3 assertedDate)                 or refuted
Procedure                 PROCEDURE  performedDateTime, performedPeriod.end, .start          not-done, entered-in-error
                          (+ IMAG.,  (performedString is ignored)
                          CONDITION)
MedicationRequest         MEDICATION authoredOn                                             entered-in-error
                          (+ COND.)
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
*start* otherwise. A Procedure ``in-progress`` whose period has no end yet (a radiotherapy course
under way) is dated ``today``: it is happening now, however long ago it began. Codes are the resource's main CodeableConcept (Condition/Procedure/
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
* Treatments (Procedure, MedicationRequest/Administration/Statement) keep what they were for in
  ``reason_codes``: the ``reasonCode`` codings and the codes of the Conditions ``reasonReference``
  names when the prefetch holds them. Each coded ``reasonCode`` is also a CONDITION fact (source
  the treatment, undated, no clinical status): a cancer named only there is still the patient's.
  A treatment whose own code is irrelevant still gives those CONDITION facts.
* Each ``Condition.stage`` with a coded ``summary`` is a STAGE fact: codes = the summary, with the
  Condition's date, statuses and source; ``reason_codes`` = the Condition's codes, ``value_codes``
  = ``stage.type``. Observations keep the codes of the Conditions their ``focus`` names
  (mCODE stage groups and disease status) in ``reason_codes``, and a UCUM ``valueQuantity.code``
  in ``ucum``.
* A Procedure coded with a code ``is_study`` accepts is an IMAGING fact as well (prior imaging
  recorded as a Procedure).
* Encounter, Patient and all other types are ignored: facts carry codes and dates, no PHI.
* Sources are "Type/id"; a resource without id uses its entry's ``fullUrl``, else its type.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Callable, Mapping

from cds_service.chart.decoding import CodeableConcept, Coding, FhirObject, as_fhir_objects
from cds_service.chart.facts import ChartFacts, ClinicalFact, DraftOrder, FactKind
from cds_service.chart.clinical_readers import (read_allergy, read_condition, read_device, read_device_use,
                                               read_medication, read_procedure)
from cds_service.chart.reading import Reader, ReadContext
from cds_service.chart.result_readers import (read_diagnostic_report, read_imaging_study, read_observation,
                                             read_service_request)

#: How deep Bundles inside Bundles (or lists inside lists) are followed; hostile nesting stops here.
_MAX_NESTING = 4

# Flags returned while walking one prefetch value.
_USABLE = 1       # the value held data (possibly an empty search result)
_ERROR = 2        # an OperationOutcome with an error/fatal issue: the data may be incomplete


def extract_chart_facts(
    prefetch: Mapping[str, Any] | None,
    order: DraftOrder | None,
    today: date,
    *,
    is_relevant: Callable[[str, str], bool] | None = None,
    is_study: Callable[[str, str], bool] | None = None,
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
    :param is_study: ``(system, code) -> bool``; when given, a Procedure with a code it accepts
        is prior imaging too (an IMAGING fact besides the PROCEDURE fact). The service passes
        "is a code of a catalogue study"; what is a study stays the caller's knowledge.
    """
    gathered = _Gathered(is_relevant)
    if isinstance(prefetch, Mapping):
        for key, value in prefetch.items():
            gathered.add_key(str(key), value)

    context = ReadContext(gathered.index, order.reference if order is not None else None, is_relevant, is_study,
                          today)
    facts: list[ClinicalFact] = []
    skipped = gathered.skipped
    for resource_type, source, resource in gathered.resources:
        reader = _READERS.get(resource_type)
        if reader is None:
            continue  # Patient, Encounter, Medication (used for look-ups), unknown types
        try:
            facts.extend(reader(resource, source, context))
        except Exception:  # Malformed, or any shape the readers did not foresee
            skipped += 1

    if order is not None:
        facts.extend(order_reason_facts(order, today))

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
            elements = _DECIDING_ELEMENTS.get(resource_type)
            if elements is not None:
                concept = getattr(resource, elements[0])
                if (isinstance(concept, CodeableConcept) and isinstance(concept.coding, list)
                        and not _mentions_relevant(concept.coding, self.is_relevant)
                        and (len(elements) == 1 or _others_irrelevant(resource, elements, self.is_relevant))):
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


_LOOKUP_TYPES = frozenset({"Device", "Medication", "Condition"})
#: Types whose facts come from these elements alone: the main CodeableConcept first, then the
#: others that can make a fact on their own (a treatment's reasonCode, a Condition's stage).
#: Irrelevant resources (a well-formed main concept naming nothing relevant, and no other deciding
#: element naming anything) are dropped while gathering; a main element of the wrong shape goes on
#: to the reader, which counts it. Readers still check the facts they make with ``ReadContext.keeps``.
#: Types not listed are checked by their readers only.
_DECIDING_ELEMENTS = {"Condition": ("code", "stage"), "Procedure": ("code", "reasonCode"),
                      "Observation": ("code",), "ServiceRequest": ("code",), "AllergyIntolerance": ("code",),
                      "Device": ("type",)}


def _others_irrelevant(resource: FhirObject, elements: tuple[str, ...], is_relevant: Callable[[str, str], bool]) -> bool:
    """No deciding element after the main one names anything relevant (the main one does not either).

    An element is relevant when present and not a (list of) CodeableConcept(s) without a relevant
    coding: a Condition's ``stage`` is always read, since a stage says something of its own.
    """
    for element in elements[1:]:
        value = getattr(resource, element)
        if value is None:
            continue
        for item in value if isinstance(value, list) else (value,):
            if not isinstance(item, CodeableConcept) or not isinstance(item.coding, list):
                return False
            if _mentions_relevant(item.coding, is_relevant):
                return False
    return True


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


_READERS: dict[str, Reader] = {
    "Condition": read_condition,
    "Procedure": read_procedure,
    "MedicationRequest": read_medication,
    "MedicationAdministration": read_medication,
    "MedicationStatement": read_medication,
    "Observation": read_observation,
    "Device": read_device,
    "DeviceUseStatement": read_device_use,
    "AllergyIntolerance": read_allergy,
    "ImagingStudy": read_imaging_study,
    "DiagnosticReport": read_diagnostic_report,
    "ServiceRequest": read_service_request,
}


#: ``ClinicalFact.source`` of a draft order's reasons.
ORDER_REASON_SOURCE = "ServiceRequest.reasonCode"


def order_reason_facts(order: DraftOrder, today: date) -> tuple[ClinicalFact, ...]:
    """Each reasonCode coding of the draft order as an ORDER_REASON fact dated ``today``.

    The source names the element, not the order: such a fact only ever sits beside the order it
    belongs to, and two orders giving the same reasons then have equal facts (an order-sign's
    orders share one evaluation, reasoning.engine.assess_orders)."""
    return tuple(ClinicalFact(kind=FactKind.ORDER_REASON, codes=(code,), source=ORDER_REASON_SOURCE, date=today,
                              text=code.display)
                 for code in order.reason_codes)
