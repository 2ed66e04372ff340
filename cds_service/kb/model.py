"""The knowledge base as typed, immutable values: procedures, value sets, scenarios.

This module knows no HTTP and no FHIR transport. The data lives in ``knowledge/`` (installed as
``cds_service.knowledge_data``) and is validated against ``knowledge/schema/knowledge.schema.json``
when loaded; see docs/knowledge.md for the authoring guide. Criteria inside scenarios stay as the
JSON the author wrote (``Criterion`` = dict) and are interpreted by ``reasoning.criteria``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

from cds_service.chart.facts import Code
from cds_service.kb.grammar import Criterion  # noqa: F401  (re-exported: the model's criterion type)


CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
#: NCI Thesaurus (HL7 Terminology CodeSystem v3-nciThesaurus); FHIR R4's device-safety value set
#: writes it by its OID, folded below.
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"

#: Other spellings of the systems above seen in real data, folded when codes are compared.
SYSTEM_ALIASES = {
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "http://www.ama-assn.org/go/cpt/": CPT,
    "urn:oid:2.16.840.1.113883.3.26.1.1": NCIT,
}


def normalise_code(system: str, code: str) -> tuple[str, str]:
    """Fold system aliases; ICD-10 codes compare without dots and in upper case."""
    system = SYSTEM_ALIASES.get(system, system)
    code = code.strip()
    if system == ICD10CM:
        code = code.replace(".", "").upper()
    return system, code


class Appropriateness(str, Enum):
    """ACR Appropriateness Criteria rating tiers."""

    USUALLY_APPROPRIATE = "usually-appropriate"
    MAY_BE_APPROPRIATE = "may-be-appropriate"
    USUALLY_NOT_APPROPRIATE = "usually-not-appropriate"

    @property
    def label(self) -> str:
        return {
            "usually-appropriate": "Usually Appropriate",
            "may-be-appropriate": "May Be Appropriate",
            "usually-not-appropriate": "Usually Not Appropriate",
        }[self.value]

    @property
    def pama_code(self) -> str:
        """Argonaut PAMA rating: both appropriate tiers map to ``appropriate``."""
        return "not-appropriate" if self is Appropriateness.USUALLY_NOT_APPROPRIATE else "appropriate"

    @property
    def rank(self) -> int:
        return {"usually-appropriate": 3, "may-be-appropriate": 2, "usually-not-appropriate": 1}[self.value]


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    citation: str
    kind: str                        # acr-ac | guideline | seed | code-dataset | specification | review
    url: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class CodeEntry:
    system: str
    code: str
    source: str                      # Source.id
    confidence: str                  # verified | secondary  (unverified codes are not shipped)
    display: str | None = None
    part: str | None = None          # for multi-code studies: which component this code bills
    #: The order must carry a required code of the study to mean it (62284, the injection, makes
    #: 72126 a CT myelogram rather than a CT with IV contrast).
    required: bool = False


@dataclass(frozen=True)
class RadiationLevel:
    level: str                       # "O", "☢", "☢☢", "☢☢☢", "☢☢☢☢", "☢☢☢☢☢", "varies", "unknown"
    source: str | None = None
    adult_dose: str | None = None    # e.g. "10-30 mSv"


@dataclass(frozen=True)
class Procedure:
    """One imaging study (or image-guided procedure) of the catalogue."""

    id: str                          # "mri-abdomen-pelvis-wo-w"
    name: str                        # "MRI abdomen and pelvis without and with IV contrast"
    modality: str                    # MR | CT | PET-CT | NM | US | XR | MG | CT-myelography | procedure
    body_region: str
    contrast: str                    # none | with | without-and-with | intrathecal | not-applicable
    radiation: RadiationLevel
    codes: tuple[CodeEntry, ...]
    #: What the study needs, matched against contraindications' ``blocks``: e.g. ("mri", "gadolinium"),
    #: ("iodinated-contrast",), ("ionising-radiation",).
    requires: tuple[str, ...] = ()
    #: Kind of order this is, e.g. "imaging" or "biopsy" (non-imaging suggestions).
    category: str = "imaging"

    def primary_code(self, preferred_systems: tuple[str, ...] = (CPT, LOINC, SNOMED)) -> CodeEntry | None:
        for system in preferred_systems:
            for entry in self.codes:
                if entry.system == system:
                    return entry
        return self.codes[0] if self.codes else None


@dataclass(frozen=True)
class ValueSet:
    id: str
    title: str
    codes: frozenset[tuple[str, str]]              # normalised (system, code)
    prefixes: tuple[tuple[str, str], ...] = ()     # normalised (system, code prefix), ICD-10-CM hierarchies
    entries: tuple[CodeEntry, ...] = ()            # as authored, with sources (for docs and audits)
    #: Never members, whatever the codes, prefixes or expansions say (normalised): Z85.048 under a
    #: "history of rectal cancer" prefix, a benign lesion in a published expansion.
    excluded_codes: frozenset[tuple[str, str]] = frozenset()
    excluded_prefixes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # The prefixes grouped by system, for the criteria evaluator's look-ups (not a field).
        by_system: dict[str, tuple[str, ...]] = {}
        for system, prefix in self.prefixes:
            by_system[system] = (*by_system.get(system, ()), prefix)
        object.__setattr__(self, "prefixes_by_system", by_system)

    def excludes(self, key: tuple[str, str]) -> bool:
        """Whether a normalised (system, code) is explicitly kept out of this value set."""
        if key in self.excluded_codes:
            return True
        system, value = key
        return any(system == p_system and value.startswith(p_code) for p_system, p_code in self.excluded_prefixes)

    def contains(self, code: Code) -> bool:
        key = normalise_code(code.system, code.code)
        if self.excludes(key):
            return False
        system, value = key
        if key in self.codes:
            return True
        return any(system == p_system and value.startswith(p_code) for p_system, p_code in self.prefixes)

    def contains_any(self, codes: tuple[Code, ...]) -> bool:
        return any(self.contains(c) for c in codes)


@dataclass(frozen=True)
class Contraindication:
    """A patient state that rules out what some studies need (``blocks``), found by ``when``."""

    id: str                          # "mri-unsafe-device"
    label: str                       # "Implanted cardiac device: MR-safety review needed"
    blocks: tuple[str, ...]          # e.g. ("mri",) or ("gadolinium",)
    when: Criterion
    sources: tuple[str, ...]
    #: ``block`` (default): the state rules the requirement out. ``caution``: shown to the clinician,
    #: the study stays possible (e.g. pregnancy and ionising radiation). An engine that ignores this
    #: field treats every contraindication as ``block``.
    severity: str = "block"
    #: What to do about it, own words, shown with the label on the card (a caution names the
    #: alternative here: "use a group II agent").
    advice: str | None = None


@dataclass(frozen=True)
class ScenarioRating:
    procedure: str                   # Procedure.id
    rating: Appropriateness
    sources: tuple[str, ...]
    confidence: str                  # verified | secondary | seed
    when: Criterion | None = None    # rating applies only when this holds (e.g. symptom-directed)
    note: str | None = None


@dataclass(frozen=True)
class Preference:
    """The study to recommend, in order; the first whose ``when`` holds and that is not blocked wins."""

    procedure: str
    when: Criterion | None = None
    #: Lowest rating this candidate may have and still be recommended. The default keeps the rule
    #: "only Usually Appropriate studies are recommended"; ``MAY_BE_APPROPRIATE`` marks a fallback
    #: the guideline names for when the better studies are blocked (CT myelography when MRI cannot
    #: be done). An engine that ignores this field simply skips such fallbacks.
    min_rating: Appropriateness = Appropriateness.USUALLY_APPROPRIATE


@dataclass(frozen=True)
class SurveillanceSchedule:
    """Expected spacing of surveillance studies, counted from the anchor (usually end of treatment)."""

    procedures: tuple[str, ...]      # studies that count as "the surveillance scan"
    anchor: Criterion                # criterion whose latest matching fact's date is month 0
    intervals: tuple[tuple[int | None, int], ...]   # (until_month or None=thereafter, every_months)
    tolerance_days: int = 14
    source: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    """Advice beyond the rating table (e.g. biopsy before more imaging), shown as its own card."""

    id: str
    when: Criterion
    summary: str
    detail: str
    indicator: str                   # info | warning
    sources: tuple[str, ...]
    suggest: str | None = None       # Procedure.id to offer as a replacement order
    applies_to: tuple[str, ...] = ()   # ordered Procedure.ids this applies to; empty = any


@dataclass(frozen=True)
class Scenario:
    """One clinical scenario (guideline variant) with the ratings of the studies it lists."""

    id: str
    title: str
    phase: str                       # suspected-recurrence | routine-surveillance | staging | ...
    cancer_site: str
    priority: int
    when: Criterion
    ratings: tuple[ScenarioRating, ...]
    preferred: tuple[Preference, ...]
    sources: tuple[str, ...]
    acr_topic: str | None = None
    variant: str | None = None
    summary: str = ""                # one line, own words, shown in card detail
    advice: str = ""                 # next-step advice (Markdown, own words)
    low_value_surveillance: bool = False   # UNA orders here are low-value scans: suggest cancelling
    surveillance: SurveillanceSchedule | None = None
    recommendations: tuple[Recommendation, ...] = ()
    override_reasons: tuple[str, ...] = ()  # OverrideReason.code values offered on this scenario's cards
    #: Studies this scenario answers for without rating them: ordering one gets "no criteria apply"
    #: and the scenario's recommended study (e.g. a PET/CT ordered for a new headache → MRI brain).
    covers: tuple[str, ...] = ()
    #: Value set of order reasons that say an order is about this scenario's cancer, and the body
    #: regions its question concerns: how the engine tells two cancers of one patient apart.
    order_reasons: str | None = None
    regions: tuple[str, ...] = ()


@dataclass(frozen=True)
class OverrideReason:
    code: str
    display: str


_MAX_REMEMBERED_CODES = 50_000


@dataclass(frozen=True)
class Knowledge:
    version: str
    sources: Mapping[str, Source]
    procedures: Mapping[str, Procedure]
    valuesets: Mapping[str, ValueSet]
    definitions: Mapping[str, Criterion]
    contraindications: tuple[Contraindication, ...]
    scenarios: tuple[Scenario, ...]              # sorted by priority, highest first
    override_reasons: Mapping[str, OverrideReason]
    #: (system, code) → procedures carrying that code, built by the loader.
    code_index: Mapping[tuple[str, str], tuple[Procedure, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Value sets by member code, and those with prefixes by system: each distinct code of a
        # chart is looked up once (see valuesets_with) instead of every value set scanning the
        # chart. Built once; the answers are remembered by code as written, because a chart
        # repeats the same few codes (bounded: the codes come from requests).
        by_code: dict[tuple[str, str], list[str]] = {}
        with_prefixes: dict[str, list[ValueSet]] = {}
        for valueset in self.valuesets.values():
            for key in valueset.codes:
                by_code.setdefault(key, []).append(valueset.id)
            for system in valueset.prefixes_by_system:
                with_prefixes.setdefault(system, []).append(valueset)
        object.__setattr__(self, "_valuesets_by_code", {key: tuple(ids) for key, ids in by_code.items()})
        object.__setattr__(self, "_valuesets_with_prefixes", {s: tuple(v) for s, v in with_prefixes.items()})
        object.__setattr__(self, "_code_answers", {})
        object.__setattr__(
            self, "_with_exclusions",
            any(v.excluded_codes or v.excluded_prefixes for v in self.valuesets.values()),
        )
        from cds_service.kb.compiled import CompiledKnowledge  # the compiled form builds on this model

        object.__setattr__(self, "compiled", CompiledKnowledge(self.scenarios, self.definitions, self.contraindications))

    def valuesets_with(self, system: str, code: str) -> tuple[str, ...]:
        """Ids of the value sets that contain this code (as members or under a prefix)."""
        return self._answer(system, code)[0]

    def knows_code(self, system: str, code: str) -> bool:
        """Whether any value set or catalogue entry names this code.

        A chart fact none of whose codes is known can never satisfy a criterion, so the chart
        reader may drop it (most of a real chart's labs and problems are such facts).
        """
        return self._answer(system, code)[1]

    def _answer(self, system: str, code: str) -> tuple[tuple[str, ...], bool]:
        answers = self._code_answers
        answer = answers.get((system, code))
        if answer is None:
            key = normalise_code(system, code)
            ids = self._valuesets_by_code.get(key, ())
            for valueset in self._valuesets_with_prefixes.get(key[0], ()):
                if key[1].startswith(valueset.prefixes_by_system[key[0]]) and valueset.id not in ids:
                    ids = (*ids, valueset.id)
            if ids and self._with_exclusions:
                ids = tuple(vid for vid in ids if not self.valuesets[vid].excludes(key))
            # Catalogue codes count too: prior imaging is matched against the catalogue.
            answer = (ids, bool(ids) or key in self.code_index)
            if len(answers) < _MAX_REMEMBERED_CODES:
                answers[(system, code)] = answer
        return answer

    def procedures_for(self, codes: tuple[Code, ...]) -> tuple[Procedure, ...]:
        """Catalogue entries matching any of the order's codes, without duplicates, in code order."""
        found: list[Procedure] = []
        for code in codes:
            for procedure in self.code_index.get(normalise_code(code.system, code.code), ()):
                if procedure not in found:
                    found.append(procedure)
        return tuple(found)
