"""Build small :class:`Knowledge` objects and chart facts for reasoning tests and benchmarks.

``knowledge_from_dicts`` takes Python dicts shaped like the JSON files of docs/knowledge.md, so a
test reads like knowledge an author would write, without depending on the loader or the shipped
data. Codes need no ``source``/``confidence`` here (the loader, not the engine, checks those).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Iterable

from cds_service.chart.facts import ChartFacts, ClinicalFact, Code, DraftOrder, FactKind
from cds_service.kb.model import (
    CPT,
    ICD10CM,
    LOINC,
    SNOMED,
    Appropriateness,
    CodeEntry,
    Contraindication,
    Knowledge,
    Preference,
    Procedure,
    RadiationLevel,
    Recommendation,
    Scenario,
    ScenarioRating,
    SurveillanceSchedule,
    ValueSet,
    normalise_code,
)

TODAY = date(2026, 11, 21)

SYSTEMS = {"cpt": CPT, "loinc": LOINC, "sct": SNOMED, "icd": ICD10CM}


def _system(name: str) -> str:
    return SYSTEMS.get(name, name)


def _entry(raw: dict[str, Any]) -> CodeEntry:
    return CodeEntry(
        system=_system(raw["system"]),
        code=raw["code"],
        source=raw.get("source", "test"),
        confidence=raw.get("confidence", "verified"),
        display=raw.get("display"),
        part=raw.get("part"),
    )


def procedure(raw: dict[str, Any]) -> Procedure:
    return Procedure(
        id=raw["id"],
        name=raw.get("name", raw["id"]),
        modality=raw.get("modality", "MR"),
        body_region=raw.get("body_region", "pelvis"),
        contrast=raw.get("contrast", "none"),
        radiation=RadiationLevel(raw.get("radiation", {}).get("level", "O")),
        codes=tuple(_entry(code) for code in raw["codes"]),
        requires=tuple(raw.get("requires", ())),
        category=raw.get("category", "imaging"),
    )


def valueset(raw: dict[str, Any]) -> ValueSet:
    entries = tuple(_entry(code) for code in raw.get("codes", ()))
    return ValueSet(
        id=raw["id"],
        title=raw.get("title", raw["id"]),
        codes=frozenset(normalise_code(e.system, e.code) for e in entries),
        prefixes=tuple(normalise_code(_system(p["system"]), p["prefix"]) for p in raw.get("prefixes", ())),
        entries=entries,
    )


def scenario(raw: dict[str, Any]) -> Scenario:
    surveillance = raw.get("surveillance")
    return Scenario(
        id=raw["id"],
        title=raw.get("title", raw["id"]),
        phase=raw.get("phase", "suspected-recurrence"),
        cancer_site=raw.get("cancer_site", "test"),
        priority=raw.get("priority", 0),
        when=raw["when"],
        ratings=tuple(
            ScenarioRating(
                procedure=r["procedure"],
                rating=Appropriateness(r["rating"]),
                sources=tuple(r.get("sources", ("test",))),
                confidence=r.get("confidence", "seed"),
                when=r.get("when"),
            )
            for r in raw.get("ratings", ())
        ),
        preferred=tuple(
            Preference(p["procedure"], p.get("when"), Appropriateness(p.get("min_rating", "usually-appropriate")))
            for p in raw.get("preferred", ())
        ),
        sources=tuple(raw.get("sources", ("test",))),
        low_value_surveillance=raw.get("low_value_surveillance", False),
        surveillance=None
        if surveillance is None
        else SurveillanceSchedule(
            procedures=tuple(surveillance["procedures"]),
            anchor=surveillance["anchor"],
            intervals=tuple((i.get("until_month"), i["every_months"]) for i in surveillance["intervals"]),
            tolerance_days=surveillance.get("tolerance_days", 14),
        ),
        recommendations=tuple(
            Recommendation(
                id=r["id"],
                when=r["when"],
                summary=r.get("summary", r["id"]),
                detail=r.get("detail", ""),
                indicator=r.get("indicator", "info"),
                sources=tuple(r.get("sources", ("test",))),
                suggest=r.get("suggest"),
                applies_to=tuple(r.get("applies_to", ())),
            )
            for r in raw.get("recommendations", ())
        ),
    )


def knowledge_from_dicts(
    *,
    procedures: Iterable[dict] = (),
    valuesets: Iterable[dict] = (),
    definitions: dict[str, Any] | None = None,
    contraindications: Iterable[dict] = (),
    scenarios: Iterable[dict] = (),
) -> Knowledge:
    catalogue = {p.id: p for p in map(procedure, procedures)}
    index: dict[tuple[str, str], tuple[Procedure, ...]] = {}
    for item in catalogue.values():
        for code in item.codes:
            key = normalise_code(code.system, code.code)
            index[key] = (*index.get(key, ()), item)
    built = [scenario(raw) for raw in scenarios]
    return Knowledge(
        version="test",
        sources={},
        procedures=catalogue,
        valuesets={v.id: v for v in map(valueset, valuesets)},
        definitions=dict(definitions or {}),
        contraindications=tuple(
            Contraindication(
                id=c["id"], label=c.get("label", c["id"]), blocks=tuple(c["blocks"]), when=c["when"], sources=("test",),
                severity=c.get("severity", "block"),
            )
            for c in contraindications
        ),
        scenarios=tuple(sorted(built, key=lambda s: -s.priority)),
        override_reasons={},
        code_index=index,
    )


# -- facts -----------------------------------------------------------------------------------------

_counter = iter(range(1, 10**9))


def days_ago(n: int) -> date:
    return TODAY - timedelta(days=n)


def fact(
    kind: FactKind,
    system: str,
    code: str,
    *,
    ago: int | None = 0,
    on: date | None = None,
    source: str | None = None,
    **fields: Any,
) -> ClinicalFact:
    """A fact dated ``ago`` days before TODAY (``ago=None`` and no ``on``: undated)."""
    when = on if on is not None else (None if ago is None else days_ago(ago))
    resource = {
        FactKind.CONDITION: "Condition",
        FactKind.ORDER_REASON: "ServiceRequest",
        FactKind.PROCEDURE: "Procedure",
        FactKind.MEDICATION: "MedicationRequest",
        FactKind.OBSERVATION: "Observation",
        FactKind.DEVICE: "Device",
        FactKind.ALLERGY: "AllergyIntolerance",
        FactKind.IMAGING: "ImagingStudy",
        FactKind.FINDING: "DiagnosticReport",
    }[kind]
    return ClinicalFact(
        kind=kind,
        codes=(Code(_system(system), code),),
        source=source or f"{resource}/{next(_counter)}",
        date=when,
        **fields,
    )


def condition(system: str, code: str, *, ago: int | None = 0, status: str | None = "active", **kw) -> ClinicalFact:
    return fact(FactKind.CONDITION, system, code, ago=ago, status=status, **kw)


def order_reason(system: str, code: str, **kw) -> ClinicalFact:
    return fact(FactKind.ORDER_REASON, system, code, **kw)


def procedure_done(system: str, code: str, *, ago: int | None = 0, status: str | None = "completed", **kw) -> ClinicalFact:
    return fact(FactKind.PROCEDURE, system, code, ago=ago, status=status, **kw)


def observation(system: str, code: str, value: float | None = None, *, ago: int | None = 0, **kw) -> ClinicalFact:
    return fact(FactKind.OBSERVATION, system, code, ago=ago, value=value, status=kw.pop("status", "final"), **kw)


def imaging(system: str, code: str, *, ago: int | None = 0, **kw) -> ClinicalFact:
    return fact(FactKind.IMAGING, system, code, ago=ago, status=kw.pop("status", "available"), **kw)


def chart(*facts: ClinicalFact, today: date = TODAY) -> ChartFacts:
    return ChartFacts(facts=tuple(facts), today=today)


def draft_order(*codes: tuple[str, str], reasons: tuple[tuple[str, str], ...] = (), resource_id: str = "order-1") -> DraftOrder:
    return DraftOrder(
        resource={"resourceType": "ServiceRequest", "id": resource_id, "status": "draft"},
        resource_id=resource_id,
        codes=tuple(Code(_system(s), c) for s, c in codes),
        reason_codes=tuple(Code(_system(s), c) for s, c in reasons),
    )
