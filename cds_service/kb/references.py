"""Merging the knowledge documents of all directories, and checking every cross-reference.

Duplicate ids across files are reported, then every reference (sources, value sets,
procedures, definitions, override reasons) is checked and definition cycles found. Problems are
collected, never raised one at a time, so an author fixes a file in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from cds_service.chart.units import unit_problem
from cds_service.kb.expansions import amend_valueset
from cds_service.kb.grammar import VALUESET_OPERATORS, VALUESET_OPTIONS
from cds_service.kb.model import Appropriateness
from cds_service.kb.schema_check import SCENARIO_KIND

@dataclass
class Document:
    label: str            # "knowledge/scenarios/x.json", shown in errors
    kind: str
    data: Any
    base: bool = True     # from the base directory (False: an extra directory)


@dataclass
class RawDocuments:
    """Every valid document of every directory, in load order, plus the problems found so far."""

    docs: list[Document] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cache: Any = None  # a ValidationCache, when schema results may be reused




@dataclass
class MergedDocuments:
    manifests: list[tuple[bool, dict]] = field(default_factory=list)   # (from base?, manifest)
    sources: dict[str, tuple[str, dict]] = field(default_factory=dict)
    procedures: dict[str, tuple[str, dict]] = field(default_factory=dict)
    valuesets: dict[str, tuple[str, dict]] = field(default_factory=dict)
    definitions: dict[str, tuple[str, Any]] = field(default_factory=dict)
    contraindications: dict[str, tuple[str, dict]] = field(default_factory=dict)
    override_reasons: dict[str, tuple[str, dict]] = field(default_factory=dict)
    scenarios: dict[str, tuple[str, dict]] = field(default_factory=dict)


def _add(table: dict[str, tuple[str, Any]], key: str, label: str, path: str, item: Any, what: str,
         problems: list[str]) -> None:
    if key in table:
        first = table[key][0]
        where = "earlier in this file" if first == label else f"already defined in {first}"
        problems.append(f"{label}: {path}: duplicate {what} {key!r} ({where})")
        return
    table[key] = (label, item)


def _amend(table: dict[str, tuple[str, Any]], item: dict, doc: Document, path: str, problems: list[str]) -> None:
    """A site's ``amends`` entry extends or replaces a value set loaded before it (kb/expansions.py)."""
    if doc.base:
        problems.append(f"{doc.label}: {path}.amends: only an extra directory may amend a value set")
    elif item["id"] not in table:
        problems.append(f"{doc.label}: {path}.amends: no value set {item['id']!r} to amend")
    else:
        table[item["id"]] = (doc.label, amend_valueset(table[item["id"]][1], item))


def merge_documents(raw: RawDocuments) -> MergedDocuments:
    merged = MergedDocuments()
    p = raw.problems
    for doc in raw.docs:
        d = doc.data
        if doc.kind == "manifest":
            merged.manifests.append((doc.base, d))
        elif doc.kind == "sources":
            for i, item in enumerate(d["sources"]):
                _add(merged.sources, item["id"], doc.label, f"$.sources[{i}].id", item, "source id", p)
        elif doc.kind == "procedures":
            for i, item in enumerate(d["procedures"]):
                _add(merged.procedures, item["id"], doc.label, f"$.procedures[{i}].id", item, "procedure id", p)
        elif doc.kind == "valuesets":
            for i, item in enumerate(d["valuesets"]):
                if "amends" in item:
                    _amend(merged.valuesets, item, doc, f"$.valuesets[{i}]", p)
                else:
                    _add(merged.valuesets, item["id"], doc.label, f"$.valuesets[{i}].id", item, "value set id", p)
        elif doc.kind == "definitions":
            for name, criterion in d["definitions"].items():
                _add(merged.definitions, name, doc.label, f"$.definitions.{name}", criterion, "definition", p)
        elif doc.kind == "contraindications":
            for i, item in enumerate(d["contraindications"]):
                _add(merged.contraindications, item["id"], doc.label, f"$.contraindications[{i}].id", item,
                     "contraindication id", p)
        elif doc.kind == "override_reasons":
            for i, item in enumerate(d["override_reasons"]):
                _add(merged.override_reasons, item["code"], doc.label, f"$.override_reasons[{i}].code", item,
                     "override reason code", p)
        elif doc.kind == SCENARIO_KIND:
            item = d["scenario"]
            _add(merged.scenarios, item["id"], doc.label, "$.scenario.id", item, "scenario id", p)
    return merged


