"""Rebuild charts/ from the public sources listed in SOURCES.md (run by hand; not used by the replay).

Only the transformations documented in SOURCES.md are applied: the source resources are wrapped as a
Bundle of type collection, every id gets a chart prefix (references rewritten to ``Type/<new id>``),
resource types the service never reads are left out, and a FHIR STU3 source gets the few R4 type
changes of the elements listed in ``STU3_TO_R4``. Nothing inside a kept resource is changed
otherwise.

Sources are git mirrors (``MIRRORS/<owner>+<name>/repo``) or FHIR IG packages from the npm registry
(``MIRRORS/<package>-<version>.tgz``, as ``npm pack <package>@<version>`` writes it; its integrity
hash is in sources.json).
"""
from __future__ import annotations

import json
import base64
import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

#: Resource types kept: what the service reads or may read (issue 10 asks for MedicationAdministration).
KEPT_TYPES = {
    "Patient", "Condition", "Procedure", "Observation", "DiagnosticReport", "ImagingStudy",
    "ServiceRequest", "MedicationRequest", "MedicationAdministration", "MedicationStatement",
    "AllergyIntolerance", "Device",
}
#: Observation categories kept when a chart would otherwise exceed the size budget.
KEPT_OBSERVATION_CATEGORIES = {"laboratory"}
SIZE_BUDGET = 300_000

