"""A scenario's criteria in plain words: the rules that put a patient in it, as nested lists.

Criteria are the JSON the knowledge author wrote (see docs/knowledge.md); each operator becomes a
short phrase ("Pelvic pain in the last 90 days"), ``all`` / ``any`` / ``not`` become "All of",
"Any of" and "None of" lists, and named definitions (``ref``) are written out in place. Nested
lists of the same kind are merged and repeated phrases (a symptom recorded as a problem or as an
observation) are said once, so the page reads like a guideline, not like the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from cds_service.kb.model import Criterion, Knowledge

#: Guard against a definition that (wrongly) refers to itself; the loader rejects such cycles.
MAX_DEPTH = 12

_KIND_WORDS = {"procedure": "", "medication": " (medication)", "device": " (implanted device)",
               "allergy": " (allergy)", "finding": " (imaging finding)", "condition": "", "observation": ""}
_GROUP_WORDS = {"all": "All of:", "any": "Any of:", "not": "None of:"}


@dataclass(frozen=True)
class Rule:
    """One line of the rules: a phrase, or a group heading with its members."""

    text: str
    members: tuple["Rule", ...] = ()


def describe(criterion: Criterion | None, knowledge: Knowledge) -> Rule | None:
    """The criterion as a rule tree; None for "always" (no criterion)."""
    if not criterion:
        return None
    return _describe(criterion, knowledge, 0)


def _describe(criterion: Criterion, knowledge: Knowledge, depth: int) -> Rule:
    if depth > MAX_DEPTH:
        return Rule("(further conditions)")
    if "ref" in criterion:
        definition = knowledge.definitions.get(criterion["ref"])
        return _describe(definition, knowledge, depth + 1) if definition else Rule(_words(criterion["ref"]))
    for group in ("all", "any", "not"):
        if group in criterion:
            return _group(group, criterion[group], knowledge, depth)
    return Rule(_leaf(criterion, knowledge))


def _group(kind: str, members, knowledge: Knowledge, depth: int) -> Rule:
    items = members if isinstance(members, list) else [members]
    rules: list[Rule] = []
    for item in items:
        rule = _describe(item, knowledge, depth + 1)
        # "Any of" inside "Any of" (and "All of" inside "All of") says nothing new: merge it.
        merged = rule.members if rule.text == _GROUP_WORDS[kind] and kind != "not" else (rule,)
        for member in merged:
            if member not in rules:
                rules.append(member)
    if kind == "not" and len(rules) == 1 and rules[0].text == _GROUP_WORDS["any"]:
        rules = list(rules[0].members)  # "None of: any of: a, b" is "None of: a, b"
    if len(rules) == 1 and kind != "not":
        return rules[0]
    return Rule(_GROUP_WORDS[kind], tuple(rules))


def _leaf(criterion: Mapping, knowledge: Knowledge) -> str:
    operator = next((key for key in _KIND_WORDS if key in criterion), None)
    if operator is not None:
        text = _valueset_title(criterion[operator], knowledge) + _KIND_WORDS[operator]
        text += _value_words(criterion) + _status_words(criterion) + _safety_words(criterion, knowledge)
    elif "marker_trend" in criterion:
        text = f"{_valueset_title(criterion['marker_trend'], knowledge)} {criterion.get('trend', 'rising')}"
        text += f" over the last {criterion['window_days']} days" if "window_days" in criterion else ""
    elif "imaging" in criterion:
        names = [knowledge.procedures[p].name for p in criterion["imaging"] if p in knowledge.procedures]
        text = "Prior " + " or ".join(names)
    else:
        text = "Another recorded condition"
    return text + _window_words(criterion)


def _valueset_title(valueset_id: str, knowledge: Knowledge) -> str:
    valueset = knowledge.valuesets.get(valueset_id)
    return valueset.title if valueset else _words(valueset_id)


def _value_words(criterion: Mapping) -> str:
    if "value_below" in criterion:
        return f" below {criterion['value_below']:g}"
    if "value_above" in criterion:
        return f" above {criterion['value_above']:g}"
    if "value_in" in criterion:
        return " with a coded result of interest"
    return ""


def _safety_words(criterion: Mapping, knowledge: Knowledge) -> str:
    """A device's MR labelling: ", labelled MR Conditional or MR Safe", ", not labelled MR Unsafe"."""
    words = []
    for option, prefix in (("safety_in", ""), ("safety_not_in", "not ")):
        if option in criterion:
            title = _valueset_title(criterion[option], knowledge)
            words.append(prefix + title[:1].lower() + title[1:])
    return (", " + " and ".join(words)) if words else ""


def _status_words(criterion: Mapping) -> str:
    statuses = criterion.get("clinical_status")
    return f", recorded as {' or '.join(statuses)}" if statuses else ""


def _window_words(criterion: Mapping) -> str:
    if "within_days" in criterion:
        return f" in the last {criterion['within_days']} days"
    if "older_than_days" in criterion:
        return f" more than {criterion['older_than_days']} days ago"
    return ""


def _words(identifier: str) -> str:
    text = identifier.replace("-", " ")
    return text[:1].upper() + text[1:]
