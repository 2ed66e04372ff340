"""Read a FHIR R4 ValueSet file into a flat, cited list of member codes.

A site replaces or extends a value set by dropping in a published expansion (VSAC, an IG's
ValueSet-*.json, an export from its own terminology server). This module only reads: it accepts
an expansion (`expansion.contains`, nested `contains` included) or an enumerated compose
(`compose.include[].concept`, less `compose.exclude[].concept`), and refuses anything whose
members it would have to compute (filters, included value sets) or that says it is incomplete
(a paged expansion). Standard library only, so the knowledge loader can use it anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Our own provenance extensions (knowledge/terminology/README.md describes them).
EXT_SOURCE = "urn:onc-imaging-cds:terminology:extension:source"
EXT_EXCLUDED = "urn:onc-imaging-cds:terminology:extension:excluded-member"
# Core FHIR extension that cites the work a value set was taken from.
EXT_SOURCE_REFERENCE = "http://hl7.org/fhir/StructureDefinition/valueset-sourceReference"

MAX_FILE_BYTES = 32 * 1024 * 1024   # the largest VSAC expansion we ship is well under 1 MB
MAX_NESTING = 32                    # nested `contains` deeper than this is not a real expansion

Member = tuple[str, str, str]       # (system, code, display); display may be ""


class ValueSetFileError(ValueError):
    """A ValueSet file that cannot be used; names the file and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class SourceCitation:
    """Where members came from: a repository file at a commit, a value set, and how they were picked."""

    repository: str = ""
    path: str = ""
    commit: str = ""
    valueset: str = ""      # canonical URL or urn:oid of the published value set
    oid: str = ""
    version: str = ""
    title: str = ""
    selection: str = ""

    def __str__(self) -> str:
        where = " ".join(p for p in (self.repository, self.path, self.commit and f"@{self.commit[:12]}") if p)
        what = " ".join(p for p in (self.title, self.oid and f"(OID {self.oid})", self.valueset) if p)
        return "; ".join(p for p in (what, where, self.selection) if p)


@dataclass(frozen=True)
class ValueSetExpansion:
    url: str
    title: str
    sources: tuple[SourceCitation, ...]
    members: tuple[Member, ...]
    excluded: tuple[tuple[str, str, str, str], ...] = ()   # (system, code, display, reason), kept out on purpose
    version: str = ""
    file: str = ""

    @property
    def citation(self) -> str:
        """One line naming every source, for sources.json or an audit note."""
        return " | ".join(str(s) for s in self.sources) or self.url

    def codes(self) -> frozenset[tuple[str, str]]:
        return frozenset((system, code) for system, code, _ in self.members)


