"""What a clinician reads, checked over EVERY fixture response (the whole replay, every mode).

No card text — summary, detail, source label, suggestion and link labels — names a resource, says
"seed", carries an authoring note or cites anything but a primary source; summaries stay under 140
characters and details short, Markdown lists never run into the line before them, radiation levels are
ACR symbols; every suggested or rated ServiceRequest names its study (``display`` on each coding,
``code.text``) and keeps the order's reasons; a "no criteria apply" rating never comes without a card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cds_service.cards import wording
from cds_service.devtools import replay
from cds_service.kb.loader import load_knowledge

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
KNOWLEDGE = load_knowledge()

RESOURCE_ID = re.compile(r"\b(?:Patient|Condition|Observation|Procedure|ServiceRequest|DiagnosticReport|ImagingStudy|"
                         r"MedicationRequest|MedicationStatement|AllergyIntolerance|Device|Encounter|Practitioner|"
                         r"Bundle)/[A-Za-z0-9\-.]+|example-request-id|\bfx-[a-z0-9-]+")
INTERNAL = re.compile(r"\bseed\b|\bnot read\b|\btext read\b|secondary source|tiers from|reason on this order|"
                      r"\bunknown\b|\bvaries\b|docslib|\[S\d+\]|gighz|droracle", re.IGNORECASE)
MAX_DETAIL_PARAGRAPHS = 6
NON_PRIMARY = [s for s in KNOWLEDGE.sources.values() if s.kind not in wording.PRIMARY_KINDS]


@pytest.fixture(scope="module")
def results():
    found = replay.run(FIXTURES)
    assert found and all(r.response is not None for r in found if r.passed)
    return found


def _orders_of_cases() -> dict[str, dict[str, dict]]:
    """case id → order id → the draft ServiceRequest as the case sends it."""
    orders: dict[str, dict[str, dict]] = {}
    for path in [*(FIXTURES / "cases").glob("*.json"), *(FIXTURES / "realworld" / "cases").glob("*.json")]:
        case = json.loads(path.read_text(encoding="utf-8"))
        entries = case["request"]["context"].get("draftOrders", {}).get("entry", [])
        orders[path.stem] = {e["resource"].get("id"): e["resource"] for e in entries if "resource" in e}
    return orders


def _card_texts(card: dict) -> list[tuple[str, str]]:
    texts = [("summary", card["summary"]), ("detail", card.get("detail", "")),
             ("source label", card["source"]["label"])]
    texts += [("suggestion label", s["label"]) for s in card.get("suggestions", [])]
    texts += [("action description", a["description"]) for s in card.get("suggestions", []) for a in s["actions"]]
    texts += [("link label", link["label"]) for link in card.get("links", [])]
    return texts


def _problems_in_card(card: dict) -> list[str]:
    problems = []
    for where, text in _card_texts(card):
        for pattern, what in ((RESOURCE_ID, "resource id"), (INTERNAL, "internal note")):
            found = pattern.findall(text)
            if found:
                problems.append(f"{where} shows {what} {sorted(set(found))}: {text[:120]!r}")
        for source in NON_PRIMARY:
            if source.title in text or (source.url and source.url in text):
                problems.append(f"{where} cites non-primary source {source.id}")
    urls = [card["source"].get("url", "")] + [link["url"] for link in card.get("links", [])]
    problems += [f"links to non-primary source {s.id}" for s in NON_PRIMARY if s.url and s.url in urls]
    if len(card["summary"]) >= 140:
        problems.append(f"summary has {len(card['summary'])} characters")
    detail = card.get("detail", "")
    paragraphs = [p for p in detail.split("\n\n") if p.strip()]
    if len(paragraphs) > MAX_DETAIL_PARAGRAPHS or "|---" in detail:
        problems.append(f"detail is {len(paragraphs)} paragraphs (a table?)")
    for before, line in zip(detail.splitlines(), detail.splitlines()[1:]):
        if line.lstrip().startswith("- ") and before.strip() and not before.lstrip().startswith("- "):
            problems.append(f"list runs into the line before it: {before[:60]!r}")
    if re.search(r":\*\* - ", detail):
        problems.append("a list item is written inline after a heading")
    return problems


def _problems_in_order(resource: dict, sent: dict | None, where: str) -> list[str]:
    problems = []
    code = resource.get("code") or {}
    if not (isinstance(code.get("text"), str) and code["text"].strip()):
        problems.append(f"{where}: code.text is not set")
    for coding in code.get("coding") or []:
        if not coding.get("display"):
            problems.append(f"{where}: coding {coding.get('code')} has no display")
    if sent is not None and resource.get("reasonCode") != sent.get("reasonCode"):
        problems.append(f"{where}: the order's reasons were not kept")
    return problems


def test_no_card_text_in_any_fixture_response_shows_ids_notes_or_secondary_sources(results):
    failures = []
    for result in results:
        for index, card in enumerate((result.response or {}).get("cards", [])):
            failures += [f"{result.case} [{result.mode}] card {index}: {p}" for p in _problems_in_card(card)]
    assert not failures, "\n".join(failures)


def test_every_suggested_and_rated_order_names_its_study_and_keeps_its_reasons(results):
    orders = _orders_of_cases()
    failures, switches = [], 0
    for result in results:
        response = result.response or {}
        for action in (response.get("extension") or {}).get("systemActions", []):
            sent = orders[result.case].get(action["resource"].get("id"))
            failures += _problems_in_order(action["resource"], sent, f"{result.case} [{result.mode}] rating")
        for card in response.get("cards", []):
            for suggestion in card.get("suggestions", []):
                for action in suggestion["actions"]:
                    if action["type"] != "update":
                        continue
                    switches += 1
                    sent = orders[result.case].get(action["resource"].get("id"))
                    failures += _problems_in_order(action["resource"], sent, f"{result.case} [{result.mode}] switch")
    assert switches > 10, "the fixtures exercise switch suggestions"
    assert not failures, "\n".join(failures)


def test_low_value_scans_offer_a_labelled_cancel_and_no_criteria_apply_is_always_explained(results):
    cancels = 0
    for result in results:
        response = result.response or {}
        for card in response.get("cards", []):
            for suggestion in card.get("suggestions", []):
                if any(a["type"] == "delete" for a in suggestion["actions"]):
                    cancels += 1
                    assert "Cancel this order" in suggestion["label"], suggestion["label"]
                    assert card["summary"].startswith("Low-value scan"), card["summary"]
        unrated = [r for r in replay.ratings(response).values() if r.get("pama") == "no-criteria-apply"]
        if unrated and any(_has_alternative(result.case, r["scenario"]) for r in unrated):
            assert response["cards"], f"{result.case} [{result.mode}]: no-criteria-apply without a card"
    assert cancels > 0


def _has_alternative(case_id: str, scenario_id: str) -> bool:
    """Whether the scenario names the ordered study and prefers some study: then "no criteria apply"
    must come with a card naming it. A study outside the scenario's question (a CT for abdominal
    pain in a breast cancer survivor) or nothing to prefer (mammography after bilateral mastectomy)
    gets only the rating: say less when unsure (docs/clinical-scenarios.md)."""
    from cds_service.chart.facts import Code

    kb = load_knowledge()
    scenario = next(s for s in kb.scenarios if s.id == scenario_id)
    codes = tuple(Code(c["system"], c["code"]) for order in _orders_of_cases()[case_id].values()
                  for c in order.get("code", {}).get("coding", []) if c.get("system") and c.get("code"))
    named = {p.id for p in kb.procedures_for(codes)} & set(kb.compiled.procedures_of[scenario.id])
    return bool(named) and bool(scenario.preferred)
