"""Words a clinician reads: radiation levels, the verification flag, the scenario's ACR provenance and
its primary sources. Shared by the cards and the evidence page, so both say the same thing the same way.

Knowledge files carry authoring notes next to the facts (where a variant's wording came from, which
table could not be read, the scope documents behind a rating); none of that reaches a clinician.
Only primary sources are cited: ACR Appropriateness Criteria topics and published guidelines.
"""

from __future__ import annotations

import re
from typing import Iterable

from cds_service.kb.model import Knowledge, Procedure, Scenario, Source

#: Source kinds a clinician is shown: the ACR criteria and published guidelines. Scope documents,
#: explainer websites, reviews and code datasets stay in the knowledge files and the audit.
PRIMARY_KINDS = frozenset({"acr-ac", "guideline"})
#: Rating confidences confirmed against the published table or guideline text.
VERIFIED = frozenset({"verified"})
NOT_VERIFIED = "not yet verified against the ACR table"
EVIDENCE_PATH = "/evidence"

_ACR_SYMBOLS = re.compile(r"^(O|☢{1,5})$")
#: Authoring notes in brackets: "(text read; ratings not read)", "(variant wording from a secondary source)".
_AUTHORING_NOTE = re.compile(r"\s*\([^()]*\b(?:read|seed|secondary|retrieved|wording)\b[^()]*\)", re.IGNORECASE)
_INTERNAL_WORDS = re.compile(r"\bseed\b|\bno ACR (?:imaging )?variant\b", re.IGNORECASE)


def radiation(procedure: Procedure) -> str | None:
    """The ACR relative radiation level as its symbol ("O", "☢☢☢"), or None when not recorded as one."""
    level = procedure.radiation.level
    return level if _ACR_SYMBOLS.match(level) else None


def radiation_words(procedure: Procedure) -> str:
    """"radiation ☢☢☢" / "no ionising radiation (O)"; empty when the level is not known as a symbol."""
    level = radiation(procedure)
    if level is None:
        return ""
    return "no ionising radiation (O)" if level == "O" else f"radiation {level}"


def is_verified(confidence: str) -> bool:
    return confidence in VERIFIED


def without_notes(text: str | None) -> str:
    """Knowledge text without the authoring notes in brackets."""
    return _AUTHORING_NOTE.sub("", text).strip() if text else ""


def clinical_text(text: str | None) -> str:
    """Knowledge text without its authoring notes; empty when what is left is itself a note."""
    cleaned = without_notes(text)
    return "" if _INTERNAL_WORDS.search(cleaned) else cleaned


def acr_provenance(scenario: Scenario) -> str:
    """"ACR Appropriateness Criteria: <topic>; <variant>", or "" when the scenario has no ACR topic."""
    topic = clinical_text(scenario.acr_topic)
    if not topic:
        return ""
    variant = clinical_text(scenario.variant)
    return f"ACR Appropriateness Criteria: {topic}" + (f"; {variant}" if variant else "")


def primary_sources(source_ids: Iterable[str], knowledge: Knowledge) -> list[Source]:
    """The primary sources among ``source_ids``, each once, in the given order."""
    found: list[Source] = []
    for source_id in source_ids:
        source = knowledge.sources.get(source_id)
        if source is not None and source.kind in PRIMARY_KINDS and source not in found:
            found.append(source)
    return found


def source_markdown(source: Source) -> str:
    return f"[{source.title}]({source.url})" if source.url else source.title


def evidence_url(base_url: str, scenario_id: str) -> str:
    """Absolute address of the scenario's evidence page (no patient data, no login)."""
    return f"{base_url.rstrip('/')}{EVIDENCE_PATH}/{scenario_id}"
