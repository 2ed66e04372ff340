"""Writing derive.py's ValueSet files: provenance extensions, deduplicated expansion, selection helpers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from derive_sources import SYNTHEA, icd10cm, strip_cpt_display

HERE = Path(__file__).resolve().parent
CANONICAL = "urn:onc-imaging-cds:terminology:ValueSet:"
EXT_SOURCE = "urn:onc-imaging-cds:terminology:extension:source"
EXT_EXCLUDED = "urn:onc-imaging-cds:terminology:extension:excluded-member"
TIMESTAMP = "2026-12-01T00:00:00Z"


def _source_extension(cite: dict, selection: str) -> dict:
    parts = [("repository", "valueString", cite.get("repository")), ("path", "valueString", cite.get("path")),
             ("commit", "valueString", cite.get("commit")), ("valueSet", "valueUri", cite.get("canonical")),
             ("oid", "valueString", cite.get("oid")), ("version", "valueString", cite.get("version")),
             ("title", "valueString", cite.get("title")), ("selection", "valueString", selection)]
    return {"url": EXT_SOURCE, "extension": [{"url": k, t: v} for k, t, v in parts if v]}


def _excluded_extension(member, reason: str) -> dict:
    system, code, display = member
    coding = {"system": system, "code": code, **({"display": display} if display else {})}
    return {"url": EXT_EXCLUDED, "extension": [{"url": "coding", "valueCoding": coding},
                                               {"url": "reason", "valueString": reason}]}


def write_valueset(vid: str, title: str, description: str, parts, excluded=()) -> dict:
    """parts: [(cite, members, selection)]; excluded: [(member, reason)], left out of the expansion."""
    drop = {(m[0], m[1]) for m, _ in excluded}
    seen, contains = set(), []
    for _, members, _ in parts:
        for system, code, display in strip_cpt_display(members):
            if (system, code) in drop or (system, code) in seen:
                continue
            seen.add((system, code))
            contains.append({"system": system, "code": code, **({"display": display} if display else {})})
    contains.sort(key=lambda c: (c["system"], c["code"]))
    # a single VSAC value set copied whole keeps its own url and OID; anything selected or merged gets ours
    verbatim = (len(parts) == 1 and not excluded and parts[0][2] == "all members"
                and "cts.nlm" in parts[0][0].get("canonical", ""))
    cite0 = parts[0][0]
    doc = {"resourceType": "ValueSet", "id": vid,
           "extension": [_source_extension(c, sel) for c, _, sel in parts]
           + [_excluded_extension(m, r) for m, r in excluded],
           "url": cite0["canonical"] if verbatim else CANONICAL + vid}
    if verbatim:
        doc["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:" + cite0["oid"]}]
        doc["version"] = cite0.get("version", "")
    doc.update({"name": "".join(w.capitalize() for w in re.split(r"[^A-Za-z0-9]+", vid)), "title": title,
                "status": "active", "experimental": False,
                "publisher": "NLM (VSAC), copied verbatim" if verbatim else
                "onc-imaging-cds knowledge base, selected from the published sources named in extension",
                "description": description,
                "expansion": {"identifier": f"urn:onc-imaging-cds:terminology:expansion:{vid}",
                              "timestamp": TIMESTAMP, "total": len(contains), "contains": contains}})
    (HERE / f"{vid}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return doc


def split(members, include: str, exclusions):
    """Members whose display matches `include`, less those matching an exclusion (regex, reason)."""
    kept, dropped = [], []
    for m in members:
        if not re.search(include, m[2], re.I):
            continue
        # the first matching rule decides; a rule whose reason is None keeps the member
        reason = next((why for rx, why in exclusions if re.search(rx, m[2], re.I)), None)
        (dropped.append((m, reason)) if reason else kept.append(m))
    return kept, dropped


def icd10cm_part(roots):
    cite, members = icd10cm(roots)
    return cite, members, cite.pop("selection")


def synthea(path: str, commit: str, members, selection: str):
    return ({"repository": SYNTHEA, "path": path, "commit": commit, "title": "Synthea module (codes Synthea writes)"},
            members, selection)