class ReferenceChecker:
    """Cross-reference checks over the merged documents; appends to ``problems``."""

    def __init__(self, merged: MergedDocuments, problems: list[str]):
        self.m = merged
        self.problems = problems

    def run(self) -> None:
        m = self.m
        for sid, (label, item) in m.procedures.items():
            base = f"$.procedures[id={sid}]"
            for i, code in enumerate(item["codes"]):
                self.source(code["source"], label, f"{base}.codes[{i}].source")
            radiation_source = item["radiation"].get("source")
            if radiation_source:
                self.source(radiation_source, label, f"{base}.radiation.source")
        for vid, (label, item) in m.valuesets.items():
            base = f"$.valuesets[id={vid}]"
            for i, code in enumerate(item["codes"]):
                self.source(code["source"], label, f"{base}.codes[{i}].source")
            for i, prefix in enumerate(item.get("prefixes", ())):
                self.source(prefix["source"], label, f"{base}.prefixes[{i}].source")
            for i, exclusion in enumerate(item.get("exclude", ())):
                self.source(exclusion["source"], label, f"{base}.exclude[{i}].source")
            for i, expansion in enumerate(item.get("expansions", ())):
                self.source(expansion["source"], label, f"{base}.expansions[{i}].source")
            for i, included in enumerate(item.get("include", ())):
                if included not in m.valuesets:
                    self._missing(label, f"{base}.include[{i}]", "value set", included)
        self.include_cycles()
        for name, (label, criterion) in m.definitions.items():
            self.criterion(criterion, label, f"$.definitions.{name}")
        self.definition_cycles()
        for cid, (label, item) in m.contraindications.items():
            base = f"$.contraindications[id={cid}]"
            for i, source in enumerate(item["sources"]):
                self.source(source, label, f"{base}.sources[{i}]")
            self.criterion(item["when"], label, f"{base}.when")
        for _, (label, item) in m.scenarios.items():
            self.scenario(item, label)

    # each reference kind
    def _missing(self, label: str, path: str, what: str, value: str) -> None:
        self.problems.append(f"{label}: {path}: unknown {what} {value!r}")

    def source(self, value: str, label: str, path: str) -> None:
        if value not in self.m.sources:
            self._missing(label, path, "source", value)

    def procedure(self, value: str, label: str, path: str) -> None:
        if value not in self.m.procedures:
            self._missing(label, path, "procedure", value)

    def criterion(self, criterion: Mapping[str, Any], label: str, path: str) -> None:
        for operator in VALUESET_OPERATORS:
            if operator in criterion and criterion[operator] not in self.m.valuesets:
                self._missing(label, f"{path}.{operator}", "value set", criterion[operator])
        for option in VALUESET_OPTIONS:
            if option in criterion and criterion[option] not in self.m.valuesets:
                self._missing(label, f"{path}.{option}", "value set", criterion[option])
        if isinstance(criterion.get("unit"), str) and (problem := unit_problem(criterion["unit"])):
            self.problems.append(f"{label}: {path}.unit: {problem}")
        if "ref" in criterion and criterion["ref"] not in self.m.definitions:
            self._missing(label, f"{path}.ref", "definition", criterion["ref"])
        if "imaging" in criterion:
            for i, procedure in enumerate(criterion["imaging"]):
                self.procedure(procedure, label, f"{path}.imaging[{i}]")
        for operator in ("all", "any"):
            for i, child in enumerate(criterion.get(operator, ())):
                self.criterion(child, label, f"{path}.{operator}[{i}]")
        if "not" in criterion:
            self.criterion(criterion["not"], label, f"{path}.not")

    def include_cycles(self) -> None:
        """A value set may not include itself, directly or through others."""
        graph = {vid: [c for c in item.get("include", ()) if c in self.m.valuesets]
                 for vid, (_, item) in self.m.valuesets.items()}
        for start in graph:
            stack, seen = list(graph[start]), set()
            while stack:
                current = stack.pop()
                if current == start:
                    label = self.m.valuesets[start][0]
                    self.problems.append(f"{label}: $.valuesets[id={start}].include: value set includes itself")
                    break
                if current not in seen:
                    seen.add(current)
                    stack.extend(graph[current])

    def definition_cycles(self) -> None:
        graph = {name: set(definition_refs(criterion)) for name, (_, criterion) in self.m.definitions.items()}
        state: dict[str, int] = {}

        def visit(name: str, trail: list[str]) -> None:
            state[name] = 1
            for target in sorted(graph.get(name, ())):
                if state.get(target) == 1:
                    cycle = " -> ".join([*trail[trail.index(target):], target]) if target in trail else target
                    label = self.m.definitions[name][0]
                    self.problems.append(f"{label}: $.definitions.{name}: definitions refer to each other in a cycle: {cycle}")
                elif target in graph and state.get(target) is None:
                    visit(target, [*trail, target])
            state[name] = 2

        for name in sorted(graph):
            if state.get(name) is None:
                visit(name, [name])

    def scenario(self, s: Mapping[str, Any], label: str) -> None:
        for i, source in enumerate(s["sources"]):
            self.source(source, label, f"$.scenario.sources[{i}]")
        self.criterion(s["when"], label, "$.scenario.when")
        best = self._ratings(s, label)
        self._preferences(s, label, best)
        for i, code in enumerate(s.get("override_reasons", ())):
            if code not in self.m.override_reasons:
                self._missing(label, f"$.scenario.override_reasons[{i}]", "override reason", code)
        if s.get("surveillance"):
            self._surveillance(s["surveillance"], label)
        for i, procedure in enumerate(s.get("covers", ())):
            self.procedure(procedure, label, f"$.scenario.covers[{i}]")
        if s.get("order_reasons") and s["order_reasons"] not in self.m.valuesets:
            self._missing(label, "$.scenario.order_reasons", "value set", s["order_reasons"])
        self._recommendations(s, label)

    def _ratings(self, s: Mapping[str, Any], label: str) -> dict[str, int]:
        """Checks the rating table; returns the best rating rank of each procedure."""
        best: dict[str, int] = {}
        unconditional: set[str] = set()
        for i, rating in enumerate(s["ratings"]):
            path = f"$.scenario.ratings[{i}]"
            self.procedure(rating["procedure"], label, f"{path}.procedure")
            for j, source in enumerate(rating["sources"]):
                self.source(source, label, f"{path}.sources[{j}]")
            if "when" in rating:
                self.criterion(rating["when"], label, f"{path}.when")
            elif rating["procedure"] in unconditional:
                self.problems.append(
                    f"{label}: {path}: procedure {rating['procedure']!r} is rated twice without 'when'"
                )
            else:
                unconditional.add(rating["procedure"])
            rank = Appropriateness(rating["rating"]).rank
            best[rating["procedure"]] = max(rank, best.get(rating["procedure"], 0))
        return best

    def _preferences(self, s: Mapping[str, Any], label: str, best: dict[str, int]) -> None:
        for i, preference in enumerate(s.get("preferred", ())):
            path = f"$.scenario.preferred[{i}]"
            self.procedure(preference["procedure"], label, f"{path}.procedure")
            if "when" in preference:
                self.criterion(preference["when"], label, f"{path}.when")
            needed = Appropriateness(preference.get("min_rating", Appropriateness.USUALLY_APPROPRIATE.value))
            if preference["procedure"] in self.m.procedures and best.get(preference["procedure"], 0) < needed.rank:
                self.problems.append(
                    f"{label}: {path}: preferred procedure {preference['procedure']!r} is not rated "
                    f"{needed.label} or better in this scenario, so it could never be recommended"
                )

    def _surveillance(self, surveillance: Mapping[str, Any], label: str) -> None:
        for i, procedure in enumerate(surveillance["procedures"]):
            self.procedure(procedure, label, f"$.scenario.surveillance.procedures[{i}]")
        self.criterion(surveillance["anchor"], label, "$.scenario.surveillance.anchor")
        for i, source in enumerate(surveillance["sources"]):
            self.source(source, label, f"$.scenario.surveillance.sources[{i}]")
        previous = 0
        for i, interval in enumerate(surveillance["intervals"]):
            until = interval.get("until_month")
            if until is None and i != len(surveillance["intervals"]) - 1:
                self.problems.append(
                    f"{label}: $.scenario.surveillance.intervals[{i}]: only the last interval may omit until_month"
                )
            if until is not None and until <= previous:
                self.problems.append(
                    f"{label}: $.scenario.surveillance.intervals[{i}].until_month: must increase ({until} after {previous})"
                )
            previous = until or previous

    def _recommendations(self, s: Mapping[str, Any], label: str) -> None:
        seen: set[str] = set()
        for i, rec in enumerate(s.get("recommendations", ())):
            path = f"$.scenario.recommendations[{i}]"
            if rec["id"] in seen:
                self.problems.append(f"{label}: {path}.id: duplicate recommendation id {rec['id']!r}")
            seen.add(rec["id"])
            self.criterion(rec["when"], label, f"{path}.when")
            for j, procedure in enumerate(rec.get("applies_to", ())):
                self.procedure(procedure, label, f"{path}.applies_to[{j}]")
            if "suggest" in rec:
                self.procedure(rec["suggest"], label, f"{path}.suggest")
            for j, source in enumerate(rec["sources"]):
                self.source(source, label, f"{path}.sources[{j}]")


def definition_refs(criterion: Any) -> Iterator[str]:
    if not isinstance(criterion, Mapping):
        return
    if "ref" in criterion:
        yield criterion["ref"]
    for operator in ("all", "any"):
        for child in criterion.get(operator, ()):
            yield from definition_refs(child)
    if "not" in criterion:
        yield from definition_refs(criterion["not"])
