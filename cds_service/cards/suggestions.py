"""Suggestions a clinician accepts with one click: switch to the recommended study, or cancel."""

from __future__ import annotations

from cds_service.cards.rating import rating_extensions, with_extensions
from cds_service.hooks.response import Action, Suggestion, new_uuid
from cds_service.kb.model import CPT, LOINC, SNOMED, CodeEntry, Procedure, normalise_code
from cds_service.reasoning.assessment import OrderAssessment, ScanRating

#: Parts that name a side (77065 unilateral / 77066 bilateral mammography): one of them is ordered.
_LATERALITY = frozenset({"unilateral", "bilateral", "left", "right"})


def switch_suggestion(
    assessment: OrderAssessment,
    target: Procedure,
    target_rating: ScanRating | None,
    qcdsm_id: str,
) -> Suggestion:
    """Replace the draft order's study; the new ServiceRequest carries its own rating (the sandbox needs it)."""
    rating = target_rating.rating if target_rating else None
    extensions = rating_extensions(rating, assessment.scenario, qcdsm_id, f"urn:uuid:{new_uuid()}")
    resource = with_extensions(assessment.order.resource, extensions)
    # Everything else of the order (reasons, subject, category, dates, notes) is kept; the EHR shows
    # the new study from its codings' display and the concept's text, so both are always set.
    codings = target_codings(target, _ordered_part(assessment), _systems_of(assessment))
    resource["code"] = {"coding": codings, "text": target.name} if codings else {"text": target.name}
    if codings and not target.codes[0].display:
        codings[0]["display"] = target.name  # the EHR (the sandbox too) shows the first coding
    return Suggestion(
        label=f"Switch to {target.name}",
        is_recommended=True,
        actions=(Action(type="update", description=f"Change the order to {target.name}", resource=resource),),
    )


def target_codings(target: Procedure, ordered_part: str | None, systems: tuple[str, ...] = (CPT, LOINC, SNOMED)
                   ) -> list[dict]:
    """The codes of the suggested study, in the first of ``systems`` the catalogue has for it: the
    order's own code system first (a SNOMED-coded order is switched to SNOMED codes), then CPT.

    Codes that carry a ``part`` name a region or a component: when the ordered code named a region,
    the same region of the new study is kept (thoracic MRI → thoracic CT myelography); otherwise all
    parts are listed (MRI abdomen + MRI pelvis make one "MRI abdomen and pelvis" study), also when the
    ordered part names no region of the new study (transabdominal ultrasound → MRI abdomen and pelvis).
    """
    primary = target.primary_code(systems)
    if primary is None:
        return []
    same_system = [c for c in target.codes if c.system == primary.system]
    parted = [c for c in same_system if c.part]
    if ordered_part and parted:
        match = next((c for c in parted if _same_region(c.part, ordered_part)), None)
        if match:
            # A required code (the myelography injection 62284) stays with the region's code:
            # without it, 72129 alone would order a CT with IV contrast.
            required = [c for c in same_system if c.required and c is not match]
            return [_coding(c, target) for c in (*required, match)]
    sides = [c for c in parted if c.part in _LATERALITY]
    if sides:  # laterality parts are alternatives, not components: one exam of both sides
        return [_coding(next((c for c in sides if c.part == "bilateral"), sides[0]), target)]
    if parted and len(parted) == len(same_system) and len({c.part for c in parted}) == len(parted):
        return [_coding(c, target) for c in parted]
    return [_coding(primary, target)]


def _coding(entry: CodeEntry, target: Procedure) -> dict:
    """A coding the EHR can show: the catalogue's display, else the study's name (CPT descriptors
    are the AMA's and are not shipped, so our own name for the study is the display)."""
    display = entry.display or target.name
    if entry.part and not entry.display:
        display = f"{target.name} ({entry.part} part)"
    return {"system": entry.system, "code": entry.code, "display": display}


def _same_region(a: str, b: str) -> bool:
    # "lumbar" (MRI) and "lumbosacral" (myelography) name the same region in different code sets.
    return a == b or a[:4] == b[:4]


def _systems_of(assessment: OrderAssessment) -> tuple[str, ...]:
    """The order's code systems (as the catalogue spells them), then CPT, LOINC and SNOMED CT."""
    ordered = [normalise_code(c.system, c.code)[0] for c in assessment.order.codes]
    return tuple(dict.fromkeys([*ordered, CPT, LOINC, SNOMED]))


def _ordered_part(assessment: OrderAssessment) -> str | None:
    if not assessment.ordered:
        return None
    ordered = {normalise_code(c.system, c.code) for c in assessment.order.codes}
    return next((c.part for c in assessment.ordered.codes
                 if c.part and normalise_code(c.system, c.code) in ordered), None)


def cancel_suggestion(assessment: OrderAssessment, *, recommended: bool = True) -> Suggestion:
    """Remove the draft order: for low-value scans, where the advice is not to image at all."""
    reference = assessment.order.reference or "ServiceRequest/unknown"
    return Suggestion(
        label="Cancel this order (no imaging now)",
        is_recommended=recommended,
        actions=(Action(type="delete", description="Remove the draft imaging order", resource_id=reference),),
    )
