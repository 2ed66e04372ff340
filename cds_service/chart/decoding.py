"""The part of the prefetch's FHIR JSON that the chart layer reads, and nothing else.

A realistic chart is mostly what the service never reads: narratives, identifiers, subjects,
encounters, performers, notes. Turning all of that into Python dicts and strings, and freeing it
again, used to be the largest cost of a hook call. So every resource, Bundle and Bundle entry is
held as a :class:`FhirObject`: a small msgspec struct that keeps only the elements declared on it
and skips every other element while parsing. The coded elements every resource has are typed the
same way (:class:`CodeableConcept`, :class:`Coding`, and the :class:`Reference` and
:class:`ImagingSeries` that lead to them), because they are most of what is kept; other elements
hold exactly what plain JSON decoding gives (a Period or a Quantity is a dict). An element that is
absent reads as ``None``, as ``dict.get`` would give it.

Two ways in, one representation:

* ``hooks.request.decode_hook_body`` decodes the request body straight into these types, and
  :func:`decode_fhir_json` what the FHIR server answers (the app gives it to ``ehr.FhirClient``);
* :func:`as_fhir_objects` converts JSON that is already plain Python (resources fetched from the
  FHIR server, a body the typed decoder did not accept, tests) the same way.

Neither ever rejects input: every element's type also accepts every other JSON value, so a
resource that is a string, a ``Bundle.entry`` that is an object or a ``coding`` that is a number
is kept as it is, and the readers count it as junk or ignore it.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec


class _Element(msgspec.Struct, omit_defaults=True, repr_omit_defaults=True, gc=False):
    """Base of the typed elements below: see FhirObject for why ``gc=False`` is safe."""


class Coding(_Element):
    system: Any = None
    code: Any = None
    display: Any = None


#: A Coding where FHIR puts one; any other JSON value is kept as decoded.
AnyCoding = Union[Coding, list, str, int, float, bool, None]
#: A 0..* list of Codings (ImagingStudy.modality); a lone object is kept as a Coding.
AnyCodings = Union[list[AnyCoding], Coding, str, int, float, bool, None]


class CodeableConcept(_Element):
    coding: AnyCodings = None
    text: Any = None


AnyConcept = Union[CodeableConcept, list, str, int, float, bool, None]
AnyConcepts = Union[list[AnyConcept], CodeableConcept, str, int, float, bool, None]


class Reference(_Element):
    """A Reference, or an R5 CodeableReference (``concept``), to a coded resource."""

    reference: Any = None
    display: Any = None
    concept: AnyConcept = None


AnyReference = Union[Reference, list, str, int, float, bool, None]


class ImagingSeries(_Element):
    modality: AnyCoding = None


AnySeries = Union[list[Union[ImagingSeries, list, str, int, float, bool, None]], ImagingSeries,
                  str, int, float, bool, None]


class FhirObject(_Element):
    """A resource, Bundle or Bundle entry, with only the elements ``chart.extract`` reads.

    A reader that starts using another element must declare it here: reading an undeclared one
    raises ``AttributeError``, which fails the chart tests rather than passing silently.

    ``gc=False`` (here and on every typed element): the cycle collector does not track these (a
    third of the decoding time went to collections triggered by them). That is safe because they
    hold decoded JSON only, which cannot refer back to them, and nothing assigns to them after
    decoding.
    """

    # every resource
    resourceType: Any = None
    id: Any = None
    meta: Any = None
    status: Any = None
    # Bundle (``link``/``total``: a paged prefetch is read to its end), Bundle.entry, OperationOutcome
    link: Any = None
    total: Any = None
    entry: Union[list[AnyJsonValue], dict, str, int, float, bool, None] = None
    resource: AnyJsonValue = None
    fullUrl: Any = None
    search: Any = None
    issue: Any = None
    # coded elements (Bundle.type, a string, fits AnyConcept too)
    code: AnyConcept = None
    type: AnyConcept = None
    category: AnyConcepts = None
    bodySite: AnyConcepts = None
    clinicalStatus: AnyConcept = None
    verificationStatus: AnyConcept = None
    medicationCodeableConcept: AnyConcept = None
    medicationReference: AnyReference = None
    substance: AnyConcept = None
    procedureCode: AnyConcepts = None
    modality: AnyCodings = None
    series: AnySeries = None
    conclusionCode: AnyConcepts = None
    reasonCode: AnyConcepts = None
    reasonReference: Union[list[AnyReference], Reference, str, int, float, bool, None] = None
    focus: Union[list[AnyReference], Reference, str, int, float, bool, None] = None
    stage: Any = None                  # Condition.stage[]: summary / type read with as_codeable_concept
    device: AnyReference = None
    deviceName: Any = None
    safety: AnyConcepts = None         # Device.safety: MR labelling (R4 device-safety value set)
    description: Any = None
    # dates
    onsetDateTime: Any = None
    onsetPeriod: Any = None
    recordedDate: Any = None
    dateRecorded: Any = None
    assertedDate: Any = None
    performedDateTime: Any = None
    performedPeriod: Any = None
    effectiveDateTime: Any = None
    effectiveInstant: Any = None
    effectivePeriod: Any = None
    issued: Any = None
    authoredOn: Any = None
    dateAsserted: Any = None
    occurrenceDateTime: Any = None
    occurrencePeriod: Any = None
    timingDateTime: Any = None
    timingPeriod: Any = None
    recordedOn: Any = None
    started: Any = None
    # values and flags
    valueQuantity: Any = None
    valueInteger: Any = None
    valueCodeableConcept: AnyConcept = None
    referenceRange: Any = None
    notPerformed: Any = None


#: Any JSON value, with objects read as FhirObjects (at the levels where FHIR puts resources).
AnyJsonValue = Union[FhirObject, list, str, int, float, bool, None]


_FHIR_JSON = msgspec.json.Decoder(AnyJsonValue)


def decode_fhir_json(raw: bytes) -> Any:
    """A FHIR server's answer (bytes) straight into these types; raises ``msgspec.DecodeError``
    for bytes that are not JSON."""
    return _FHIR_JSON.decode(raw)


def as_fhir_objects(value: Any) -> Any:
    """Plain JSON (dicts) → the same value with resources, Bundles and entries as FhirObjects."""
    return _converted(value, AnyJsonValue, FhirObject)


def as_codeable_concept(value: Any) -> Any:
    """A plain-JSON CodeableConcept (e.g. a draft order's code) → :class:`CodeableConcept`."""
    return _converted(value, AnyConcept, CodeableConcept)


def _converted(value: Any, target: Any, done: type) -> Any:
    if value is None or isinstance(value, done):
        return value
    try:
        return msgspec.convert(value, target)
    except (msgspec.ValidationError, RecursionError):  # not JSON-shaped (e.g. non-string keys)
        return value  # the readers treat what they cannot use as junk
