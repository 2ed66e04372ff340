"""What every resource reader shares: the read context (prefetch index, relevance) and code helpers."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from cds_service.chart.decoding import CodeableConcept, FhirObject, Reference
from cds_service.chart.facts import ClinicalFact, Code
from cds_service.chart.fhirjson import codings_of, is_malformed_concept

class Malformed(Exception):
    """The resource's main element has the wrong JSON shape: skip and count it."""


class ReadContext:
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
