"""The part of the prefetch's FHIR JSON that the chart layer reads, and nothing else.

A realistic chart is mostly what the service never reads: narratives, identifiers, subjects,
encounters, performers, notes. Turning all of that into Python dicts and strings, and freeing it
again, used to be the largest cost of a hook call. So every resource, Bundle and Bundle entry is
held as a :class:`FhirObject`: a small msgspec struct that keeps only the elements declared on it
and skips every other element while parsing. The elements it keeps hold exactly what plain JSON
decoding gives (a CodeableConcept is still a dict), so the tolerant readers in ``fhirjson`` apply
unchanged. An element that is absent reads as ``None``, as ``dict.get`` would give it.

Two ways in, one representation:

* ``protocol.request.decode_hook_body`` decodes the request body straight into these types;
* :func:`as_fhir_objects` converts JSON that is already plain Python (resources fetched from the
  FHIR server, a body the typed decoder did not accept, tests) the same way.

Neither ever rejects input: every JSON value fits :data:`AnyJsonValue`, so a resource that is a
string, or a ``Bundle.entry`` that is an object, is kept as it is and the readers count it as junk.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec


class FhirObject(msgspec.Struct, omit_defaults=True, repr_omit_defaults=True, gc=False):
    """A resource, Bundle or Bundle entry, with only the elements ``chart.extract`` reads.

    A reader that starts using another element must declare it here: reading an undeclared one
    raises ``AttributeError``, which fails the chart tests rather than passing silently.

    ``gc=False``: the cycle collector does not track these (a third of the decoding time went
    to collections triggered by them). That is safe because they hold decoded JSON only, which
    cannot refer back to them, and nothing assigns to them after decoding.
    """

    # every resource
    resourceType: Any = None
    id: Any = None
    meta: Any = None
    status: Any = None
    # Bundle, Bundle.entry, OperationOutcome
    entry: Union[list[AnyJsonValue], dict, str, int, float, bool, None] = None
    resource: AnyJsonValue = None
    fullUrl: Any = None
    search: Any = None
    issue: Any = None
    # coded elements
    code: Any = None
    type: Any = None
    category: Any = None
    bodySite: Any = None
    clinicalStatus: Any = None
    verificationStatus: Any = None
    medicationCodeableConcept: Any = None
    medicationReference: Any = None
    substance: Any = None
    procedureCode: Any = None
    modality: Any = None
    series: Any = None
    conclusionCode: Any = None
    device: Any = None
    deviceName: Any = None
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
    valueCodeableConcept: Any = None
    referenceRange: Any = None
    notPerformed: Any = None


#: Any JSON value, with objects read as FhirObjects (at the levels where FHIR puts resources).
AnyJsonValue = Union[FhirObject, list, str, int, float, bool, None]


def as_fhir_objects(value: Any) -> Any:
    """Plain JSON (dicts) → the same value with resources, Bundles and entries as FhirObjects."""
    if value is None or isinstance(value, FhirObject):
        return value
    try:
        return msgspec.convert(value, AnyJsonValue)
    except (msgspec.ValidationError, RecursionError):  # not JSON-shaped (e.g. non-string keys)
        return value  # the readers treat what they cannot use as junk
