"""What every resource reader shares: the read context (prefetch index, relevance) and code helpers."""

from __future__ import annotations

from datetime import date
from typing import Any, Callable, Iterable

from cds_service.chart.decoding import CodeableConcept, FhirObject, Reference
from cds_service.chart.facts import ClinicalFact, Code
from cds_service.chart.fhirjson import codings_of, is_malformed_concept, text_of

class Malformed(Exception):
    """The resource's main element has the wrong JSON shape: skip and count it."""


class ReadContext:
    """What readers need beyond the resource itself."""

    __slots__ = ("index", "order_reference", "is_relevant", "is_study", "today")

    def __init__(self, index: dict[str, FhirObject], order_reference: str | None,
                 is_relevant: Callable[[str, str], bool] | None,
                 is_study: Callable[[str, str], bool] | None = None, today: date | None = None) -> None:
        self.index = index
        self.order_reference = order_reference
        self.is_relevant = is_relevant
        self.is_study = is_study      # (system, code) → whether it names an imaging study (caller's knowledge)
        self.today = today            # the request date: an ongoing treatment is dated today

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


Reader = Callable[[FhirObject, str, ReadContext], "Iterable[ClinicalFact]"]


def main_codes(concept: Any) -> tuple[Code, ...]:
    """Usable codings of the resource's main CodeableConcept; a wrong shape skips the resource."""
    if is_malformed_concept(concept):
        raise Malformed
    return codings_of(concept)


def codes_of_list(concepts: Any) -> tuple[Code, ...]:
    """Codings of a list of CodeableConcepts (bodySite, category...); tolerant of one object."""
    if isinstance(concepts, CodeableConcept):
        return codings_of(concepts)
    if not isinstance(concepts, list):
        return ()
    found: list[Code] = []
    for concept in concepts:
        found.extend(codings_of(concept))
    return tuple(found)


def profiles_of(resource: FhirObject) -> tuple[str, ...]:
    meta = resource.meta
    if not isinstance(meta, dict):
        return ()
    profiles = meta.get("profile")
    if not isinstance(profiles, list):
        return ()
    return tuple(p for p in profiles if isinstance(p, str))


def without_duplicates(codes: Iterable[Code]) -> tuple[Code, ...]:
    return tuple(dict.fromkeys(codes))


def reasons_of(resource: FhirObject, context: ReadContext) -> tuple[tuple[Code, ...], list[tuple[tuple[Code, ...], str | None]]]:
    """What a treatment was for: all reason codes, and each coded ``reasonCode`` on its own.

    The first part is every ``reasonCode`` coding followed by the codes of each Condition that
    ``reasonReference`` names and the prefetch holds (a Condition not in the prefetch tells only
    its display, which is not a code). The second part lists each ``reasonCode`` concept with its
    text: only those are read nowhere else (a referenced Condition is a fact of its own).
    """
    concepts = resource.reasonCode
    references = resource.reasonReference
    if concepts is None and references is None:  # most treatments say nothing of why
        return (), []
    named: list[tuple[tuple[Code, ...], str | None]] = []
    found: list[Code] = []
    if isinstance(concepts, CodeableConcept):
        concepts = [concepts]
    if isinstance(concepts, list):
        for concept in concepts:
            codes = codings_of(concept)
            if codes:
                named.append((codes, text_of(concept)))
                found.extend(codes)
    if references is not None:
        found.extend(focus_codes(references, context))
    return without_duplicates(found), named


def focus_codes(references: Any, context: ReadContext) -> tuple[Code, ...]:
    """Codes of the prefetched Conditions that references name (a stage's or status's ``focus``)."""
    if isinstance(references, Reference):
        references = [references]
    if not isinstance(references, list):
        return ()
    found: list[Code] = []
    for reference in references:
        condition = context.resolve(reference, "Condition")
        if condition is not None:
            found.extend(codings_of(condition.code))
    return without_duplicates(found)
