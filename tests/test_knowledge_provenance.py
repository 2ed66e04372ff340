"""Provenance and clean wording of the shipped knowledge, checked on the files themselves.

Every catalogue code names a code list a reader can open (a value-set expansion, a code dataset, a
specification or a coding reference with its address), never a scope document or a rating source.
A radiation level given as an ACR symbol cites the ACR document that rates it; a level with no source
stays "unknown". And what a clinician reads from the knowledge (titles, summaries, advice, labels, the
ACR topic and variant, recommendation texts, rating notes, source titles on links) carries no authoring
note: authors' remarks live in ``author_note``, which nothing shows. The display layer's note
stripping (cds_service/cards/wording.py) is a safety net, not the place where the text gets clean.
"""

from __future__ import annotations

import re

import pytest

from cds_service.cards import wording
from cds_service.kb.loader import load_knowledge
from cds_service.kb.model import Knowledge

#: Source kinds that list codes with their meaning.
CODE_LIST_KINDS = frozenset({"code-dataset", "specification"})
#: Where a relative radiation level may come from: an ACR document, or a scope document that states it
#: (listed in docs/knowledge.md as waiting for the ACR row).
RADIATION_SOURCE_KINDS = frozenset({"acr-ac", "seed"})
#: Words and marks that belong to authors, not clinicians: scope-document jargon, reading status,
#: internal document numbers and the names of secondary websites.
AUTHORING = re.compile(
    r"\bseeds?\b|\btext read\b|\bnot read\b|\bratings? read\b|\bTODO\b|\bFIXME\b|\bXXX\b|secondary source|"
    r"not retrieved|\bwording\b|tiers? from|\bper seed\b|\[S\d+[a-z]?\]|\btopic \d+|TopicId|gravitas|"
    r"docslib|gighz|droracle|clinical-knowledge\.md|shared/seeds",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return load_knowledge()


def _clinician_texts(kb: Knowledge) -> list[tuple[str, str]]:
    """(where, text) for every knowledge string that reaches a card, a suggestion or an evidence page."""
    texts = [(f"procedure {p.id} name", p.name) for p in kb.procedures.values()]
    texts += [(f"contraindication {c.id} label", c.label) for c in kb.contraindications]
    texts += [(f"override reason {o.code}", o.display) for o in kb.override_reasons.values()]
    texts += [(f"value set {v.id} title", v.title) for v in kb.valuesets.values()]
    texts += [(f"source {s.id} title", s.title) for s in kb.sources.values() if s.kind in wording.PRIMARY_KINDS]
    for s in kb.scenarios:
        for field in ("title", "summary", "acr_topic", "variant"):
            value = getattr(s, field)
            if value:
                texts.append((f"scenario {s.id} {field}", value))
        texts += [(f"scenario {s.id} advice line", line) for line in (s.advice or "").splitlines() if line.strip()]
        texts += [(f"scenario {s.id} rating {r.procedure} note", r.note) for r in s.ratings if r.note]
        for r in s.recommendations:
            texts += [(f"scenario {s.id} recommendation {r.id} summary", r.summary),
                      (f"scenario {s.id} recommendation {r.id} detail", r.detail)]
    return texts


def test_clinician_visible_knowledge_text_carries_no_authoring_note(kb: Knowledge):
    texts = _clinician_texts(kb)
    assert len(texts) > 200   # the walk reaches the whole knowledge base
    problems = [f"{where}: {AUTHORING.findall(text)} in {text[:100]!r}" for where, text in texts
                if AUTHORING.search(text)]
    # A bracketed remark that the card layer would cut out of a scenario text is a note left in the data.
    problems += [f"{where}: bracketed note {text[:100]!r}" for where, text in texts
                 if where.startswith("scenario") and wording.without_notes(text) != text.strip()]
    assert not problems, "\n".join(problems)


def test_the_authoring_words_are_recognised():
    """The pattern catches the notes this test exists for (a check that cannot fail is no check)."""
    for note in ("tiers from the seed", "(text read; ratings not read)", "variant wording from a secondary source",
                 "Imaging of Invasive Breast Cancer (topic 310)", "ACR value not retrieved", "TODO: check", "[S8]"):
        assert AUTHORING.search(note), note
    for clean in ("Metastatic (secondary) cancer", "Variant 10: surveillance for distant metastatic disease",
                  "Radiographs of the treated area come first"):
        assert not AUTHORING.search(clean), clean


def test_every_catalogue_code_cites_a_code_list(kb: Knowledge):
    problems = []
    for procedure in kb.procedures.values():
        for code in procedure.codes:
            source = kb.sources.get(code.source)
            where = f"{procedure.id} {code.code} ({code.source})"
            if source is None:
                problems.append(f"{where}: no such source")
            elif source.kind not in CODE_LIST_KINDS and not (source.kind == "review" and source.url):
                problems.append(f"{where}: cites a {source.kind}, not a code list")
            elif not source.citation.strip():
                problems.append(f"{where}: the source says nowhere where it is")
    assert not problems, "\n".join(problems)


def test_an_acr_radiation_symbol_cites_the_acr_document_that_rates_it(kb: Knowledge):
    problems = []
    for procedure in kb.procedures.values():
        radiation = procedure.radiation
        if wording.radiation(procedure) is None:
            continue
        source = kb.sources.get(radiation.source or "")
        if source is None or source.kind not in RADIATION_SOURCE_KINDS:
            problems.append(f"{procedure.id}: {radiation.level} cites {radiation.source!r}, not an ACR document")
    assert not problems, "\n".join(problems)
