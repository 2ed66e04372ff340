"""The shipped knowledge base and its loader: validity, provenance, refusal of broken files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from cds_service.chart.facts import Code
from cds_service.kb.model import CPT, ICD10CM, LOINC, SNOMED, Appropriateness, Knowledge
from cds_service.kb.loader import KnowledgeError, load_knowledge

REPO = Path(__file__).resolve().parents[1]
KB = REPO / "knowledge"
SHARED = REPO.parent / "shared"

SCENARIO_IDS = {
    "cervix-suspected-recurrence",
    "bone-tumour-local-surveillance",
    "spine-metastasis-new-symptoms",
    "spine-metastasis-systemic-progression",
    "spine-metastasis-follow-up",
    "breast-symptom-directed-workup",
    "breast-distant-surveillance-asymptomatic",
    "breast-local-surveillance-mammography",
    "rectal-presacral-recurrence",
    "rectal-post-treatment-surveillance",
}

#: Codes tagged ❌ (unverified) or rejected in clinical-knowledge.md: they must never ship as codes.
#: (R10.2, M54.5, R05 and R51 are non-billable ICD-10-CM headers: allowed as hierarchy prefixes only.)
UNVERIFIED_CODES = {
    "33746-8",   # SCC antigen LOINC claimed by one file, not corroborated (9679-2 is used)
    "Z85.43",    # ovary, not cervix (cervix history is Z85.41)
    "R10.9",     # flank pain: index mapping unverified
    "M89.8X9",   # bone pain: index mapping unverified
    "9180/3",    # ICD-O-3 osteosarcoma morphology, unverified
    "R10.2", "M54.5", "R05", "R51",   # headers, not codes
}


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return load_knowledge()


def _copy_kb(tmp_path: Path) -> Path:
    target = tmp_path / "kb"
    shutil.copytree(KB, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))


def _problems(base: Path | None, extra=()) -> str:
    with pytest.raises(KnowledgeError) as caught:
        load_knowledge(base, extra)
    return str(caught.value)


# -- the shipped knowledge base -----------------------------------------------------------------


def test_shipped_knowledge_loads(kb: Knowledge):
    assert re.fullmatch(r"\d{4}\.\d+\.\d+", kb.version)
    assert {s.id for s in kb.scenarios} == SCENARIO_IDS
    priorities = [s.priority for s in kb.scenarios]
    assert priorities == sorted(priorities, reverse=True)


def test_packaged_and_explicit_directory_agree(kb: Knowledge):
    explicit = load_knowledge(KB)
    assert explicit.version == kb.version
    assert set(explicit.procedures) == set(kb.procedures)


def test_schema_is_valid_draft_2020_12():
    schema = json.loads((KB / "schema" / "knowledge.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    for kind in ("manifest", "sources", "procedures", "valuesets", "definitions", "contraindications",
                 "override_reasons", "scenario", "criterion"):
        assert kind in schema["$defs"]


def test_every_code_and_rating_cites_an_existing_source(kb: Knowledge):
    for procedure in kb.procedures.values():
        assert procedure.codes, procedure.id
        for code in procedure.codes:
            assert code.source in kb.sources and code.confidence in {"verified", "secondary"}
        if procedure.radiation.source:
            assert procedure.radiation.source in kb.sources
    for valueset in kb.valuesets.values():
        for code in valueset.entries:
            assert code.source in kb.sources and code.confidence in {"verified", "secondary"}
    for scenario in kb.scenarios:
        assert scenario.sources and set(scenario.sources) <= set(kb.sources)
        for rating in scenario.ratings:
            assert rating.sources and set(rating.sources) <= set(kb.sources), (scenario.id, rating.procedure)
            assert rating.confidence in {"verified", "secondary", "seed"}
            assert rating.procedure in kb.procedures
        if scenario.surveillance:
            assert set(scenario.surveillance.source) <= set(kb.sources)
        for recommendation in scenario.recommendations:
            assert set(recommendation.sources) <= set(kb.sources)
        assert set(scenario.override_reasons) <= set(kb.override_reasons)
    for contraindication in kb.contraindications:
        assert set(contraindication.sources) <= set(kb.sources)


def test_seed_ratings_cite_a_seed_document(kb: Knowledge):
    seeds = {sid for sid, source in kb.sources.items() if source.kind == "seed"}
    assert len(seeds) == 5
    for scenario in kb.scenarios:
        for rating in scenario.ratings:
            if rating.confidence == "seed":
                assert seeds & set(rating.sources), (scenario.id, rating.procedure)


def _all_codes(kb: Knowledge):
    for procedure in kb.procedures.values():
        for code in procedure.codes:
            yield code.system, code.code
    for valueset in kb.valuesets.values():
        for code in valueset.entries:
            yield code.system, code.code


def test_no_unverified_code_is_shipped(kb: Knowledge):
    shipped = {code.upper() for _, code in _all_codes(kb)}
    assert not shipped & {code.upper() for code in UNVERIFIED_CODES}
    cervix = kb.valuesets["cervical-cancer-history"]
    assert cervix.contains(Code(ICD10CM, "Z85.41"))
    assert not cervix.contains(Code(ICD10CM, "Z85.43"))


def test_cpt_descriptors_are_not_shipped(kb: Knowledge):
    for procedure in kb.procedures.values():
        for code in procedure.codes:
            if code.system == CPT:
                assert code.display is None, (procedure.id, code.code)


def test_sandbox_codes_resolve_to_the_right_studies(kb: Knowledge):
    def ids(*codes: str) -> list[str]:
        return [p.id for p in kb.procedures_for(tuple(Code(CPT, c) for c in codes))]

    assert ids("72197") == ["mri-abdomen-pelvis-wo-w", "mri-pelvis-wo-w"]
    assert ids("78816") == ["pet-ct-whole-body"]          # PET/CT whole body, not skull base to mid-thigh
    assert ids("78812") == ["pet-skull-base-mid-thigh"]   # PET without CT
    assert ids("78815") == ["fdg-pet-ct-skull-base-mid-thigh"]
    assert ids("70553") == ["mri-brain-wo-w"]
    assert ids("71260", "74177")[0] == "ct-chest-abdomen-pelvis-w"
    assert ids("73721") == ["mri-lower-extremity-joint-wo"]   # knee MRI: catalogued (issue 10, point 5)
    assert ids("70336") == []                              # TMJ MRI: not in the catalogue
    cea = kb.valuesets["cea"]
    assert cea.contains(Code(LOINC, "2039-6"))
    assert not cea.contains(Code("urn:oid:2.16.840.1.113883.6.238", "2039-6"))   # CDC race code, same string


def test_valueset_contains_handles_icd10_prefixes_dots_and_aliases(kb: Knowledge):
    cervix = kb.valuesets["cervical-cancer"]
    assert cervix.contains(Code(ICD10CM, "C53.9"))
    assert cervix.contains(Code(ICD10CM, "c539"))
    assert cervix.contains(Code("http://hl7.org/fhir/sid/icd-10", "C53.0"))
    assert cervix.contains(Code(SNOMED, "363354003"))
    assert not cervix.contains(Code(ICD10CM, "C54.1"))
    assert not cervix.contains(Code(SNOMED, "C53.9"))
    pelvic_pain = kb.valuesets["pelvic-pain"]
    assert pelvic_pain.contains(Code(ICD10CM, "R10.24"))
    assert not pelvic_pain.contains(Code(ICD10CM, "R10.9"))
    history = kb.valuesets["cervical-cancer-history"]
    assert history.contains(Code(ICD10CM, "Z8541"))


def test_knows_code_covers_value_sets_prefixes_and_the_catalogue(kb: Knowledge):
    # What the chart reader may keep: anything some criterion or catalogue entry could match.
    for _ in range(2):   # the second round answers from memory
        assert kb.knows_code(LOINC, "2039-6")                                     # CEA (value set)
        assert kb.knows_code(ICD10CM, "C53.0")                                    # cervix (ICD-10 prefix)
        assert kb.knows_code("urn:oid:2.16.840.1.113883.6.90", "c530")            # alias, no dot, lower case
        assert kb.knows_code(CPT, "78816")                                        # PET/CT (catalogue only)
        assert not kb.knows_code(LOINC, "718-7")                                  # haemoglobin
        assert not kb.knows_code(SNOMED, "38341003")                              # hypertension
        assert not kb.knows_code("urn:oid:2.16.840.1.113883.6.238", "2039-6")     # same string, other system


def test_valuesets_with_agrees_with_each_value_sets_own_membership(kb: Knowledge):
    # The criteria evaluator indexes a chart through valuesets_with: it must find exactly the value
    # sets that would each say they contain the code (members, prefixes, aliases, spelling).
    probes = {code for valueset in kb.valuesets.values() for code in valueset.codes}
    probes |= {(system, prefix + "9") for valueset in kb.valuesets.values() for system, prefix in valueset.prefixes}
    probes |= set(kb.code_index)
    probes |= {(LOINC, "718-7"), (ICD10CM, "C53.0"), ("urn:oid:2.16.840.1.113883.6.90", "c530")}
    assert any(len(kb.valuesets_with(*probe)) > 1 for probe in probes), "some code is in several value sets"
    for system, code in probes:
        expected = {v.id for v in kb.valuesets.values() if v.contains(Code(system, code))}
        found = kb.valuesets_with(system, code)
        assert set(found) == expected and len(found) == len(expected), (system, code)


def test_knows_code_includes_site_extra_value_sets(tmp_path: Path):
    knowledge = load_knowledge(None, [_site_dir(tmp_path)])
    assert knowledge.knows_code(ICD10CM, "C34.90")


def test_ratings_and_preferences_are_consistent(kb: Knowledge):
    cervix = next(s for s in kb.scenarios if s.id == "cervix-suspected-recurrence")
    table = {r.procedure: r.rating for r in cervix.ratings}
    assert table["mri-abdomen-pelvis-wo-w"] is Appropriateness.USUALLY_APPROPRIATE
    assert table["us-pelvis"] is Appropriateness.USUALLY_NOT_APPROPRIATE
    assert [p.procedure for p in cervix.preferred] == [
        "mri-abdomen-pelvis-wo-w", "ct-abdomen-pelvis-w", "fdg-pet-ct-skull-base-mid-thigh"]
    breast = next(s for s in kb.scenarios if s.id == "breast-distant-surveillance-asymptomatic")
    assert breast.low_value_surveillance
    assert all(r.rating is Appropriateness.USUALLY_NOT_APPROPRIATE for r in breast.ratings)
    spine = next(s for s in kb.scenarios if s.id == "spine-metastasis-follow-up")
    assert spine.surveillance.intervals == ((12, 3), (24, 6), (None, 12))


def test_clinician_text_is_not_copied_from_the_sources(kb: Knowledge):
    """Own words: no run of 8 words in names, summaries, advice or labels is found in the sources."""
    references = [*(SHARED / "seeds").glob("*.txt"), SHARED / "reference" / "clinical-knowledge.md"]
    references = [path for path in references if path.exists()]
    if not references:
        pytest.skip("shared/ reference texts not available")

    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def shingles(text: str, n: int = 8) -> set[tuple[str, ...]]:
        w = words(text)
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}

    source_shingles: set[tuple[str, ...]] = set()
    for path in references:
        source_shingles |= shingles(path.read_text(encoding="utf-8"))
    texts = [p.name for p in kb.procedures.values()]
    texts += [c.label for c in kb.contraindications] + [o.display for o in kb.override_reasons.values()]
    texts += [c.advice for c in kb.contraindications if c.advice]
    for s in kb.scenarios:
        texts += [s.title, s.summary, s.advice, *(r.summary for r in s.recommendations), *(r.detail for r in s.recommendations)]
        texts += [r.note for r in s.ratings if r.note]
    copied = [text for text in texts if shingles(text) & source_shingles]
    assert not copied


# -- broken files are refused with a useful message ----------------------------------------------


def test_typo_key_in_a_criterion_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    path = base / "scenarios" / "cervix-suspected-recurrence.json"
    _edit(path, lambda d: d["scenario"]["when"]["all"].append({"condition": "pelvic-pain", "withn_days": 90}))
    message = _problems(base)
    assert "cervix-suspected-recurrence.json" in message and "withn_days" in message
    assert "$.scenario.when.all[3]" in message


def test_typo_key_at_top_level_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    _edit(base / "procedures.json", lambda d: d["procedures"][0].update(modalty="MR"))
    message = _problems(base)
    assert "procedures.json" in message and "modalty" in message


def test_two_operators_in_one_criterion_are_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    path = base / "definitions.json"
    _edit(path, lambda d: d["definitions"].update({"broken": {"condition": "pelvic-pain", "procedure": "radiotherapy"}}))
    message = _problems(base)
    assert "definitions.json" in message and "exactly one operator" in message


def test_unknown_valueset_reference_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    path = base / "scenarios" / "bone-tumour-local-surveillance.json"
    _edit(path, lambda d: d["scenario"]["when"]["all"].append({"condition": "no-such-valueset"}))
    message = _problems(base)
    assert "bone-tumour-local-surveillance.json" in message
    assert "unknown value set 'no-such-valueset'" in message


def test_device_safety_options_name_value_sets_and_belong_to_devices(tmp_path: Path):
    base = _copy_kb(tmp_path)

    def break_it(d):
        d["contraindications"][0]["when"]["any"][0]["safety_in"] = "no-such-labelling"
        d["contraindications"].append({"id": "broken", "label": "Broken", "blocks": ["mri"], "sources": ["icd10cm-2026"],
                                       "when": {"condition": "claustrophobia", "safety_in": "mr-unsafe-labelling"}})
    _edit(base / "contraindications.json", break_it)
    message = _problems(base)
    assert "contraindications.json" in message and "safety_in" in message  # not a device option
    base = _copy_kb(tmp_path / "second")
    _edit(base / "contraindications.json",
          lambda d: d["contraindications"][0]["when"]["any"][0].update(safety_in="no-such-labelling"))
    assert "unknown value set 'no-such-labelling'" in _problems(base)


def test_unknown_procedure_and_definition_are_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    path = base / "scenarios" / "rectal-presacral-recurrence.json"

    def change(d):
        d["scenario"]["ratings"].append({"procedure": "mri-knee", "rating": "usually-appropriate",
                                         "sources": ["seed-004-rectal"], "confidence": "seed"})
        d["scenario"]["when"]["all"].append({"ref": "no-such-definition"})

    _edit(path, change)
    message = _problems(base)
    assert "unknown procedure 'mri-knee'" in message
    assert "unknown definition 'no-such-definition'" in message


def test_duplicate_id_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    _edit(base / "valuesets.json", lambda d: d["valuesets"].append(dict(d["valuesets"][0])))
    message = _problems(base)
    assert "valuesets.json" in message and "duplicate value set id 'cervical-cancer'" in message


def test_missing_source_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    _edit(base / "procedures.json", lambda d: d["procedures"][0]["codes"][0].update(source="nowhere"))
    message = _problems(base)
    assert "procedures.json" in message and "unknown source 'nowhere'" in message


def test_code_without_source_or_confidence_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    _edit(base / "valuesets.json", lambda d: d["valuesets"][0]["codes"][0].pop("confidence"))
    message = _problems(base)
    assert "valuesets.json" in message and "'confidence' is a required property" in message


def test_unverified_confidence_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    _edit(base / "valuesets.json", lambda d: d["valuesets"][0]["codes"][0].update(confidence="unverified"))
    assert "valuesets.json" in _problems(base)


def test_definition_cycle_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    _edit(base / "definitions.json", lambda d: d["definitions"].update(
        {"loop-a": {"ref": "loop-b"}, "loop-b": {"not": {"ref": "loop-a"}}}))
    assert "cycle" in _problems(base)


def test_unrated_preference_is_refused(tmp_path: Path):
    base = _copy_kb(tmp_path)
    path = base / "scenarios" / "cervix-suspected-recurrence.json"
    _edit(path, lambda d: d["scenario"]["preferred"].append({"procedure": "us-pelvis"}))
    assert "could never be recommended" in _problems(base)


def test_invalid_json_and_unknown_file_are_reported(tmp_path: Path):
    base = _copy_kb(tmp_path)
    (base / "scenarios" / "broken.json").write_text("{not json")
    (base / "valueset.json").write_text("{}")
    message = _problems(base)
    assert "broken.json" in message and "not valid JSON" in message
    assert "valueset.json" in message and "unknown knowledge file" in message


def test_every_problem_is_listed_at_once(tmp_path: Path):
    base = _copy_kb(tmp_path)
    _edit(base / "procedures.json", lambda d: d["procedures"][0]["codes"][0].update(source="nowhere"))
    _edit(base / "override_reasons.json", lambda d: d["override_reasons"].append(dict(d["override_reasons"][0])))
    with pytest.raises(KnowledgeError) as caught:
        load_knowledge(base)
    assert len(caught.value.problems) >= 2


# -- extra directories ------------------------------------------------------------------------


def _site_scenario(scenario_id: str = "site-lung-surveillance", priority: int = 70) -> dict:
    return {"scenario": {
        "id": scenario_id, "title": "Site example: a locally licensed scenario", "cancer_site": "lung",
        "phase": "routine-surveillance", "priority": priority, "sources": ["site-licensed-acr"],
        "summary": "Example scenario added by a site.",
        "when": {"condition": "site-lung-cancer"},
        "ratings": [{"procedure": "ct-chest-wo", "rating": "usually-appropriate",
                     "sources": ["site-licensed-acr"], "confidence": "verified"}],
        "preferred": [{"procedure": "ct-chest-wo"}],
        "override_reasons": ["other-clinical-judgement"],
    }}


def _site_dir(tmp_path: Path) -> Path:
    extra = tmp_path / "site"
    (extra / "scenarios").mkdir(parents=True)
    (extra / "sources.json").write_text(json.dumps({"sources": [
        {"id": "site-licensed-acr", "title": "Licensed ACR criteria (site copy)", "citation": "Site licence", "kind": "acr-ac"}]}))
    (extra / "valuesets.json").write_text(json.dumps({"valuesets": [
        {"id": "site-lung-cancer", "title": "Lung cancer", "codes": [],
         "prefixes": [{"system": ICD10CM, "prefix": "C34", "source": "icd10cm-2026", "confidence": "verified"}]}]}))
    (extra / "scenarios" / "site-lung-surveillance.json").write_text(json.dumps(_site_scenario()))
    return extra


def test_extra_directory_adds_a_scenario(tmp_path: Path):
    knowledge = load_knowledge(None, [_site_dir(tmp_path)])
    ids = [s.id for s in knowledge.scenarios]
    assert "site-lung-surveillance" in ids
    assert SCENARIO_IDS <= set(ids)
    assert ids.index("site-lung-surveillance") < ids.index("bone-tumour-local-surveillance")   # priority 70 > 60
    assert knowledge.valuesets["site-lung-cancer"].contains(Code(ICD10CM, "C34.90"))


def test_extra_manifest_extends_the_version(tmp_path: Path):
    extra = _site_dir(tmp_path)
    (extra / "manifest.json").write_text(json.dumps({"knowledge_version": "2026.1.0", "title": "Site criteria"}))
    knowledge = load_knowledge(None, [extra])
    assert knowledge.version.endswith("+2026.1.0")


def test_extra_directory_cannot_redefine_an_id(tmp_path: Path):
    extra = _site_dir(tmp_path)
    (extra / "valuesets.json").write_text(json.dumps({"valuesets": [
        {"id": "cervical-cancer", "title": "Shadow", "codes": [
            {"system": SNOMED, "code": "1", "source": "sandbox-pama-snomed", "confidence": "verified"}]}]}))
    (extra / "scenarios" / "cervix.json").write_text(json.dumps(_site_scenario("cervix-suspected-recurrence")))
    message = _problems(None, [extra])
    assert "duplicate value set id 'cervical-cancer'" in message and "already defined in knowledge/valuesets.json" in message
    assert "duplicate scenario id 'cervix-suspected-recurrence'" in message


def test_extra_directory_errors_name_the_extra_file(tmp_path: Path):
    extra = _site_dir(tmp_path)
    scenario = _site_scenario()
    scenario["scenario"]["ratings"][0]["rating"] = "appropriate"
    (extra / "scenarios" / "site-lung-surveillance.json").write_text(json.dumps(scenario))
    message = _problems(None, [extra])
    assert str(extra / "scenarios" / "site-lung-surveillance.json") in message
    assert "$.scenario.ratings[0].rating" in message


def test_missing_extra_directory_is_reported(tmp_path: Path):
    assert "not a directory" in _problems(None, [tmp_path / "nowhere"])


# -- the validation cache: only changed files are validated again ---------------------------------


def test_validation_cache_skips_unchanged_files_and_never_hides_a_broken_one(tmp_path: Path, monkeypatch):
    import cds_service.kb.loader as loader

    validated: list[str] = []
    real = loader.schema_problems
    monkeypatch.setattr(loader, "schema_problems", lambda kind, data, label: validated.append(label) or real(kind, data, label))
    base, cache = _copy_kb(tmp_path), tmp_path / "cache"
    first = load_knowledge(base, cache_dir=cache)
    files = len(validated)
    assert files > 10 and (cache / "knowledge-validated.json").exists()

    validated.clear()
    again = load_knowledge(base, cache_dir=cache)
    assert validated == [], "unchanged files are not validated again"
    assert again.version == first.version and [s.id for s in again.scenarios] == [s.id for s in first.scenarios]

    path = base / "scenarios" / "cervix-suspected-recurrence.json"
    _edit(path, lambda d: d["scenario"]["when"]["all"].append({"condition": "pelvic-pain", "withn_days": 90}))
    with pytest.raises(KnowledgeError) as caught:
        load_knowledge(base, cache_dir=cache)
    assert "withn_days" in str(caught.value)
    assert validated == [f"{base}/scenarios/cervix-suspected-recurrence.json"], "only the changed file"

    validated.clear()
    with pytest.raises(KnowledgeError):
        load_knowledge(base, cache_dir=cache)  # the broken file was never remembered as valid
    assert validated == [f"{base}/scenarios/cervix-suspected-recurrence.json"]


def test_check_knowledge_validates_everything_and_warms_the_cache(tmp_path: Path, monkeypatch):
    import cds_service.kb.loader as loader

    cache = tmp_path / "cache"
    load_knowledge(cache_dir=cache)
    validated: list[str] = []
    real = loader.schema_problems
    monkeypatch.setattr(loader, "schema_problems", lambda kind, data, label: validated.append(label) or real(kind, data, label))
    load_knowledge(cache_dir=cache, trust_cache=False)
    assert len(validated) > 10, "check-knowledge trusts no cache"
