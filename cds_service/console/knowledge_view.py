"""The knowledge as the committee reads it: scenarios, ratings, value sets with sources, catalogue,
sources, and what changed between two knowledge versions the audit has seen.

A version's *snapshot* is the part of the knowledge a committee reviews (scenario titles and
ratings, value-set codes, catalogue codes, sources, override reasons) as plain JSON; its digest
(SHA-256 of the canonical JSON) tells two builds with the same version label apart. The service
stores both at start-up (:func:`remember_knowledge`), so a diff still works after an upgrade.
"""

from __future__ import annotations

import hashlib
import json
import logging

from cds_service.audit import knowledge_versions
from cds_service.audit.backend import DatabaseUnavailable
from cds_service.audit.store import Store
from cds_service.kb.model import Knowledge

log = logging.getLogger(__name__)


def snapshot(knowledge: Knowledge) -> dict:
    return {
        "scenarios": {s.id: {"title": s.title, "ratings": {r.procedure: r.rating.value for r in s.ratings}}
                      for s in knowledge.scenarios},
        "valuesets": {v.id: sorted([f"{s}|{c}" for s, c in v.codes] + [f"{s}|{p}*" for s, p in v.prefixes])
                      for v in knowledge.valuesets.values()},
        "procedures": {p.id: sorted(f"{c.system}|{c.code}" for c in p.codes) for p in knowledge.procedures.values()},
        "sources": {s.id: s.title for s in knowledge.sources.values()},
        "override_reasons": {r.code: r.display for r in knowledge.override_reasons.values()},
    }


def digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def remember_knowledge(store: Store, knowledge: Knowledge) -> str:
    """Store this version's snapshot; a database that cannot be written now does not stop the service
    (it answers 503 and is not ready until fixed): the snapshot is then stored at the next start."""
    data = snapshot(knowledge)
    value = digest(data)
    try:
        knowledge_versions.remember(store, knowledge.version, value, data)
    except DatabaseUnavailable as error:
        log.warning("knowledge snapshot not stored: %s", error)
    return value


def diff(old: dict, new: dict) -> list[dict]:
    """Per section: what was added, removed and changed (for changed entries, what in them)."""
    sections = []
    for section in ("scenarios", "valuesets", "procedures", "sources", "override_reasons"):
        a, b = old.get(section, {}), new.get(section, {})
        changed = []
        for key in sorted(set(a) & set(b)):
            if a[key] != b[key]:
                changed.append({"id": key, "what": _change(a[key], b[key])})
        sections.append({"name": section, "added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)),
                         "changed": changed})
    return sections


def _change(a, b) -> str:
    if isinstance(a, list) and isinstance(b, list):
        plus, minus = sorted(set(b) - set(a)), sorted(set(a) - set(b))
        return "; ".join(filter(None, [f"added {', '.join(plus[:20])}" if plus else "",
                                       f"removed {', '.join(minus[:20])}" if minus else ""]))
    if isinstance(a, dict) and isinstance(b, dict):
        parts = []
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                inner = _change(a.get(key), b.get(key)) if isinstance(a.get(key), dict) else \
                    f"{a.get(key, '(none)')} → {b.get(key, '(none)')}"
                parts.append(f"{key}: {inner}")
        return "; ".join(parts)
    return f"{a} → {b}"


KNOWLEDGE_SECTIONS = ("scenarios", "valuesets", "catalogue", "sources", "versions")


def knowledge_context(store: Store, knowledge: Knowledge, section: str, args) -> dict | None:
    """What the knowledge page of ``section`` shows (None: no such section)."""
    if section not in KNOWLEDGE_SECTIONS:
        return None
    context: dict = {"section": section, "sections": KNOWLEDGE_SECTIONS, "knowledge": knowledge}
    if section == "scenarios":
        context["scenarios"] = [(s, [(knowledge.procedures.get(r.procedure), r) for r in s.ratings])
                                for s in knowledge.scenarios]
    elif section == "valuesets":
        context["valuesets"] = sorted(knowledge.valuesets.values(), key=lambda v: v.id)
    elif section == "catalogue":
        context["procedures"] = sorted(knowledge.procedures.values(), key=lambda p: (p.modality, p.name))
    elif section == "sources":
        context["sources"] = sorted(knowledge.sources.values(), key=lambda s: s.id)
    else:
        seen = knowledge_versions.seen(store)
        context["seen"] = seen
        old, new = args.get("from"), args.get("to")
        if old and new:
            a, b = knowledge_versions.snapshot(store, old), knowledge_versions.snapshot(store, new)
            context["diff"] = diff(a, b) if a is not None and b is not None else None
            context["names"] = {v.digest: f"{v.version} ({v.digest[:12]})" for v in seen}
            context["pair"] = (old, new)
    return context
