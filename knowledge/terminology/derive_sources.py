"""Readers of the published sources used by derive.py (local git mirrors and simple-icd-10-cm)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

SCT = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
DCM = "http://dicom.nema.org/resources/ontology/DCM"

REPOS = {
    "qicore2024": ("cqframework/ecqm-content-qicore-2024", "9ebd48ffebf2ed2489f3904cc8393ebf8979bfc9"),
    "dqm2025": ("cqframework/dqm-content-cms-2025", "207ec58cfbbfb397bfaf360a78b3ce342e0f4d90"),
    "dicom": ("bvdh/dicom-terminology-in-fhir", "9f098270ff7180e43a8df1a2eef0130b72231d5b"),
    "mcode": ("HL7/fhir-mCODE-ig", "543477b5585f2dcc717820a2bea141ea85f03012"),
}
# Synthea and the MII cardiology IG were read file by file (the whole Synthea repository is too
# large to mirror here); their members are listed with the file and commit they were read from.
SYNTHEA = "synthetichealth/synthea"
MII_KARDIO = "medizininformatik-initiative/kerndatensatz-kardiologie"


class Sources:
    """Reads published ValueSet expansions and code lists from the local mirrors."""

    def __init__(self, mirrors: Path):
        self.mirrors = mirrors

    def git_show(self, key: str, path: str) -> str:
        repo, commit = REPOS[key]
        gitdir = self.mirrors / repo.replace("/", "+") / "repo"
        return subprocess.check_output(["git", "-C", str(gitdir), "show", f"{commit}:{path}"], text=True)

    def vsac(self, key: str, path: str) -> tuple[dict, list[tuple[str, str, str]]]:
        doc = json.loads(self.git_show(key, path))
        members = [(c["system"], c["code"], c.get("display", "")) for c in doc["expansion"]["contains"]]
        repo, commit = REPOS[key]
        cite = {"repository": repo, "path": path, "commit": commit, "canonical": doc["url"],
                "oid": doc["identifier"][0]["value"].removeprefix("urn:oid:"), "version": doc.get("version", ""),
                "title": doc["title"]}
        return cite, members

    def dicom_cid(self, path: str) -> tuple[dict, list[tuple[str, str, str]]]:
        text = self.git_show("dicom", path)
        oid = re.search(r'identifier\.value\s*=\s*"urn:oid:([0-9.]+)"', text).group(1)
        title = re.search(r'\^title\s*=\s*"([^"]+)"', text).group(1)
        members = []
        for system, code, display in re.findall(r'^\* (http://snomed\.info/sct|DICOM_?DCM_?CodeSystem)#(\S+)\s*//\s*"([^"]*)"',
                                                text, re.M):
            members.append((SCT if system.startswith("http") else DCM, code, display.strip()))
        repo, commit = REPOS["dicom"]
        cite = {"repository": repo, "path": path, "commit": commit, "oid": oid, "title": f"DICOM CID: {title}",
                "canonical": f"urn:oid:{oid}"}
        return cite, members

    def mcode_concepts(self, path: str, vs_name: str) -> tuple[dict, list[tuple[str, str, str]]]:
        text = self.git_show("mcode", path)
        block = text.split(f"ValueSet: {vs_name}\n", 1)[1].split("\nValueSet: ", 1)[0]
        block = re.sub(r"/\*.*?\*/", "", block, flags=re.S)
        systems = {"SCT": SCT, "LNC": LOINC}
        members = [(systems[s], c, d) for s, c, d in re.findall(r'^\* (SCT|LNC)#(\S+) "([^"]+)"', block, re.M)]
        vs_id = re.search(r"^Id: (\S+)", block, re.M).group(1)
        repo, commit = REPOS["mcode"]
        cite = {"repository": repo, "path": path, "commit": commit, "title": f"mCODE {vs_name}",
                "canonical": f"http://hl7.org/fhir/us/mcode/ValueSet/{vs_id}"}
        return cite, members

    def mcode_example_codes(self, path: str, codes: set[str]) -> tuple[dict, list[tuple[str, str, str]]]:
        text = self.git_show("mcode", path)
        found = {c: d for c, d in re.findall(r'SCT#(\d+) (?://\s*)?"([^"]+)"', text) if c in codes}
        repo, commit = REPOS["mcode"]
        cite = {"repository": repo, "path": path, "commit": commit, "title": "mCODE example resources"}
        return cite, [(SCT, c, d) for c, d in sorted(found.items())]


def icd10cm(codes_or_prefixes: list[str]) -> tuple[dict, list[tuple[str, str, str]]]:
    """ICD-10-CM codes and every descendant, from the April 2026 tabular in simple-icd-10-cm."""
    import simple_icd_10_cm as cm  # maintainer tool only; the service never imports it

    out = []
    for root in codes_or_prefixes:
        if not cm.is_valid_item(root):
            raise SystemExit(f"not an ICD-10-CM code: {root}")
        for code in [root, *cm.get_descendants(root)]:
            if cm.is_leaf(code):    # billable codes only: headers are matched as prefixes, never as codes
                out.append((ICD10CM, code, cm.get_description(code)))
    cite = {"repository": "PyPI simple-icd-10-cm 1.5.0", "path": "data (CMS/CDC ICD-10-CM tabular, April 1 2026)",
            "title": "ICD-10-CM", "canonical": ICD10CM,
            "selection": "billable codes (leaves) at or under: " + ", ".join(codes_or_prefixes)}
    return cite, out


def pick(members, include: str | None = None, exclude: str | None = None, system: str | None = None,
         codes: set[str] | None = None):
    """Members whose display matches `include` (and not `exclude`), or whose code is in `codes`."""
    out = []
    for m in members:
        if system and m[0] != system:
            continue
        if codes is not None:
            if m[1] in codes:
                out.append(m)
            continue
        if include and not re.search(include, m[2], re.I):
            continue
        if exclude and re.search(exclude, m[2], re.I):
            continue
        out.append(m)
    return out


def strip_cpt_display(members):
    # CPT descriptors are (c) AMA: the knowledge base ships CPT codes without them (docs/knowledge.md).
    return [(s, c, "" if s == CPT else d) for s, c, d in members]


SANDBOX = ("cds-hooks/sandbox", "3b7e25546771c6e7fc5e360aa7db6eb64af0b8b6")


def sandbox_reasons(bundle: Path) -> tuple[dict, list[tuple[str, str, str]]]:
    """The SNOMED CT reason list of the CDS Hooks sandbox, read from its built bundle (SOURCE.md there)."""
    text = bundle.read_text(encoding="utf-8")
    found = re.findall(r'\{"code":"(\d+)","display":"([^"]*)","system":"http://snomed\.info/sct"\}', text)
    members = sorted({(SCT, code, display.replace("\\'", "'")) for code, display in found})
    repo, commit = SANDBOX
    cite = {"repository": repo, "commit": commit, "title": "CDS Hooks sandbox PAMA reason codes",
            "path": "src/assets/pama-reason-codes.json (read in the build of that commit, build/app.bundle.js)"}
    return cite, members
