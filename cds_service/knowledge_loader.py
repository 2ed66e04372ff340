"""Load the knowledge base: JSON files → schema validation → reference checks → typed model.

``load_knowledge()`` reads the packaged base (``cds_service.knowledge_data``, the repository's
``knowledge/`` directory) or a replacement directory, then any extra directories (site or licensed
criteria). Every file is validated against ``knowledge/schema/knowledge.schema.json`` (Draft
2020-12), then every cross-reference is checked: sources, value sets, procedures, definitions,
override reasons, duplicate ids. All problems are collected and raised together as one
:class:`KnowledgeError` whose message lists ``file: JSON path: problem`` per line, so an author
fixes a file in one pass. The format is documented in docs/knowledge.md.

Run ``python -m cds_service check-knowledge [DIR...]`` (or ``python -m cds_service.knowledge_loader``)
to validate without starting the service.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from .knowledge import (
    Appropriateness,
    CodeEntry,
    Contraindication,
    Knowledge,
    OverrideReason,
    Preference,
    Procedure,
    RadiationLevel,
    Recommendation,
    Scenario,
    ScenarioRating,
    Source,
    SurveillanceSchedule,
    ValueSet,
    normalise_code,
    SYSTEM_ALIASES,
)

__all__ = ["KnowledgeError", "load_knowledge", "validate_directories", "main"]

PACKAGE = "cds_service.knowledge_data"
SCHEMA_FILE = ("schema", "knowledge.schema.json")

#: Top-level files and the schema kind each is validated against.
FILE_KINDS = {
    "manifest.json": "manifest",
    "sources.json": "sources",
    "procedures.json": "procedures",
    "valuesets.json": "valuesets",
    "definitions.json": "definitions",
    "contraindications.json": "contraindications",
    "override_reasons.json": "override_reasons",
}
SCENARIO_KIND = "scenario"
#: Files the base directory must have (extra directories may hold any subset).
BASE_REQUIRED = ("manifest.json", "sources.json", "procedures.json", "valuesets.json")

#: Criterion operators whose value names a value set.
VALUESET_OPERATORS = ("condition", "procedure", "medication", "observation", "marker_trend", "device", "allergy", "finding")


class KnowledgeError(Exception):
    """The knowledge base is invalid. ``problems`` holds one ``file: path: problem`` line each."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} in the knowledge base:"
        super().__init__("\n".join([header, *("  " + p for p in self.problems)]))


# -- reading -----------------------------------------------------------------------------------


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r} in one JSON object")
        result[key] = value
    return result


def _read_json(node: Traversable) -> Any:
    return json.loads(node.read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicate_keys)


def _as_node(directory: str | Path | Traversable) -> Traversable:
    return Path(directory) if isinstance(directory, (str, Path)) else directory


def _label(root_label: str, *parts: str) -> str:
    return "/".join([root_label.rstrip("/"), *parts]) if root_label else "/".join(parts)


_schema_cache: dict[str, Draft202012Validator] = {}


