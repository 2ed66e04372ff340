"""What the service knows about a patient, read from FHIR, as plain frozen values.

The chart layer knows FHIR but no medicine: it turns resources into :class:`ClinicalFact`
records (kind, codes, date, source). Whether a code means "cervical cancer" or "pelvic pain"
is decided by the knowledge base's value sets, in the reasoning layer. Every fact keeps the
reference of the resource and the date it came from, so a card can show its evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import Enum

import msgspec


class FactKind(str, Enum):
    CONDITION = "condition"          # Condition (problem list, encounter diagnosis, history codes)
    ORDER_REASON = "order-reason"    # reasonCode of the draft order being rated
    PROCEDURE = "procedure"          # Procedure (surgery, radiotherapy course, chemoradiation)
    MEDICATION = "medication"        # MedicationRequest / MedicationAdministration (e.g. chemotherapy)
    OBSERVATION = "observation"      # Observation (labs incl. tumour markers, eGFR, symptoms, status)
    DEVICE = "device"                # Device / DeviceUseStatement (pacemaker, ICD)
    ALLERGY = "allergy"              # AllergyIntolerance (contrast allergy)
    IMAGING = "imaging"              # ImagingStudy, DiagnosticReport, completed imaging ServiceRequest
    FINDING = "finding"              # coded conclusions of a DiagnosticReport (conclusionCode)
    STAGE = "stage"                  # Condition.stage[].summary: the stage itself (e.g. stage IV), for the Condition


# Code and ClinicalFact are the two values a request creates by the hundred: msgspec structs are
# made about ten times faster than frozen dataclasses, and gc=False keeps them out of the cycle
# collector's scans (they hold strings, dates and tuples of each other only, never a cycle).
class Code(msgspec.Struct, frozen=True, gc=False):
    system: str
    code: str
    display: str | None = None


class ClinicalFact(msgspec.Struct, frozen=True, gc=False):
    """One coded statement from the chart.

    ``date`` is the clinically relevant date: onset (else recorded) for conditions, end of
    performance for procedures, effective date for observations, start for imaging. ``None``
    when the resource has none; date-windowed criteria never match undated facts.
    """

    kind: FactKind
    codes: tuple[Code, ...]
    source: str                                  # "Condition/123", or "ServiceRequest/x" for order reasons
    date: date | None = None
    text: str | None = None                      # human label for cards (display or CodeableConcept.text)
    status: str | None = None                    # clinicalStatus / Procedure.status / Observation.status
    verification: str | None = None              # Condition.verificationStatus code
    value: float | None = None                   # Observation.valueQuantity.value
    unit: str | None = None
    value_codes: tuple[Code, ...] = ()           # Observation.valueCodeableConcept codings
    reference_high: float | None = None          # Observation.referenceRange[0].high.value
    body_site_codes: tuple[Code, ...] = ()       # Condition/Procedure.bodySite codings
    profiles: tuple[str, ...] = ()               # meta.profile, a hint only (e.g. mCODE)
    #: What the fact is *for*: a treatment's reasonCode codings and the codes of the Conditions its
    #: reasonReference names (when prefetched); for a STAGE fact, the codes of the staged Condition.
    reason_codes: tuple[Code, ...] = ()
    #: Observation.valueQuantity.code when its system is UCUM (``unit`` keeps the human-readable unit).
    ucum: str | None = None
    #: Device.safety codings of a DEVICE fact (MR Conditional / MR Safe / MR Unsafe labelling): what
    #: the device's labelling says about MRI, read by the ``safety_in`` criteria option.
    safety_codes: tuple[Code, ...] = ()


@dataclass(frozen=True)
class ChartFacts:
    """Everything read from the prefetch (or FHIR fetch) and the draft order for one request."""

    facts: tuple[ClinicalFact, ...]
    today: date
    #: Prefetch keys that held no data (``null``) or were unusable; shown as caveats in cards.
    missing: tuple[str, ...] = ()
    #: Resources skipped because they were malformed (counted, never fatal).
    skipped_resources: int = 0
    #: OperationOutcome resources met in the prefetch (a whole key's value, or ``search.mode ==
    #: "outcome"`` entries): the client reported a problem; keys with error/fatal issues are in ``missing``.
    operation_outcomes: int = 0

    def of_kind(self, *kinds: FactKind) -> tuple[ClinicalFact, ...]:
        return tuple(f for f in self.facts if f.kind in kinds)


@dataclass(frozen=True)
class DraftOrder:
    """An imaging order from ``context.draftOrders``, as the EHR sent it."""

    resource: dict                               # the ServiceRequest JSON, untouched (echoed back in actions)
    resource_id: str | None                      # "example-request-id"
    codes: tuple[Code, ...]                      # usable codings of ServiceRequest.code
    reason_codes: tuple[Code, ...] = ()          # codings of reasonCode[]
    text: str | None = None                      # code.text or first display

    @property
    def reference(self) -> str | None:
        return f"ServiceRequest/{self.resource_id}" if self.resource_id else None


@dataclass(frozen=True)
class MarkerTrend:
    """Result of :func:`cds_service.chart.extract.extract_tumour_marker_trend`."""

    direction: str                               # "rising" | "falling" | "stable" | "insufficient-data"
    points: tuple[ClinicalFact, ...] = field(default_factory=tuple)   # oldest → newest, within the window
