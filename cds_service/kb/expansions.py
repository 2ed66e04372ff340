"""Value-set members from FHIR ValueSet files, and site amendments of base value sets.

A value set in ``valuesets.json`` may name ``expansions``: FHIR ValueSet files (a VSAC download, an
IG's ``ValueSet-*.json``, a terminology server's ``$expand`` output) stored under the knowledge
directory, e.g. ``terminology/breast-cancer-primary.json``. Their members are added to the value
set's codes, cited with the entry's ``source`` (the file itself names the repository, path and OID
it was taken from). ``exclude`` entries of the value set still win over any file.

An extra (site) directory may also amend a base value set instead of defining a new one:
``{"id": "breast-cancer", "amends": "extend", ...}`` adds its codes, prefixes, inclusions,
exclusions and expansion files to the base set; ``"amends": "replace"`` puts the site's entry in
its place. Both need the id to exist already; without ``amends`` a repeated id is still an error,
so nothing is shadowed by accident. docs/knowledge.md, "Terminology from published expansions".
"""

from __future__ import annotations

import json
from importlib.resources.abc import Traversable
from typing import Any

from cds_service.kb.fhir_valuesets import ValueSetFileError, read_valueset

__all__ = ["resolve_expansions", "amend_valueset"]

#: Lists of an entry that an ``extend`` amendment appends to the base entry.
_EXTENDABLE = ("codes", "prefixes", "include", "exclude")


def resolve_expansions(data: dict, directory: Traversable, label: str, problems: list[str]) -> None:
    """Add the members of every ``expansions`` file to its value set's ``codes`` (in place)."""
    for index, item in enumerate(data.get("valuesets", ())):
        for number, expansion in enumerate(item.get("expansions", ())):
            where = f"{label}: $.valuesets[{index}].expansions[{number}]"
            node = directory
            for part in expansion["file"].split("/"):
                node = node / part
            try:
                if not node.is_file():
                    raise ValueSetFileError(expansion["file"], "file not found")
                found = read_valueset(json.loads(node.read_text(encoding="utf-8")), expansion["file"])
            except (ValueSetFileError, ValueError, UnicodeDecodeError) as error:
                problems.append(f"{where}: {error}")
                continue
            have = {(code["system"], code["code"]) for code in item["codes"]}
            for system, code, display in found.members:
                if (system, code) in have:
                    continue
                have.add((system, code))
                entry: dict[str, Any] = {"system": system, "code": code, "source": expansion["source"],
                                         "confidence": expansion["confidence"]}
                if display:
                    entry["display"] = display
                item["codes"].append(entry)


def amend_valueset(base: dict, amendment: dict) -> dict:
    """The base entry extended by (or replaced with) a site's amending entry."""
    if amendment.get("amends") == "replace":
        return {key: value for key, value in amendment.items() if key != "amends"}
    merged = dict(base)
    for key in _EXTENDABLE:
        if key in amendment:
            merged[key] = [*base.get(key, ()), *amendment[key]]
    return merged