def _validators() -> dict[str, Draft202012Validator]:
    """One validator per file kind, built once per process from the packaged schema."""
    if not _schema_cache:
        node = resources.files(PACKAGE)
        for part in SCHEMA_FILE:
            node = node.joinpath(part)
        schema = json.loads(node.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        root = {key: value for key, value in schema.items() if key not in ("anyOf",)}
        for kind in (*FILE_KINDS.values(), SCENARIO_KIND):
            _schema_cache[kind] = Draft202012Validator({**root, "$ref": f"#/$defs/{kind}"})
    return _schema_cache


def _describe(error: ValidationError) -> str:
    """A schema error in words an author can act on."""
    if isinstance(error.instance, dict) and (
        (error.validator == "anyOf" and _is_criterion_schema(error.schema))
        or (error.validator == "additionalProperties" and _is_operator_schema(error.schema))
    ):
        present = sorted(k for k in error.instance if k in _OPERATOR_NAMES)
        if not present:
            return f"a criterion needs exactly one operator key ({', '.join(_OPERATOR_NAMES)}); found none"
        if len(present) > 1:
            return f"a criterion needs exactly one operator key; found {len(present)}: {', '.join(present)}"
    if error.validator == "anyOf" and isinstance(error.instance, dict) and "codes" in error.instance:
        return "a value set needs at least one code or prefix"
    if error.validator in ("oneOf", "anyOf") and error.context:
        return best_match(error.context).message
    return error.message


def _is_operator_schema(schema: Any) -> bool:
    """The schema of one operator's criterion (required: [operator], closed)."""
    required = schema.get("required", []) if isinstance(schema, dict) else []
    return len(required) == 1 and required[0] in _OPERATOR_NAMES and schema.get("additionalProperties") is False


def _is_criterion_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and str(schema.get("description", "")).startswith("Exactly one operator key")


_OPERATOR_NAMES = ("all", "any", "not", "ref", "condition", "procedure", "medication", "observation",
                   "marker_trend", "device", "allergy", "finding", "imaging")


def _schema_problems(kind: str, document: Any, label: str) -> list[str]:
    validator = _validators()[kind]
    problems: list[str] = []
    for error in sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        if error.validator == "enum" and "propertyNames" in error.schema_path:
            # The operator's schema reports the same key as "Additional properties…"; keep that one.
            continue
        line = f"{label}: {error.json_path}: {_describe(error)}"
        if line not in problems:
            problems.append(line)
    return problems


# -- collecting the raw documents --------------------------------------------------------------


@dataclass
class _Doc:
    label: str            # "knowledge/scenarios/x.json", shown in errors
    kind: str
    data: Any
    base: bool = True     # from the base directory (False: an extra directory)


@dataclass
class _Raw:
    """Every valid document of every directory, in load order, plus the problems found so far."""

    docs: list[_Doc] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _collect(directory: Traversable, label: str, is_base: bool, raw: _Raw) -> None:
    if not directory.is_dir():
        raw.problems.append(f"{label}: not a directory")
        return
    entries = {entry.name: entry for entry in directory.iterdir()}
    if is_base:
        for name in BASE_REQUIRED:
            if name not in entries:
                raw.problems.append(f"{_label(label, name)}: required file is missing")
    for name in sorted(entries):
        entry = entries[name]
        if entry.is_dir():
            if name == "scenarios":
                for scenario_file in sorted(entry.iterdir(), key=lambda e: e.name):
                    if scenario_file.name.endswith(".json"):
                        _load_doc(scenario_file, _label(label, "scenarios", scenario_file.name), SCENARIO_KIND, raw, is_base)
            continue  # schema/, __pycache__/ and other folders are not knowledge
        if not name.endswith(".json"):
            continue  # __init__.py, README.md, …
        kind = FILE_KINDS.get(name)
        if kind is None:
            raw.problems.append(
                f"{_label(label, name)}: unknown knowledge file (expected one of {', '.join(FILE_KINDS)} or scenarios/*.json)"
            )
            continue
        _load_doc(entry, _label(label, name), kind, raw, is_base)


def _load_doc(node: Traversable, label: str, kind: str, raw: _Raw, is_base: bool) -> None:
    try:
        data = _read_json(node)
    except (ValueError, UnicodeDecodeError) as exc:
        raw.problems.append(f"{label}: $: not valid JSON: {exc}")
        return
    problems = _schema_problems(kind, data, label)
    if problems:
        raw.problems.extend(problems)
        return
    raw.docs.append(_Doc(label, kind, data, is_base))


# -- merging and reference checks --------------------------------------------------------------


@dataclass
class _Merged:
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


def _merge(raw: _Raw) -> _Merged:
    merged = _Merged()
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


class _Checker:
    """Cross-reference checks over the merged documents; appends to ``problems``."""

    def __init__(self, merged: _Merged, problems: list[str]):
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
        if "value_in" in criterion and criterion["value_in"] not in self.m.valuesets:
            self._missing(label, f"{path}.value_in", "value set", criterion["value_in"])
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

    def definition_cycles(self) -> None:
        graph = {name: set(_refs(criterion)) for name, (_, criterion) in self.m.definitions.items()}
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
        for i, code in enumerate(s.get("override_reasons", ())):
            if code not in self.m.override_reasons:
                self._missing(label, f"$.scenario.override_reasons[{i}]", "override reason", code)
        surveillance = s.get("surveillance")
        if surveillance:
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
        for i, procedure in enumerate(s.get("covers", ())):
            self.procedure(procedure, label, f"$.scenario.covers[{i}]")
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


def _refs(criterion: Any) -> Iterator[str]:
    if not isinstance(criterion, Mapping):
        return
    if "ref" in criterion:
        yield criterion["ref"]
    for operator in ("all", "any"):
        for child in criterion.get(operator, ()):
            yield from _refs(child)
    if "not" in criterion:
        yield from _refs(criterion["not"])


# -- building the typed model ------------------------------------------------------------------


def _code_entry(raw: Mapping[str, Any]) -> CodeEntry:
    system = SYSTEM_ALIASES.get(raw["system"], raw["system"])
    return CodeEntry(system=system, code=raw["code"].strip(), source=raw["source"], confidence=raw["confidence"],
                     display=raw.get("display"), part=raw.get("part"))


def _build(merged: _Merged, base_version: str, extra_versions: list[str]) -> Knowledge:
    sources = {
        sid: Source(id=sid, title=s["title"], citation=s["citation"], kind=s["kind"], url=s.get("url"), note=s.get("note"))
        for sid, (_, s) in merged.sources.items()
    }
    procedures: dict[str, Procedure] = {}
    code_index: dict[tuple[str, str], list[Procedure]] = {}
    for pid, (_, p) in merged.procedures.items():
        radiation = p["radiation"]
        procedure = Procedure(
            id=pid, name=p["name"], modality=p["modality"], body_region=p["body_region"], contrast=p["contrast"],
            radiation=RadiationLevel(level=radiation["level"], source=radiation.get("source"),
                                     adult_dose=radiation.get("adult_dose")),
            codes=tuple(_code_entry(c) for c in p["codes"]),
            requires=tuple(p.get("requires", ())), category=p.get("category", "imaging"),
        )
        procedures[pid] = procedure
        for entry in procedure.codes:
            bucket = code_index.setdefault(normalise_code(entry.system, entry.code), [])
            if procedure not in bucket:
                bucket.append(procedure)
    valuesets = {}
    for vid, (_, v) in merged.valuesets.items():
        entries = tuple(_code_entry(c) for c in v["codes"])
        valuesets[vid] = ValueSet(
            id=vid, title=v["title"],
            codes=frozenset(normalise_code(e.system, e.code) for e in entries),
            prefixes=tuple(normalise_code(x["system"], x["prefix"]) for x in v.get("prefixes", ())),
            entries=entries,
        )
    contraindications = tuple(
        Contraindication(id=cid, label=c["label"], blocks=tuple(c["blocks"]), when=c["when"],
                         sources=tuple(c["sources"]), severity=c.get("severity", "block"))
        for cid, (_, c) in merged.contraindications.items()
    )
    override_reasons = {code: OverrideReason(code=code, display=o["display"]) for code, (_, o) in merged.override_reasons.items()}
    scenarios = [_scenario(s) for _, (_, s) in merged.scenarios.items()]
    scenarios.sort(key=lambda s: -s.priority)  # stable: ties keep load order (base files by name, then extras)
    version = "+".join([base_version, *extra_versions])
    return Knowledge(
        version=version, sources=sources, procedures=procedures, valuesets=valuesets,
        definitions={name: criterion for name, (_, criterion) in merged.definitions.items()},
        contraindications=contraindications, scenarios=tuple(scenarios), override_reasons=override_reasons,
        code_index={key: tuple(value) for key, value in code_index.items()},
    )


def _scenario(s: Mapping[str, Any]) -> Scenario:
    surveillance = None
    if s.get("surveillance"):
        sv = s["surveillance"]
        surveillance = SurveillanceSchedule(
            procedures=tuple(sv["procedures"]), anchor=sv["anchor"],
            intervals=tuple((i.get("until_month"), i["every_months"]) for i in sv["intervals"]),
            tolerance_days=sv.get("tolerance_days", 14), source=tuple(sv["sources"]),
        )
    return Scenario(
        id=s["id"], title=s["title"], phase=s["phase"], cancer_site=s["cancer_site"], priority=s["priority"],
        when=s["when"],
        ratings=tuple(
            ScenarioRating(procedure=r["procedure"], rating=Appropriateness(r["rating"]), sources=tuple(r["sources"]),
                           confidence=r["confidence"], when=r.get("when"), note=r.get("note"))
            for r in s["ratings"]
        ),
        preferred=tuple(
            Preference(procedure=p["procedure"], when=p.get("when"),
                       min_rating=Appropriateness(p.get("min_rating", Appropriateness.USUALLY_APPROPRIATE.value)))
            for p in s.get("preferred", ())
        ),
        sources=tuple(s["sources"]), acr_topic=s.get("acr_topic"), variant=s.get("variant"),
        summary=s["summary"], advice=s.get("advice", ""),
        low_value_surveillance=s.get("low_value_surveillance", False), surveillance=surveillance,
        recommendations=tuple(
            Recommendation(id=r["id"], when=r["when"], summary=r["summary"], detail=r["detail"], indicator=r["indicator"],
                           sources=tuple(r["sources"]), suggest=r.get("suggest"), applies_to=tuple(r.get("applies_to", ())))
            for r in s.get("recommendations", ())
        ),
        override_reasons=tuple(s.get("override_reasons", ())),
        covers=tuple(s.get("covers", ())),
    )


# -- entry points ------------------------------------------------------------------------------


def _default_base() -> Traversable:
    return resources.files(PACKAGE)


def load_knowledge(
    base_dir: str | Path | None = None,
    extra_dirs: Sequence[str | Path] = (),
) -> Knowledge:
    """Load, validate and cross-check the knowledge base; raise :class:`KnowledgeError` listing every problem.

    ``base_dir`` replaces the packaged knowledge (``cds_service.knowledge_data``); ``extra_dirs`` are
    loaded on top of it, in order. An extra directory may add sources, procedures, value sets,
    definitions, contraindications, override reasons and scenarios, but never redefine an id.
    """
    raw = _Raw()
    base = _as_node(base_dir) if base_dir else _default_base()
    base_label = str(base_dir) if base_dir else "knowledge"
    _collect(base, base_label, True, raw)
    for extra in extra_dirs:
        _collect(_as_node(extra), str(extra), False, raw)
    if raw.problems:
        # Files that are not well-formed are left out, so reference checks would only add noise
        # ("unknown definition" for every name of a broken definitions.json): report these first.
        raise KnowledgeError(raw.problems)
    merged = _merge(raw)
    _Checker(merged, raw.problems).run()
    if raw.problems:
        raise KnowledgeError(raw.problems)
    base_versions = [m["knowledge_version"] for from_base, m in merged.manifests if from_base]
    extra_versions = [m["knowledge_version"] for from_base, m in merged.manifests if not from_base]
    base_version = base_versions[0] if base_versions else "unknown"
    return _build(merged, base_version, extra_versions)


def validate_directories(base_dir: str | Path | None, extra_dirs: Iterable[str | Path]) -> list[str]:
    """Problems found (empty when valid); for tools that want a list rather than an exception."""
    try:
        load_knowledge(base_dir, tuple(extra_dirs))
    except KnowledgeError as error:
        return error.problems
    return []


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cds_service.knowledge_loader [EXTRA_DIR...]``: validate and print a summary."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        knowledge = load_knowledge(None, args)
    except KnowledgeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"knowledge {knowledge.version}: {len(knowledge.scenarios)} scenarios, {len(knowledge.procedures)} procedures, "
          f"{len(knowledge.valuesets)} value sets, {len(knowledge.sources)} sources: OK")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
