"""FHIR ValueSet files: the shipped expansions in knowledge/terminology and the reader that loads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.kb.fhir_valuesets import ValueSetFileError, read_valueset, read_valueset_file

REPO = Path(__file__).resolve().parents[1]
TERMINOLOGY = REPO / "knowledge" / "terminology"
FILES = sorted(TERMINOLOGY.glob("*.json"))

SCT = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"

#: Codes clinical-knowledge.md rejects, and ICD-10-CM headers that may only be prefixes.
REJECTED = {"33746-8", "Z85.43", "R10.9", "M89.8X9", "R10.2", "M54.5", "R05", "R51", "126847008"}


def vs(name: str):
    return read_valueset_file(TERMINOLOGY / f"{name}.json")


# -- the shipped files ------------------------------------------------------------------------------

def test_every_shipped_file_reads_with_members_and_a_unique_url():
    assert len(FILES) >= 25
    urls = set()
    for path in FILES:
        expansion = read_valueset_file(path)
        assert expansion.members, path.name
        assert expansion.url not in urls, path.name
        urls.add(expansion.url)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_lists_every_member_once_and_says_how_many(path):
    doc = json.loads(path.read_text())
    listed = [(c["system"], c["code"]) for c in doc["expansion"]["contains"]]
    assert len(listed) == len(set(listed))
    assert doc["expansion"]["total"] == len(listed)
    assert doc["id"] == path.stem


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_cites_where_its_members_came_from(path):
    expansion = read_valueset_file(path)
    for source in expansion.sources:
        assert source.repository and source.path, (path.name, source)
        assert source.commit or source.repository.startswith("PyPI"), (path.name, source)
    assert path.stem in (TERMINOLOGY / "SOURCES.md").read_text()
    assert path.stem in (TERMINOLOGY / "README.md").read_text()


def test_no_rejected_code_and_no_cpt_descriptor_ships():
    for path in FILES:
        for system, code, display in read_valueset_file(path).members:
            assert code not in REJECTED, (path.name, code)
            if system == CPT:
                assert display == "", (path.name, code)   # AMA descriptors are not ours to ship


def test_breast_cancer_covers_snomed_descendants_and_c50():
    breast = vs("breast-cancer-primary").codes()
    for code in ("254837009", "353431000119107", "188155002", "372064008", "408643008"):
        assert (SCT, code) in breast
    assert (ICD10CM, "C50.911") in breast and (ICD10CM, "C50.412") in breast
    assert (SCT, "94655007") not in breast     # secondary neoplasm *in* the breast is not breast cancer
    assert (SCT, "12241031000119108") not in breast   # "Metastatic malignant neoplasm to left breast"
    assert (SCT, "278050001") not in breast    # sarcoma of breast
    assert (SCT, "189336000") not in breast and (SCT, "126926005") not in breast   # in situ; "Neoplasm of breast"


def test_history_of_breast_cancer_is_not_family_history_or_risk():
    history = vs("breast-cancer-history").codes()
    risk = vs("breast-cancer-risk-not-cancer").codes()
    assert (ICD10CM, "Z85.3") in history and (SCT, "415076002") in history
    assert (SCT, "429740004") not in history   # family history of breast cancer
    assert {(ICD10CM, "Z15.01"), (ICD10CM, "Z80.3"), (ICD10CM, "Z90.12")} <= risk
    assert not risk & (history | vs("breast-cancer-primary").codes())


def test_mastectomy_status_is_not_cancer_and_only_bilateral_removes_both_breasts():
    bilateral = vs("bilateral-mastectomy-status").codes()
    assert {(ICD10CM, "Z90.13"), (SCT, "428529004"), (SCT, "726636007")} <= bilateral
    assert (ICD10CM, "Z90.12") not in bilateral and (SCT, "1279986002") not in bilateral   # one side; nipples only
    assert (SCT, "428540007") in vs("breast-cancer-risk-not-cancer").codes()   # "History of mastectomy"


def test_rectal_cancer_holds_no_anal_cancer():
    rectal, anal = vs("rectal-cancer"), vs("anal-cancer")
    codes = rectal.codes()
    assert {(SCT, "363351006"), (ICD10CM, "C20"), (ICD10CM, "C19")} <= codes
    assert not codes & anal.codes()
    assert (ICD10CM, "C21.1") in anal.codes()
    assert not any(code.startswith("C21") or code.startswith("Z85.04") for _, code in codes)
    assert (ICD10CM, "Z85.048") in vs("rectal-or-anal-cancer-history").codes()
    assert vs("rectal-cancer-history").codes() == {(SCT, "429084005"), (SCT, "10987871000119109"),
                                                   (SCT, "1204448006")}   # rectum / rectosigmoid only
    assert any(code == "187760008" for _, code, _, _ in rectal.excluded)   # rectum + anus together


def test_cervical_cancer_leaves_out_non_invasive_and_other_primaries():
    cervix = vs("cervical-cancer")
    assert {(SCT, "363354003"), (ICD10CM, "C53.9")} <= cervix.codes()
    assert (SCT, "369473007") in cervix.codes()      # cervical cancer extending into the bladder
    for code in ("254889004", "80914001", "369499000", "92564006"):   # stage 0, anaplasia, vaginal primary, CIS
        assert (SCT, code) not in cervix.codes()
        assert any(c == code for _, c, _, _ in cervix.excluded)


def test_metastasis_sets_by_site():
    bone, lung, brain = (vs(f"secondary-malignant-neoplasm-{s}") for s in ("bone", "lung", "brain"))
    assert {(ICD10CM, "C79.51"), (SCT, "94222008"), (SCT, "94602001")} <= bone.codes()
    assert vs("secondary-malignant-neoplasm-vertebral").codes() <= bone.codes()
    assert (ICD10CM, "C78.01") in lung.codes() and (SCT, "457721000124104") not in lung.codes()
    assert (ICD10CM, "C79.31") in brain.codes() and (ICD10CM, "C79.32") not in brain.codes()
    anywhere = vs("secondary-malignant-neoplasm-any").codes()
    for site in ("bone", "liver", "lung", "brain", "lymph-nodes"):
        assert vs(f"secondary-malignant-neoplasm-{site}").codes() <= anywhere
    assert not bone.codes() & vs("bone-cancer-primary").codes()


def test_treatments_and_devices():
    drugs = vs("chemotherapy-drugs")
    assert (RXNORM, "583214") in drugs.codes()           # paclitaxel 100 MG Injection (Synthea writes it)
    assert not [d for _, _, d in drugs.members if "methotrexate" in d and "Auto-Injector" in d]
    endocrine = vs("endocrine-therapy-breast").codes()
    assert {(RXNORM, "10324"), (RXNORM, "199224"), (RXNORM, "203870")} <= endocrine
    radiotherapy = vs("radiotherapy").codes()
    assert {(CPT, "77427"), (ICD10CM, "Z92.3"), (SCT, "33195004")} <= radiotherapy
    assert (SCT, "182975000") not in vs("chemotherapy-procedures").codes()   # tuberculosis chemotherapy
    devices = vs("mr-relevant-implanted-device-type").codes()
    assert {(SCT, "14106009"), (SCT, "72506001"), (SCT, "43252007")} <= devices
    assert vs("cardiac-implanted-device-type").codes() <= devices


def test_kidney_stage_and_device_evidence():
    ckd = vs("ckd-stage-4-5-or-dialysis").codes()
    assert {(ICD10CM, "N18.4"), (SCT, "721000119107"), (SCT, "433146000")} <= ckd   # incl. diabetic CKD 4
    assert (SCT, "236436003") not in ckd and (ICD10CM, "I12.9") not in ckd        # graft; "stage 1-4"
    assert (SCT, "423121009") in vs("stage-iv-cancer-condition").codes()           # NSCLC, TNM stage 4
    assert (SCT, "2640006") in vs("stage-iv-or-m1").codes()   # what Synthea writes as the 21908-9 value
    implanted = vs("cardiac-device-implantation-procedure")
    assert (SCT, "307280005") in implanted.codes()
    assert not [d for _, _, d in implanted.members if "temporary" in d.lower()]
    assert (SCT, "441509002") in vs("cardiac-implanted-device-condition").codes()


# -- the reader -------------------------------------------------------------------------------------

def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "site-valueset.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_reader_flattens_nested_contains_and_cites_a_plain_published_file(tmp_path):
    doc = {"resourceType": "ValueSet", "url": "http://cts.nlm.nih.gov/fhir/ValueSet/1.2.3", "title": "Site set",
           "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}], "publisher": "NLM",
           "expansion": {"timestamp": "2026-01-01", "total": 3, "contains": [
               {"abstract": True, "display": "group", "contains": [
                   {"system": SCT, "code": "363351006", "display": "Malignant tumor of rectum (disorder)"},
                   {"system": ICD10CM, "code": "C20"}]},
               {"system": ICD10CM, "code": "C19", "display": "Malignant neoplasm of rectosigmoid junction"},
               {"system": ICD10CM, "code": "C20"}]}}
    expansion = read_valueset_file(_write(tmp_path, doc))
    assert expansion.codes() == {(SCT, "363351006"), (ICD10CM, "C20"), (ICD10CM, "C19")}
    assert "1.2.3" in expansion.citation and "NLM" in expansion.citation


def test_reader_accepts_an_enumerated_compose_less_its_excludes():
    doc = {"resourceType": "ValueSet", "url": "urn:site:vs", "compose": {
        "include": [{"system": SCT, "concept": [{"code": "14106009", "display": "Cardiac pacemaker"},
                                                {"code": "72506001"}]}],
        "exclude": [{"system": SCT, "concept": [{"code": "72506001"}]}]}}
    assert read_valueset(doc).members == ((SCT, "14106009", "Cardiac pacemaker"),)


@pytest.mark.parametrize("doc, reason", [
    ({"resourceType": "ValueSet", "url": "urn:x", "compose": {"include": [
        {"system": SCT, "filter": [{"property": "concept", "op": "is-a", "value": "363346000"}]}]}},
     "intensional"),
    ({"resourceType": "ValueSet", "url": "urn:x", "compose": {"include": [{"system": SCT}]}}, "concept list"),
    ({"resourceType": "ValueSet", "url": "urn:x", "expansion": {"total": 1000, "contains": [
        {"system": SCT, "code": "1"}]}}, "truncated"),
    ({"resourceType": "ValueSet", "url": "urn:x", "expansion": {"offset": 1000, "contains": [
        {"system": SCT, "code": "1"}]}}, "one page"),
    ({"resourceType": "ValueSet", "url": "urn:x", "expansion": {"contains": [{"code": "C20"}]}},
     "needs a system and a code"),
    ({"resourceType": "CodeSystem", "url": "urn:x"}, "not a FHIR ValueSet"),
    ({"resourceType": "ValueSet", "expansion": {"contains": [{"system": SCT, "code": "1"}]}}, "no url"),
    ({"resourceType": "ValueSet", "url": "urn:x"}, "lists no members"),
    ("{not json", "not valid JSON"),
])
def test_reader_refuses_what_it_cannot_use_naming_file_and_reason(tmp_path, doc, reason):
    path = _write(tmp_path, doc)
    with pytest.raises(ValueSetFileError) as caught:
        read_valueset_file(path)
    assert isinstance(caught.value, ValueError)
    assert str(path) in str(caught.value) and reason in str(caught.value)


def test_reader_refuses_a_missing_file(tmp_path):
    with pytest.raises(ValueSetFileError, match="cannot read"):
        read_valueset_file(tmp_path / "absent.json")
