"""Load the knowledge base: JSON files → schema validation → reference checks → typed model.

``load_knowledge()`` reads the packaged base (``cds_service.knowledge_data``, the repository's
``knowledge/`` directory) or a replacement directory, then any extra directories (site or licensed
criteria). Every file is validated against ``knowledge/schema/knowledge.schema.json`` (Draft
2020-12), then every cross-reference is checked: sources, value sets, procedures, definitions,
override reasons, duplicate ids. All problems are collected and raised together as one
:class:`KnowledgeError` whose message lists ``file: JSON path: problem`` per line, so an author
fixes a file in one pass. The format is documented in docs/knowledge.md.

Run ``python -m cds_service check-knowledge [DIR...]`` (or ``python -m cds_service.kb.loader``)
to validate without starting the service.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


from cds_service.kb.compiled import intern_criterion
from cds_service.kb.expansions import resolve_expansions
from cds_service.kb.references import Document, MergedDocuments, RawDocuments, ReferenceChecker, merge_documents
from cds_service.kb.schema_check import FILE_KINDS, PACKAGE, SCENARIO_KIND, schema_digest, schema_problems
from cds_service.kb.validation_cache import ValidationCache
from cds_service.kb.model import (
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


#: Files the base directory must have (extra directories may hold any subset).
BASE_REQUIRED = ("manifest.json", "sources.json", "procedures.json", "valuesets.json")


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


def _read_json(content: bytes) -> Any:
    return json.loads(content.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)


def _as_node(directory: str | Path | Traversable) -> Traversable:
    return Path(directory) if isinstance(directory, (str, Path)) else directory


def _label(root_label: str, *parts: str) -> str:
    return "/".join([root_label.rstrip("/"), *parts]) if root_label else "/".join(parts)


# -- collecting the raw documents --------------------------------------------------------------


def _collect(directory: Traversable, label: str, is_base: bool, raw: RawDocuments) -> None:
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
        _load_doc(entry, _label(label, name), kind, raw, is_base, directory)


def _load_doc(node: Traversable, label: str, kind: str, raw: RawDocuments, is_base: bool,
              directory: Traversable | None = None) -> None:
    content = node.read_bytes()
    try:
        data = _read_json(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raw.problems.append(f"{label}: $: not valid JSON: {exc}")
        return
    cache = raw.cache
    digest = cache.digest(kind, content) if cache is not None else None
    if digest is None or not cache.known_valid(digest):
        problems = schema_problems(kind, data, label)
        if problems:
            raw.problems.extend(problems)
            return
        if digest is not None:
            cache.add(digest)
    if kind == "valuesets" and directory is not None:
        resolve_expansions(data, directory, label, raw.problems)
    raw.docs.append(Document(label, kind, data, is_base))


# -- merging and reference checks --------------------------------------------------------------


# -- building the typed model ------------------------------------------------------------------


def _code_entry(raw: Mapping[str, Any]) -> CodeEntry:
    system = SYSTEM_ALIASES.get(raw["system"], raw["system"])
    return CodeEntry(system=system, code=raw["code"].strip(), source=raw["source"], confidence=raw["confidence"],
                     display=raw.get("display"), part=raw.get("part"),
                     required=raw.get("required", False))


def _intern_criteria(merged: MergedDocuments) -> None:
    """Equal criteria anywhere in the knowledge become one object (see kb.compiled)."""
    table: dict[str, Any] = {}

    def shared(item: dict, key: str) -> None:
        if item.get(key) is not None:
            item[key] = intern_criterion(item[key], table)

    for name, (label, criterion) in list(merged.definitions.items()):
        merged.definitions[name] = (label, intern_criterion(criterion, table))
    for _, item in merged.contraindications.values():
        shared(item, "when")
    for _, scenario in merged.scenarios.values():
        shared(scenario, "when")
        for part in (*scenario["ratings"], *scenario.get("preferred", ()), *scenario.get("recommendations", ())):
            shared(part, "when")
        if scenario.get("surveillance"):
            shared(scenario["surveillance"], "anchor")


def _build(merged: MergedDocuments, base_version: str, extra_versions: list[str]) -> Knowledge:
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
    valuesets = _build_valuesets(merged)
    contraindications = tuple(
        Contraindication(id=cid, label=c["label"], blocks=tuple(c["blocks"]), when=c["when"],
                         sources=tuple(c["sources"]), severity=c.get("severity", "block"),
                         advice=c.get("advice"))
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


def _build_valuesets(merged: MergedDocuments) -> dict[str, ValueSet]:
    """Value sets with their ``include``s resolved (members, prefixes and exclusions of the
    included sets are added; the reference checker has refused unknown ids and cycles)."""
    own: dict[str, tuple[tuple[CodeEntry, ...], set, set, set, set]] = {}
    for vid, (_, v) in merged.valuesets.items():
        entries = tuple(_code_entry(c) for c in v["codes"])
        codes = {normalise_code(e.system, e.code) for e in entries}
        prefixes = {normalise_code(x["system"], x["prefix"]) for x in v.get("prefixes", ())}
        excluded = {normalise_code(x["system"], x["code"]) for x in v.get("exclude", ()) if "code" in x}
        excluded_prefixes = {normalise_code(x["system"], x["prefix"]) for x in v.get("exclude", ()) if "prefix" in x}
        own[vid] = (entries, codes, prefixes, excluded, excluded_prefixes)

    def closure(vid: str, seen: frozenset[str] = frozenset()) -> list[str]:
        found = [vid]
        for child in merged.valuesets[vid][1].get("include", ()):
            if child not in seen and child in merged.valuesets:
                found.extend(closure(child, seen | {vid}))
        return found

    valuesets = {}
    for vid, (_, v) in merged.valuesets.items():
        parts = [own[part] for part in dict.fromkeys(closure(vid))]
        valuesets[vid] = ValueSet(
            id=vid, title=v["title"],
            codes=frozenset().union(*(part[1] for part in parts)),
            prefixes=tuple(sorted(set().union(*(part[2] for part in parts)))),
            entries=tuple(entry for part in parts for entry in part[0]),
            excluded_codes=frozenset().union(*(part[3] for part in parts)),
            excluded_prefixes=tuple(sorted(set().union(*(part[4] for part in parts)))),
        )
    return valuesets


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
        order_reasons=s.get("order_reasons"), regions=tuple(s.get("regions", ())),
    )


# -- entry points ------------------------------------------------------------------------------


def _default_base() -> Traversable:
    return resources.files(PACKAGE)


def load_knowledge(
    base_dir: str | Path | None = None,
    extra_dirs: Sequence[str | Path] = (),
    *,
    cache_dir: str | Path | None = None,
    trust_cache: bool = True,
) -> Knowledge:
    """Load, validate and cross-check the knowledge base; raise :class:`KnowledgeError` listing every problem.

    ``base_dir`` replaces the packaged knowledge (``cds_service.knowledge_data``); ``extra_dirs`` are
    loaded on top of it, in order. An extra directory may add sources, procedures, value sets,
    definitions, contraindications, override reasons and scenarios, but never redefine an id.
    With ``cache_dir``, files whose exact bytes already passed the schema skip it
    (:mod:`cds_service.kb.validation_cache`); ``trust_cache=False`` validates all and records them.
    """
    raw = RawDocuments()
    if cache_dir is not None:
        raw.cache = ValidationCache(cache_dir, schema_digest(), trust=trust_cache)
    base = _as_node(base_dir) if base_dir else _default_base()
    base_label = str(base_dir) if base_dir else "knowledge"
    _collect(base, base_label, True, raw)
    for extra in extra_dirs:
        _collect(_as_node(extra), str(extra), False, raw)
    if raw.problems:
        # Files that are not well-formed are left out, so reference checks would only add noise
        # ("unknown definition" for every name of a broken definitions.json): report these first.
        raise KnowledgeError(raw.problems)
    if raw.cache is not None:
        raw.cache.save()
    merged = merge_documents(raw)
    ReferenceChecker(merged, raw.problems).run()
    if raw.problems:
        raise KnowledgeError(raw.problems)
    base_versions = [m["knowledge_version"] for from_base, m in merged.manifests if from_base]
    extra_versions = [m["knowledge_version"] for from_base, m in merged.manifests if not from_base]
    base_version = base_versions[0] if base_versions else "unknown"
    _intern_criteria(merged)
    return _build(merged, base_version, extra_versions)


def validate_directories(base_dir: str | Path | None, extra_dirs: Iterable[str | Path]) -> list[str]:
    """Problems found (empty when valid); for tools that want a list rather than an exception."""
    try:
        load_knowledge(base_dir, tuple(extra_dirs))
    except KnowledgeError as error:
        return error.problems
    return []


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cds_service.kb.loader [EXTRA_DIR...]``: validate and print a summary."""
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
