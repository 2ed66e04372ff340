"""The machine-readable rating of each order: an ``update`` of its ServiceRequest carrying the
Argonaut PAMA extensions (rating, consult id, qualified CDS mechanism consulted, AUC applied)."""

from __future__ import annotations

from cds_service import codes
from cds_service.hooks.response import Action, JsonObject, without_nulls
from cds_service.kb.model import Appropriateness, Procedure, Scenario, normalise_code
from cds_service.reasoning.assessment import OrderAssessment, Outcome


def pama_code_of(assessment: OrderAssessment) -> str:
    if assessment.outcome is Outcome.RATED and assessment.rating:
        return assessment.rating.rating.pama_code
    return "no-criteria-apply"


def rating_extensions(
    rating: Appropriateness | None, scenario: Scenario | None, qcdsm_id: str, consult_id: str
) -> list[dict]:
    """The Argonaut PAMA extensions; the Argonaut coding comes first (the sandbox shows coding[0])."""
    coding = [{"system": codes.PAMA_RATING_SYSTEM, "code": rating.pama_code if rating else "no-criteria-apply"}]
    if rating:
        coding.append({"system": codes.APPROPRIATENESS_SYSTEM, "code": rating.value, "display": rating.label})
    extensions = [
        {"url": codes.PAMA_RATING, "valueCodeableConcept": {"coding": coding}},
        {"url": codes.PAMA_QCDSM_CONSULTED, "valueString": qcdsm_id},
        {"url": codes.PAMA_CONSULT_ID, "valueUri": consult_id},
    ]
    if scenario:
        extensions.append({"url": codes.PAMA_AUC_APPLIED, "valueUri": f"{codes.AUC_APPLIED_BASE}/{scenario.id}"})
    return extensions


def with_extensions(resource: dict, extensions: list[dict]) -> JsonObject:
    """A copy of ``resource`` whose earlier PAMA extensions are replaced by ``extensions``."""
    updated = without_nulls(resource)  # a copy: the response never writes into the request
    earlier = updated.get("extension")
    # An ``extension`` that is not an array of objects is not FHIR: it is left out of the answer
    # (the chart reader noted it), never iterated (a string would become one item per character).
    earlier = [e for e in earlier if isinstance(e, dict)] if isinstance(earlier, list) else []
    kept = [e for e in earlier if e.get("url") not in codes.PAMA_EXTENSIONS]
    updated["extension"] = kept + extensions
    return updated


def rating_action(assessment: OrderAssessment, qcdsm_id: str, consult_id: str) -> Action:
    rating = assessment.rating.rating if assessment.outcome is Outcome.RATED and assessment.rating else None
    extensions = rating_extensions(rating, assessment.scenario, qcdsm_id, consult_id)
    label = rating.label if rating else "no criteria apply"
    resource = with_extensions(assessment.order.resource, extensions)
    if assessment.ordered is not None:
        name_the_study(resource, assessment.ordered)
    return Action(
        type="update",
        description=f"Attach appropriateness rating ({label}) to the order",
        resource=resource,
    )


def name_the_study(resource: dict, procedure: Procedure) -> None:
    """Give the (copied) order's code a ``text`` and its catalogue codings a ``display`` where the
    order had none, so an EHR that redraws the order from this update still shows the study's name."""
    code = resource.get("code")
    if not isinstance(code, dict):
        return
    if not (isinstance(code.get("text"), str) and code["text"].strip()):
        code["text"] = procedure.name
    ours = {normalise_code(entry.system, entry.code) for entry in procedure.codes}
    for coding in code.get("coding") or []:
        if not isinstance(coding, dict) or (isinstance(coding.get("display"), str) and coding["display"].strip()):
            continue
        system, value = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(value, str) and normalise_code(system, value) in ours:
            coding["display"] = procedure.name