def read_valueset_file(path: str | Path) -> ValueSetExpansion:
    """Read one ValueSet JSON file; raises ValueSetFileError (a ValueError) with the file name and why."""
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueSetFileError(name, f"file is {size} bytes, more than the {MAX_FILE_BYTES} allowed")
        with path.open("rb") as handle:
            doc = json.load(handle)
    except ValueSetFileError:
        raise
    except OSError as exc:
        raise ValueSetFileError(name, f"cannot read the file ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueSetFileError(name, f"not valid JSON ({exc})") from exc
    return read_valueset(doc, name)


def read_valueset(doc: Any, name: str = "<ValueSet>") -> ValueSetExpansion:
    """Read an already parsed ValueSet resource (a dict from JSON)."""
    if not isinstance(doc, dict) or doc.get("resourceType") != "ValueSet":
        kind = doc.get("resourceType") if isinstance(doc, dict) else type(doc).__name__
        raise ValueSetFileError(name, f"not a FHIR ValueSet resource (resourceType {kind!r})")
    url = doc.get("url")
    if not isinstance(url, str) or not url:
        raise ValueSetFileError(name, "the ValueSet has no url")
    if isinstance(doc.get("expansion"), dict) and "contains" in doc["expansion"]:
        members = _expansion_members(doc["expansion"], name)
    elif isinstance(doc.get("compose"), dict):
        members = _compose_members(doc["compose"], name)
    else:
        raise ValueSetFileError(name, "no expansion.contains and no compose: the ValueSet lists no members")
    if not members:
        raise ValueSetFileError(name, "the ValueSet has no member codes")
    title = doc.get("title") or doc.get("name") or url
    return ValueSetExpansion(url=url, title=str(title), sources=_citations(doc), members=tuple(members),
                             excluded=_excluded(doc), version=str(doc.get("version", "")), file=name)


def _member(entry: Any, where: str, name: str) -> Member:
    if not isinstance(entry, dict):
        raise ValueSetFileError(name, f"{where} is not an object")
    system, code, display = entry.get("system"), entry.get("code"), entry.get("display", "")
    if not isinstance(system, str) or not system or not isinstance(code, str) or not code.strip():
        raise ValueSetFileError(name, f"{where} needs a system and a code")
    if not isinstance(display, str):
        raise ValueSetFileError(name, f"{where}.display is not a string")
    return system, code.strip(), display


def _expansion_members(expansion: dict, name: str) -> list[Member]:
    contains = expansion.get("contains")
    total, offset = expansion.get("total"), expansion.get("offset", 0)
    if offset not in (0, None):
        raise ValueSetFileError(name, f"expansion is one page (offset {offset}); a complete expansion is needed")
    members: dict[tuple[str, str], Member] = {}
    stack = [(contains, "expansion.contains", 0)]
    while stack:
        items, where, depth = stack.pop()
        if not isinstance(items, list):
            raise ValueSetFileError(name, f"{where} is not a list")
        if depth > MAX_NESTING:
            raise ValueSetFileError(name, f"{where} is nested more than {MAX_NESTING} levels deep")
        for i, entry in enumerate(items):
            here = f"{where}[{i}]"
            if isinstance(entry, dict) and "contains" in entry:
                stack.append((entry["contains"], f"{here}.contains", depth + 1))
            if isinstance(entry, dict) and ("contains" in entry and "code" not in entry or entry.get("abstract") is True):
                continue    # a grouping header: not a selectable code of its own
            member = _member(entry, here, name)
            members.setdefault(member[:2], member)
    if isinstance(total, int) and total > len(members):
        raise ValueSetFileError(name, f"expansion is truncated: total {total}, but {len(members)} codes listed")
    return list(members.values())


def _concepts(part: Any, where: str, name: str) -> list[Member]:
    if not isinstance(part, dict):
        raise ValueSetFileError(name, f"{where} is not an object")
    if part.get("filter") or part.get("valueSet"):
        raise ValueSetFileError(name, f"{where} is intensional (filter or valueSet) and the file has no "
                                      "expansion: expand it on a terminology server first")
    system, concepts = part.get("system"), part.get("concept")
    if not isinstance(system, str) or not system or not isinstance(concepts, list) or not concepts:
        raise ValueSetFileError(name, f"{where} needs a system and a concept list (a whole code system "
                                      "cannot be used)")
    return [_member({"system": system, **(c if isinstance(c, dict) else {"code": c})}, f"{where}.concept[{i}]", name)
            for i, c in enumerate(concepts)]


def _compose_members(compose: dict, name: str) -> list[Member]:
    includes, excludes = compose.get("include"), compose.get("exclude", [])
    if not isinstance(includes, list) or not includes or not isinstance(excludes, list):
        raise ValueSetFileError(name, "compose.include must be a non-empty list (and compose.exclude a list)")
    dropped = {m[:2] for i, part in enumerate(excludes) for m in _concepts(part, f"compose.exclude[{i}]", name)}
    members: dict[tuple[str, str], Member] = {}
    for i, part in enumerate(includes):
        for member in _concepts(part, f"compose.include[{i}]", name):
            if member[:2] not in dropped:
                members.setdefault(member[:2], member)
    return list(members.values())


def _sub(ext: dict) -> dict[str, str]:
    out = {}
    for item in ext.get("extension", ()):
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            value = next((v for k, v in item.items() if k.startswith("value")), None)
            out[item["url"]] = value
    return out


def _citations(doc: dict) -> tuple[SourceCitation, ...]:
    found = []
    for ext in doc.get("extension", ()) if isinstance(doc.get("extension"), list) else ():
        if not isinstance(ext, dict):
            continue
        if ext.get("url") == EXT_SOURCE:
            sub = _sub(ext)
            found.append(SourceCitation(**{k: str(sub.get(k) or "") for k in
                                           ("repository", "path", "commit", "oid", "version", "title", "selection")},
                                        valueset=str(sub.get("valueSet") or "")))
        elif ext.get("url") == EXT_SOURCE_REFERENCE and isinstance(ext.get("valueUri"), str):
            found.append(SourceCitation(valueset=ext["valueUri"]))
    if not found:   # a published file as downloaded: cite the resource itself
        oid = next((i.get("value", "") for i in doc.get("identifier", ()) if isinstance(i, dict)
                    and str(i.get("value", "")).startswith("urn:oid:")), "")
        found.append(SourceCitation(valueset=doc["url"], oid=oid.removeprefix("urn:oid:"),
                                    version=str(doc.get("version", "")),
                                    title=" ".join(str(p) for p in (doc.get("title"), doc.get("publisher") and
                                                                    f"({doc['publisher']})") if p)))
    return tuple(found)


def _excluded(doc: dict) -> tuple[tuple[str, str, str, str], ...]:
    out = []
    for ext in doc.get("extension", ()) if isinstance(doc.get("extension"), list) else ():
        if isinstance(ext, dict) and ext.get("url") == EXT_EXCLUDED:
            sub = _sub(ext)
            coding = sub.get("coding") if isinstance(sub.get("coding"), dict) else {}
            out.append((str(coding.get("system", "")), str(coding.get("code", "")), str(coding.get("display", "")),
                        str(sub.get("reason") or "")))
    return tuple(out)