#: STU3 elements whose R4 type changed (code -> CodeableConcept; renamed date), per resource type:
#: element -> (R4 code system of the CodeableConcept, or None for a plain rename, R4 element name).
STU3_TO_R4 = {
    "Condition": {
        "clinicalStatus": ("http://terminology.hl7.org/CodeSystem/condition-clinical", "clinicalStatus"),
        "verificationStatus": ("http://terminology.hl7.org/CodeSystem/condition-ver-status", "verificationStatus"),
    },
    "AllergyIntolerance": {
        "clinicalStatus": ("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "clinicalStatus"),
        "verificationStatus": ("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                               "verificationStatus"),
        "assertedDate": (None, "recordedDate"),
    },
}
#: STU3 code-system URLs that R4 renamed (same codes).
STU3_SYSTEMS = {
    "http://hl7.org/fhir/observation-category": "http://terminology.hl7.org/CodeSystem/observation-category",
    "http://hl7.org/fhir/v2/0203": "http://terminology.hl7.org/CodeSystem/v2-0203",
}


def stu3_to_r4(resource: dict) -> dict:
    """The R4 form of an STU3 resource for the elements above; every other element is kept as it is."""
    out = {}
    for key, value in resource.items():
        system, new_key = STU3_TO_R4.get(resource["resourceType"], {}).get(key, (None, key))
        if system and isinstance(value, str):
            value = {"coding": [{"system": system, "code": value}]}
        out[new_key] = _r4_systems(value)
    return out


def _r4_systems(value):
    if isinstance(value, dict):
        return {k: (STU3_SYSTEMS.get(v, v) if k == "system" else _r4_systems(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_r4_systems(item) for item in value]
    return value


def _categories(resource: dict) -> set[str]:
    return {c.get("code") for cat in resource.get("category") or [] for c in cat.get("coding") or []}


def _rewrite(value, ids: dict[str, str], prefix: str):
    """Rewrite every Reference.reference (``urn:uuid:X`` or ``Type/X``) to ``Type/<prefix>X``."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                out[key] = _new_reference(item, ids, prefix)
            else:
                out[key] = _rewrite(item, ids, prefix)
        return out
    if isinstance(value, list):
        return [_rewrite(item, ids, prefix) for item in value]
    return value


def _new_reference(reference: str, ids: dict[str, str], prefix: str) -> str:
    if reference.startswith("urn:uuid:"):
        old = reference[len("urn:uuid:"):]
        kind = ids.get(old)
        return f"{kind}/{prefix}{old}" if kind else reference
    if "/" in reference and not reference.startswith(("http:", "https:", "#")):
        kind, old = reference.split("/", 1)
        return f"{kind}/{prefix}{old}"
    return reference


def build_chart(resources: list[dict], prefix: str, slim_observations: bool) -> dict:
    ids = {r["id"]: r["resourceType"] for r in resources if "id" in r}
    kept = [r for r in resources if r["resourceType"] in KEPT_TYPES]
    if slim_observations:
        kept = [r for r in kept if r["resourceType"] != "Observation"
                or _categories(r) & KEPT_OBSERVATION_CATEGORIES or not _categories(r)]
    entries = []
    for resource in kept:
        new = _rewrite(resource, ids, prefix)
        new["id"] = prefix + resource["id"]
        entries.append({"fullUrl": f"{new['resourceType']}/{new['id']}", "resource": new})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def dumps(chart: dict) -> str:
    """One entry per line: compact, and still readable in a diff."""
    entries = ",\n".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in chart["entry"])
    return '{"resourceType":"Bundle","type":"collection","entry":[\n' + entries + "\n]}"


def write(name: str, resources: list[dict], prefix: str, out_dir: Path) -> tuple[int, bool]:
    chart = build_chart(resources, prefix, slim_observations=False)
    text = dumps(chart)
    slim = len(text.encode()) > SIZE_BUDGET
    if slim:
        chart = build_chart(resources, prefix, slim_observations=True)
        text = dumps(chart)
    (out_dir / f"{name}.json").write_text(text + "\n", encoding="utf-8")
    return len(text.encode()), slim


def read_source(mirrors: Path, item: dict) -> list[dict]:
    """The source resources of one chart, in R4 form."""
    resources = _read_package(mirrors, item) if "package" in item else _read_repository(mirrors, item)
    return [stu3_to_r4(r) for r in resources] if item.get("fhir_version") == "STU3" else resources


def _read_package(mirrors: Path, item: dict) -> list[dict]:
    """The examples of one patient in a FHIR IG package (npm tarball), checked against its integrity hash."""
    tarball = mirrors / f"{item['package']}-{item['version']}.tgz"
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if f"sha512-{digest}" != item["integrity"]:
        raise SystemExit(f"{tarball}: integrity does not match sources.json")
    with tarfile.open(tarball) as archive:
        examples = [json.load(archive.extractfile(member)) for member in archive.getmembers()
                    if member.name.startswith("package/example/") and member.name.endswith(".json")]
    wanted = f"Patient/{item['patient']}"
    return [r for r in examples if r["resourceType"] == "Patient" and r.get("id") == item["patient"]
            or r["resourceType"] != "Bundle" and (r.get("subject") or r.get("patient") or {}).get("reference") == wanted]


def _read_repository(mirrors: Path, item: dict) -> list[dict]:
    """The source resources of one chart, read from a git mirror of its repository at the cited commit."""
    git_dir = mirrors / item["repo"].replace("/", "+") / "repo"

    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(git_dir), "show", f"{item['commit']}:{path}"],
                              check=True, capture_output=True, text=True).stdout

    if item["format"] == "bundle":  # one patient's Bundle, possibly split over several files
        return [_with_id(entry) for path in item["paths"] for entry in json.loads(show(path))["entry"]]
    if item["format"] == "ndjson":  # bulk export: keep the lines of this patient
        wanted = {f"Patient/{item['patient']}"}
        lines = [json.loads(line) for path in item["paths"] for line in show(path).splitlines() if line.strip()]
        return [r for r in lines if r.get("id") == item["patient"] and r["resourceType"] == "Patient"
                or (r.get("subject") or r.get("patient") or {}).get("reference") in wanted]
    return [json.loads(show(path)) for path in item["paths"]]


def _with_id(entry: dict) -> dict:
    resource = entry["resource"]
    if "id" not in resource and entry.get("fullUrl", "").startswith("urn:uuid:"):
        resource["id"] = entry["fullUrl"][len("urn:uuid:"):]
    return resource


if __name__ == "__main__":
    # usage: import_charts.py MIRRORS  (MIRRORS/<owner>+<name>/repo: git mirrors of the repositories in sources.json)
    here = Path(__file__).parent
    for item in json.loads((here / "sources.json").read_text(encoding="utf-8")):
        size, slim = write(item["name"], read_source(Path(sys.argv[1]), item), item["prefix"], here / "charts")
        print(f"{item['name']}: {size // 1024} KB{' (non-laboratory Observations left out)' if slim else ''}")
