"""Rebuild the FHIR ValueSet files in this directory from their published sources.

A maintainer's tool, not part of the service: it reads local mirrors of the public repositories
named in SOURCES.md (git object stores, read with `git show`) and the ICD-10-CM tabular bundled in
the PyPI package simple-icd-10-cm 1.5.0, picks members by the rules written next to each value
set below, and writes one ValueSet JSON per value set. Every member comes from a source; nothing
is typed in here except the selection rules and the codes a rule leaves out on purpose.

    python knowledge/terminology/derive.py --mirrors /work/.mirror
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from derive_sources import ICD10CM, MII_KARDIO, RXNORM, SCT, Sources, pick, sandbox_reasons
from derive_write import icd10cm_part, split, synthea, write_valueset

VSAC_CANCER = "input/vocabulary/valueset/external/valueset-2.16.840.1.113762.1.4.1111.161.json"
VSAC_COLON = "input/vocabulary/valueset/external/ValueSet-2.16.840.1.113883.3.464.1003.108.12.1001-20240112.json"
VSAC_CANCER_PAGE = "input/vocabulary/valueset/external/ValueSet-2.16.840.1.113883.3.526.3.1010-20200306.json"
# Applied first to every cancer selection: lesions not known to be malignant, and statements that are not a
# diagnosis of cancer in this patient (the sandbox's reason list mixes these in).
NOT_CANCER = [(r"benign|^neoplasm of|uncertain behavio|\bpolyp", "not known to be malignant (benign lesions included)"),
              (r"screening|family history|declined|no evidence of", "not a diagnosis of cancer in this patient"),
              (r"history of", "a history statement (see the history value sets)")]
MALIGNANT = r"malignan|carcinom|sarcoma|cancer|metasta|\bca\b|neoplas|lymphoma|melanoma|leuk|myeloma|chordoma"
NOT_PRIMARY = [(r"secondary|^metasta(tic|sis)\b.*\bto\b|metastasis of|by separate metastasis|direct extension",
                "secondary (metastatic) deposit in this site, not a primary cancer of it"),
               (r"lymphoma|leuk(a)?emia|myeloma|plasmacytoma", "haematological malignancy, managed apart"),
               (r"melanoma", "melanoma, managed apart"),
               (r"stage 0|in situ|anaplasia", "not invasive cancer")]


def cancer_sources(src: Sources):
    """SNOMED CT members of the VSAC cancer expansions (the complete one first), then the sandbox's reasons."""
    out = []
    for key, path, note in [("qicore2024", VSAC_CANCER, ""),
                            ("dqm2025", VSAC_CANCER_PAGE, " (this file lists the first 1,000 of 7,563 members)")]:
        cite, members = src.vsac(key, path)
        out.append((cite, [m for m in members if m[0] == SCT], note))
    cite, reasons = sandbox_reasons(src.sandbox)
    # the sandbox's list holds every kind of order reason: only its cancer terms take part in the rules below
    out.append((cite, [m for m in reasons if re.search(MALIGNANT, m[2], re.I)],
                " (among reasons whose display names a malignancy)"))
    return out


def site_parts(sources, inc: str, exclusions):
    """split() over each cancer expansion; returns value-set parts and the members left out."""
    parts, dropped, seen = [], [], set()
    for cite, sct, note in sources:
        kept, left = split(sct, inc, NOT_CANCER + list(exclusions))
        parts.append((cite, kept, "SNOMED CT members whose display matches: " + inc + note))
        dropped += [d for d in left if d[0][1] not in seen and not seen.add(d[0][1])]
    return parts, dropped


def cancer_sets(src: Sources) -> None:
    sources = cancer_sources(src)

    inc = r"breast"
    kept, dropped = site_parts(sources, inc, NOT_PRIMARY + [
        (r"sarcoma", "sarcoma of the breast, not breast carcinoma"),
        (r"skin of breast|skin and breast", "skin tumour or a grouping wider than the breast")])
    write_valueset("breast-cancer-primary", "Primary malignant neoplasm of breast",
                   "Breast cancer (carcinoma), any laterality or quadrant, active or in history; includes codes that "
                   "also say the cancer is metastatic (those are in secondary-malignant-neoplasm-any too).",
                   [*kept, icd10cm_part(["C50"])], dropped)

    inc = r"rectum|rectal|rectosigmoid|anorect"
    colon_cite, colon = src.vsac("dqm2025", VSAC_COLON)
    kept, dropped = site_parts(sources + [(colon_cite, [m for m in colon if m[0] == SCT], "")], inc,
                               NOT_PRIMARY[:2] + NOT_PRIMARY[3:] + [
        (r"anus|anal|anorect", "includes the anus or anal canal (anal cancer is not rectal cancer)"),
        (r"rectouterine|rectovaginal|rectovesical|pararectal", "a structure next to the rectum, not the rectum"),
        (r"colon and/or rectum|colon and rectum|colorectal", "may be a colon cancer"),
        (r"melanoma|carcinoid|neuroendocrine|sarcoma|mesenchymal|stromal", "non-adenocarcinoma histology managed "
                                                                             "apart")])
    write_valueset("rectal-cancer", "Malignant neoplasm of rectum or rectosigmoid junction",
                   "Rectal cancer; ICD-10-CM C20 (rectum) and C19 (rectosigmoid junction, included on purpose: "
                   "staged and followed as rectal cancer). Anal cancer (C21) is excluded; see anal-cancer.",
                   [*kept, icd10cm_part(["C19", "C20"])], dropped)

    inc = r"\banus\b|\banal\b|perianal|anorect"
    kept, dropped = site_parts(sources, inc, NOT_PRIMARY[:1])
    write_valueset("anal-cancer", "Malignant neoplasm of anus or anal canal (exclude from rectal)",
                   "Anal and anorectal cancers. Used to keep anal cancer out of rectal-cancer scenarios; also holds "
                   "codes that name rectum and anus together.", [*kept, icd10cm_part(["C21"])],
                   dropped)

    inc = r"cervix|endocervi|exocervi|cervical stump"
    kept, dropped = site_parts(sources, inc, [(r"(extension|metastasis) from uterine cervix", None)] + NOT_PRIMARY + [
        (r"sarcoma|neuroectodermal", "sarcoma or neuroectodermal tumour of the cervix, not cervical carcinoma")])
    write_valueset("cervical-cancer", "Malignant neoplasm of cervix uteri",
                   "Invasive cervical cancer, active or in history (carcinoma in situ excluded).",
                   [*kept, icd10cm_part(["C53"])], dropped)

    inc = (r"\bof bone|bones\b|osteosarcoma|ewing|chondrosarcoma|chordoma|adamantinoma|vertebra|"
           r"of (rib|sternum|clavicle|scapula|sacrum|coccyx|mandible|femur|humerus|tibia|fibula|radius|ulna|pelvic bone)")
    kept, dropped = site_parts(sources, inc, NOT_PRIMARY + [
        (r"extraskeletal|soft tissue", "soft-tissue tumour, not bone"),
        (r"marrow", "bone-marrow disease, not a bone tumour"),
        (r"skin", "skin tumour, not bone"),
        (r"gingiva", "a gum (soft-tissue) tumour"),
        (r"column region", "a body region that may be soft tissue, not bone"),
        (r"alveolus of mandible|epithelial neoplasm of mandible", "an oral carcinoma involving the jaw, not a bone "
                                                                 "sarcoma"),
        (r"connective tissue", "a grouping wider than bone")])
    write_valueset("bone-cancer-primary", "Primary malignant neoplasm of bone",
                   "Primary bone sarcomas (osteosarcoma, Ewing sarcoma, chondrosarcoma, chordoma …) and ICD-10-CM "
                   "C40/C41; metastases to bone are in secondary-malignant-neoplasm-bone.",
                   [*kept, icd10cm_part(["C40", "C41"])], dropped)
    secondary_sets(sources, src)
    stage_iv_condition_set(sources)


SECONDARY = r"secondary|metasta"
NOT_SECONDARY = [(r"history of", "a history statement, not a current finding"),
                 (r"metastasis from|metastatic (carcinoma|malignant neoplasm) of|carcinoma of .* metastatic\b$",
                  "names the primary only; the site of spread is not stated")]
SITES = {
    "bone": (r"bone|vertebra|spine|spinal column|sacrum|coccyx|\brib\b|femur|humerus|skull|marrow|sternum|clavicle|scapula",
             ["C79.5"], "Secondary malignant neoplasm of bone or bone marrow (vertebrae included)"),
    "vertebral": (r"vertebra|spine|spinal column|sacrum|coccyx", [],
                  "Secondary malignant neoplasm of the vertebral column (SNOMED CT only: ICD-10-CM has no "
                  "vertebra-specific code; C79.51 is any bone)"),
    "liver": (r"liver|hepatic", ["C78.7"], "Secondary malignant neoplasm of liver"),
    "lung": (r"\blung|pulmonary", ["C78.0"], "Secondary malignant neoplasm of lung"),
    "brain": (r"brain|cerebrum|cerebral hemisphere|cerebellum", ["C79.31"], "Secondary malignant neoplasm of brain"),
    "lymph-nodes": (r"lymph node", ["C77"], "Secondary malignant neoplasm of lymph nodes (regional or distant: "
                                             "nodal spread alone is not distant metastasis)"),
}


SITE_EXCLUSIONS = NOT_SECONDARY + [
    (r"connective tissue", "a grouping wider than one organ"),
    (r"liver", None),   # liver named: keep, even when the biliary tract is named too
    (r"bile duct|biliary|gallbladder", "biliary tract, not liver"),
    (r"lymph node", "lymph-node deposit, not this organ"),
    (r"soft tissue", "soft-tissue deposit, not bone"),
    (r"hepatic flexure", "the hepatic flexure is part of the colon"),
    (r"lung cancer", "a lung primary that has spread, not a deposit in the lung")]


def secondary_sets(sources, src: Sources) -> None:
    anywhere, dropped = site_parts(sources, SECONDARY, [(r"history of", "a history statement, not a current finding")])
    mc_cite, mc = src.mcode_example_codes("input/fsh/EX_Basic.fsh", {"1287652008", "1098951000119108"})
    mc2_cite, mc2 = src.mcode_example_codes("input/fsh/EX_Staging_Other.fsh", {"128462008"})
    write_valueset("secondary-malignant-neoplasm-any", "Secondary (metastatic) malignant neoplasm, any site",
                   "Any metastatic disease, including nodal spread (C77) and neuroendocrine secondaries (C7B), "
                   "disseminated malignancy (C80.0), and mCODE's history-of-metastatic-cancer codes.",
                   [*anywhere, icd10cm_part(["C77", "C78", "C79", "C7B", "C80.0"]),
                    (mc_cite, mc, "codes used by the mCODE examples for metastatic disease history"),
                    (mc2_cite, mc2, "code used by the mCODE examples for metastatic disease")], dropped)
    secondary = [(cite, members, note) for (cite, members, _), (_, _, note) in zip(anywhere, sources)]
    for site, (rx, roots, title) in SITES.items():
        rules = NOT_SECONDARY if site == "lymph-nodes" else SITE_EXCLUSIONS
        parts, dropped = site_parts(secondary, rx, rules)
        parts = [(c, m, f"SNOMED CT members whose display matches ({SECONDARY}) and ({rx}){note}")
                 for (c, m, _), (_, _, note) in zip(parts, sources)]
        if roots:
            parts.append(icd10cm_part(roots))
        if site == "brain":
            dropped += [((ICD10CM, "C79.32", "Secondary malignant neoplasm of cerebral meninges"),
                         "meninges, not brain parenchyma (C79.3 is not used as a prefix for that reason)")]
        write_valueset(f"secondary-malignant-neoplasm-{site}", title, title + ".", parts, dropped)


def stage_iv_condition_set(sources) -> None:
    parts, dropped = site_parts(sources, r"\bstage (4|iv)\b", [])
    write_valueset("stage-iv-cancer-condition", "Cancer recorded as stage 4 (Condition.code)",
                   "Condition codes that themselves say the cancer is stage 4 (e.g. TNM stage 4 lung cancer, stage 4 "
                   "infiltrating ductal carcinoma of breast): evidence of stage IV disease without a staging "
                   "Observation.", parts, dropped)


def history_and_risk_sets(src: Sources) -> None:
    dcite, dmembers = src.dicom_cid("input/fsh/ValueSet-dicom-cid-6051-BreastProcedureReason.fsh")
    sb, reasons = sandbox_reasons(src.sandbox)
    write_valueset("breast-cancer-history", "Personal history of breast cancer",
                   "A personal history of breast cancer. Family history and acquired absence of breast are not "
                   "evidence of a cancer and are excluded (see breast-cancer-risk-not-cancer).",
                   [icd10cm_part(["Z85.3"]), (dcite, pick(dmembers, codes={"415076002"}), "SNOMED CT 415076002 only"),
                    (sb, pick(reasons, codes={"415076002"}), "SNOMED CT 415076002 only")],
                   [((SCT, "429740004", "Family history of malignant neoplasm of breast (situation)"),
                     "FAMILY history (so displayed in the sandbox's own list), not the patient's own cancer")])
    q = "input/vocabulary/valueset/external/ValueSet-2.16.840.1.113883.3.464.1003.198.12."
    status = [src.vsac("dqm2025", q + v) for v in ("1068-20171219.json", "1069-20171216.json", "1070-20171216.json",
                                                  "1071-20240112.json")]
    write_valueset("breast-cancer-risk-not-cancer", "Breast cancer risk or mastectomy status (not cancer)",
                   "Genetic susceptibility (BRCA), family history, acquired absence of breast and history of "
                   "(prophylactic) mastectomy. None of these is evidence that the patient had breast cancer: a "
                   "carrier after risk-reducing mastectomy has them.",
                   [icd10cm_part(["Z15.01", "Z80.3", "Z90.1"]), *[(c, m, "all members") for c, m in status],
                    (sb, pick(reasons, codes={"428540007", "429740004"}), "history of mastectomy; family history")])
    bilateral = src.vsac("dqm2025", q.replace("12.", "12.") + "1005-20240105.json")
    write_valueset("bilateral-mastectomy-status", "Both breasts removed (no breast left to image)",
                   "History of bilateral mastectomy and bilateral mastectomy procedures: mammography has no breast "
                   "to image. Excision of both nipples alone is not a mastectomy.",
                   [(*status[0], "all members"), (*bilateral, "all members, less the exclusion")],
                   [((SCT, "1279986002", "Excision of bilateral nipples (procedure)"), "nipples only, breasts remain")])
    colon_cite, colon = src.vsac("dqm2025", VSAC_COLON)
    rule = r"^history of .*(rectum|rectosigmoid)"
    write_valueset("rectal-cancer-history", "History of rectal or rectosigmoid cancer (SNOMED CT)",
                   "History codes that name the rectum or rectosigmoid junction (unlike ICD-10-CM Z85.048, which "
                   "includes the anus).", [(colon_cite, split(colon, rule, [])[0], "members matching: " + rule)])
    write_valueset("rectal-or-anal-cancer-history", "History of rectal, rectosigmoid or anal cancer (ambiguous)",
                   "ICD-10-CM Z85.04x does not tell rectum from anus: Z85.048 means rectum, rectosigmoid junction "
                   "or anus. A rectal scenario needs a second fact (a rectal cancer code, a rectal resection, or "
                   "pelvic radiotherapy for rectal cancer) before it may rely on these.",
                   [icd10cm_part(["Z85.04"])])
    write_valueset("cervical-cancer-history", "History of cervical cancer",
                   "Personal history of cervical cancer.",
                   [icd10cm_part(["Z85.41"]), (sb, pick(reasons, codes={"429484003"}), "SNOMED CT 429484003 only")])


CHEMO_NOT_ONCOLOGY = [
    (r"methotrexate .*(auto-injector|oral)", "low-dose methotrexate is mostly given for arthritis or psoriasis"),
    (r"hydroxyurea", "also given for sickle-cell disease"),
    (r"mercaptopurine", "also given for inflammatory bowel disease"),
]


def treatment_sets(src: Sources) -> None:
    cite, drugs = src.vsac("qicore2024", "input/vocabulary/valueset/external/valueset-2.16.840.1.113762.1.4.1151.60.json")
    kept, dropped = split(drugs, r".", CHEMO_NOT_ONCOLOGY)
    write_valueset("chemotherapy-drugs", "Cytotoxic chemotherapy drugs (RxNorm)",
                   "RxNorm clinical drugs of cytotoxic chemotherapy. Members are clinical drugs (SCD), not "
                   "ingredients: a chart coding the ingredient only is not matched (no published ingredient-level "
                   "expansion was found).", [(cite, kept, "all members, less the exclusions")], dropped)

    c1, p1 = src.vsac("qicore2024", "input/vocabulary/valueset/external/valueset-2.16.840.1.113883.3.526.3.485.json")
    c2, p2 = src.vsac("dqm2025", "input/vocabulary/valueset/external/ValueSet-2.16.840.1.113883.3.526.3.1027-20240131.json")
    not_cancer = [(r"tuberculosis", "tuberculosis treatment"),
                  (r"non-neoplastic|non-malignant", "not for a malignant disease"),
                  (r"prophylactic", "prophylaxis, not cancer treatment"),
                  (r"immunosuppression", "immunosuppression, not cancer treatment")]
    k1, d1 = split(p1, r".", not_cancer)
    k2, d2 = split(p2, r".", not_cancer)
    device_care = {"96521", "96522", "96523", "50391"}
    extra_drop = [(m, "pump or port maintenance, or an instillation not specific to cancer")
                  for m in p1 + p2 if m[1] in device_care]
    write_valueset("chemotherapy-procedures", "Chemotherapy given (procedure codes)",
                   "Chemotherapy procedures and administrations (SNOMED CT, CPT without AMA descriptors, HCPCS).",
                   [(c1, k1, "all members, less the exclusions"), (c2, k2, "all members, less the exclusions")],
                   d1 + d2 + extra_drop)

    ai_cite, ai = src.vsac("qicore2024", "input/vocabulary/valueset/external/valueset-2.16.840.1.113883.3.464.1003.196.12.1265.json")
    syn = [(RXNORM, "10324", "Tamoxifen"), (RXNORM, "203870", "Faslodex"), (RXNORM, "203769", "Femara"),
           (RXNORM, "262485", "Arimidex"), (RXNORM, "262105", "Aromasin")]
    dcite, dmem = src.dicom_cid("input/fsh/ValueSet-dicom-cid-6080-GynecologicalHormone.fsh")
    write_valueset("endocrine-therapy-breast", "Endocrine therapy for breast cancer",
                   "Tamoxifen, aromatase inhibitors (anastrozole, letrozole, exemestane) and fulvestrant: RxNorm "
                   "clinical drugs (VSAC), the ingredient and brand codes Synthea writes, and SNOMED CT substance "
                   "codes (DICOM). Ongoing endocrine therapy does not make a cancer 'under active treatment' in "
                   "the positive-evidence rule.",
                   [(ai_cite, ai, "all members"),
                    synthea("src/main/resources/modules/breast_cancer/hormonetherapy_breast.json",
                            "00ec0db88228b924bb16e1b473afb52fb1142394", syn, "MedicationOrder codes, less megestrol"),
                    (dcite, pick(dmem, codes={"75959001", "386910003"}), "tamoxifen and anastrozole only")],
                   [((RXNORM, "203000", "Megace"), "megestrol is also an appetite stimulant; not breast-specific"),
                    ((SCT, "109029006", "Raloxifene"), "mostly prescribed for osteoporosis; not evidence of treatment")])
    radiotherapy_sets(src, p1 + p2)


RT = r"radiation|radiotherapy|brachytherapy|teleradiotherapy|radionuclide|radioactive|radiochemotherapy|" \
     r"iodine 131 therapy|strontium 89 therapy|yttrium 90|cobalt-60|proton|stereotactic|intensity modulated|" \
     r"afterloading|radioelement|beam modulation|treatment delivery|\b(cesium|cobalt|iridium|californium|gold|iodine|phosphorus|radon|" \
     r"ruthenium|strontium|tantalum) \d+"


def radiotherapy_sets(src: Sources, chemo_members) -> None:
    pc, pmem = src.vsac("dqm2025", "input/vocabulary/valueset/external/ValueSet-2.16.840.1.113883.3.526.3.398-20250205.json")
    rc, rmem = src.vsac("dqm2025", "input/vocabulary/valueset/external/ValueSet-2.16.840.1.113883.3.526.3.1026-20170504.json")
    kept, dropped = split(pmem, RT, [(r"gland ablation|iodine 131 therapy", "radio-iodine for thyroid, not cancer RT "
                                                                               "of these sites"),
                                      (r"phosphorus 32 therapy", "also given for polycythaemia, not only cancer"),
                                      (r"transperineal placement", "needle placement, a step before brachytherapy")])
    chemo_rt = pick(chemo_members, codes={"703423002", "394934009", "394935005"})
    syn = [(SCT, "385798007", "Radiation therapy care (regime/therapy)"),
           (SCT, "33195004", "Teleradiotherapy procedure (procedure)"),
           (SCT, "447759004", "Brachytherapy of breast (procedure)"),
           (SCT, "113120007", "Interstitial brachytherapy (procedure)"),
           (SCT, "384692006", "Intracavitary brachytherapy (procedure)")]
    mc_cite, mc = src.mcode_example_codes("input/fsh/EX_Radiotherapy.fsh", {"1217123003"})
    write_valueset("radiotherapy", "Radiotherapy given (procedure codes)",
                   "External-beam radiotherapy, brachytherapy and radionuclide therapy (SNOMED CT), CPT 77xxx "
                   "delivery and management codes, HCPCS G60xx, and combined chemoradiation. The VSAC sets are "
                   "written for prostate cancer, but their radiotherapy members name no site. ICD-10-CM Z92.3 "
                   "(history of irradiation) is included. ICD-10-PCS section D is not: no published expansion "
                   "of it was found (see README).",
                   [(pc, kept, "members whose display matches the radiotherapy pattern (prostatectomy members "
                               "left out)"),
                    (rc, rmem, "all members"),
                    (src.vsac("qicore2024", "input/vocabulary/valueset/external/valueset-2.16.840.1.113883.3.526.3.485.json")[0],
                     chemo_rt, "combined chemotherapy and radiotherapy members"),
                    synthea("src/main/resources/modules/breast_cancer/radiationtherapy_breast.json",
                            "00ec0db88228b924bb16e1b473afb52fb1142394", syn,
                            "Procedure codes; '1234' (not a SNOMED CT code) left out, 'SCTID: 447759004' read as "
                            "447759004"),
                    (mc_cite, mc, "radiotherapy course code of the mCODE radiotherapy examples"),
                    icd10cm_part(["Z92.3"])], dropped)


def hospice_sets(src: Sources) -> None:
    q = "input/vocabulary/valueset/external/"
    parts = []
    for key, path in [("qicore2024", q + "valueset-2.16.840.1.113883.3.464.1003.1003.json"),
                      ("qicore2024", q + "valueset-2.16.840.1.113883.3.526.3.1584.json"),
                      ("qicore2024", q + "valueset-2.16.840.1.113883.3.464.1003.1165.json"),
                      ("dqm2025", q + "ValueSet-2.16.840.1.113762.1.4.1095.101-20241004.json"),
                      ("dqm2025", q + "ValueSet-2.16.840.1.113762.1.4.1116.365-20250515.json")]:
        cite, members = src.vsac(key, path)
        parts.append((cite, members, "all members"))
    write_valueset("hospice-care", "Hospice care",
                   "Hospice encounters, admission or referral, hospice status and hospice services (SNOMED CT, "
                   "HCPCS, CPT without descriptors). Palliative care (ICD-10-CM Z51.5) is not hospice and is "
                   "not included.", parts)


def device_sets(src: Sources) -> None:
    c1, m1 = src.dicom_cid("input/fsh/ValueSet-dicom-cid-3777-CardiovascularImplant.fsh")
    mii = ({"repository": MII_KARDIO, "path": "input/fsh/valuesets/MII_VS_Kardio_Geraetetyp_SNOMEDCT.fsh",
            "commit": "46c24551e68abcaf12d576fba834fbf7ce5a2275",
            "title": "MII VS Kardio Geraetetyp (root concepts of its is-a rules)"},
           [(SCT, "72506001", "Implantable defibrillator, device (physical object)"),
            (SCT, "706004007", "Implantable cardiac pacemaker (physical object)")], "the is-a root concepts")
    write_valueset("cardiac-implanted-device-type", "Implanted pacemaker, defibrillator or VAD (Device.type)",
                   "Device.type codes of implanted cardiac devices. Whether an MRI is possible depends on the "
                   "device's MR labelling (MR conditional or unsafe), which these codes do not tell.",
                   [(c1, m1, "all SNOMED CT members"), mii])
    c2, m2 = src.dicom_cid("input/fsh/ValueSet-dicom-cid-3779-ImplantedDevice.fsh")
    write_valueset("mr-relevant-implanted-device-type", "Implanted device needing an MR safety check (Device.type)",
                   "Cardiac devices plus cochlear implant and insulin pump (DICOM CID 3779). Neurostimulators "
                   "are not covered: no published list with their codes was found.",
                   [(c1, m1, "all SNOMED CT members"), (c2, m2, "all SNOMED CT members"), mii])
    q = "input/vocabulary/valueset/external/"
    situ_cite, situ = src.vsac("dqm2025", q + "ValueSet-2.16.840.1.113883.3.526.3.368-20210218.json")
    write_valueset("cardiac-implanted-device-condition", "Presence of pacemaker, ICD or heart assist device",
                   "Findings and ICD-10-CM status codes for an implanted cardiac device (Condition, problem list).",
                   [(situ_cite, situ, "all members"), icd10cm_part(["Z95.0", "Z95.810", "Z95.811", "Z95.812"])])
    parts, dropped = [], []
    for path in [q + "ValueSet-2.16.840.1.113762.1.4.1178.52-20250128.json",
                 q + "ValueSet-2.16.840.1.113762.1.4.1178.53-20220218.json"]:
        cite, members = src.vsac("dqm2025", path)
        kept, left = split(members, r".", [(r"temporary|emergency", "a temporary pacemaker, removed before discharge")])
        parts.append((cite, kept, "all members, less temporary pacing"))
        dropped += [d for d in left if d not in dropped]
    sb, sbm = sandbox_reasons(src.sandbox)
    rule = r"^permanent cardiac pacemaker procedure|reprogramming of cardiac pacemaker"
    parts.append((sb, split(sbm, rule, [])[0], "reasons whose display matches: " + rule))
    write_valueset("cardiac-device-implantation-procedure", "Pacemaker or ICD implanted (procedure codes)",
                   "Procedures that implant, replace or revise a permanent pacemaker or defibrillator: evidence of a "
                   "device when no Device resource is recorded.", parts, dropped)


def kidney_and_lab_sets(src: Sources) -> None:
    q = "input/vocabulary/valueset/external/"
    c5, m5 = src.vsac("dqm2025", q + "ValueSet-2.16.840.1.113883.3.526.3.1002-20200307.json")
    ce, me = src.vsac("dqm2025", q + "ValueSet-2.16.840.1.113883.3.526.3.353-20200307.json")
    cd, md = src.vsac("dqm2025", q + "ValueSet-2.16.840.1.113883.3.464.1003.103.12.1001-20250115.json")
    cr, mr = src.vsac("dqm2025", q + "ValueSet-2.16.840.1.113762.1.4.1029.333-20240210.json")
    severe = r"chronic kidney disease stage (4|5)|end.stage renal (disease|failure)|with stage 5 chronic kidney"
    sb, sbm = sandbox_reasons(src.sandbox)
    write_valueset("ckd-stage-4-5-or-dialysis", "Chronic kidney disease stage 4-5, ESRD or dialysis",
                   "Severe chronic kidney disease: CKD stage 4 and 5, end-stage renal disease and dependence on "
                   "dialysis, including diabetic and hypertensive CKD 4-5. A working kidney transplant is not "
                   "severe CKD and is excluded; 'stage 1 through stage 4' codes (I12.9, I13.0, I13.10) are too "
                   "vague and are not used.",
                   [(c5, m5, "all members"), (ce, me, "all members, less the exclusion"),
                    (cd, split(md, severe, [])[0], "members whose display matches: " + severe),
                    (cr, split(mr, severe, [])[0], "members whose display matches: " + severe),
                    (sb, split(sbm, severe, [])[0], "reasons whose display matches: " + severe),
                    icd10cm_part(["N18.4", "N18.5", "N18.6", "Z99.2"])],
                   [((SCT, "236436003", "End stage renal failure with renal transplant (disorder)"),
                     "a functioning graft; the latest eGFR decides instead")])
    parts = []
    for path in [q + "ValueSet-2.16.840.1.113883.3.6929.2.1000-20240215.json",
                 q + "ValueSet-2.16.840.1.113883.3.6929.3.1000-20190531.json"]:
        cite, members = src.vsac("dqm2025", path)
        parts.append((cite, members, "all members"))
    write_valueset("egfr", "Estimated glomerular filtration rate (LOINC)",
                   "eGFR observations, every equation (CKD-EPI 2021, CKD-EPI 2009, MDRD, race-specific). Values are "
                   "in mL/min/1.73 m2; the latest one decides.", parts)


def staging_sets(src: Sources) -> None:
    path = "input/fsh/VS_Staging_TNM.fsh"
    c1, m1 = src.mcode_concepts(path, "TNMStageGroupStagingTypeVS")
    c2, m2 = src.mcode_concepts(path, "TNMStageGroupStagingTypeMaxVS")
    write_valueset("tnm-stage-group-observation", "TNM stage group (Observation.code)",
                   "Observation codes of a TNM stage group: SNOMED CT (mCODE) and the LOINC codes 21908-9 "
                   "(clinical), 21902-2 (pathological) and 21914-7 (other) that mCODE still allows.",
                   [(c1, m1, "all concepts"), (c2, m2, "the LOINC concepts listed directly")])
    c3, m3 = src.mcode_concepts(path, "TNMDistantMetastasesStagingTypeVS")
    c4, m4 = src.mcode_concepts(path, "TNMDistantMetastasesStagingTypeMaxVS")
    write_valueset("tnm-distant-metastasis-observation", "TNM M category (Observation.code)",
                   "Observation codes of the TNM distant-metastasis (M) category.",
                   [(c3, m3, "all concepts"), (c4, m4, "the LOINC concepts listed directly")])
    d1, dm1 = src.dicom_cid("input/fsh/ValueSet-dicom-cid-3778-Stage.fsh")
    d2, dm2 = src.dicom_cid("input/fsh/ValueSet-dicom-cid-6068-TumorStagesFromAJCC.fsh")
    syn = [(SCT, "55440008", "M1 category (finding)")]
    write_valueset("stage-iv-or-m1", "Stage IV or M1 (coded answer)",
                   "Coded values meaning distant metastatic disease: stage 4 / stage IV and the M1 category. Only "
                   "codes found in the sources are listed; AJCC's own code system (http://cancerstaging.org) and "
                   "the SNOMED CT AJCC-allowable-value hierarchy were not available as an expansion.",
                   [(d1, pick(dm1, codes={"258228008"}), "stage 4 only"),
                    (d2, pick(dm2, codes={"111501"}), "stage IV only"),
                    synthea("src/main/resources/modules/breast_cancer/tnm_diagnosis.json",
                            "1bdd4a1ac3dfc2432c7527747fc4f781ba344f51", syn,
                            "value_code of the M1 observation (LOINC 21907-1)"),
                    synthea("src/main/resources/modules/breast_cancer.json", "1b78132516b24c256c5d929ce27bda5660dffabd",
                            [(SCT, "2640006", "Clinical stage IV (finding)")],
                            "value_code of the 'Stage IV' observation (LOINC 21908-9)")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=Path, required=True, help="folder holding owner+name/repo git mirrors")
    parser.add_argument("--sandbox", type=Path, default=Path("/work/shared/cds-hooks-sandbox/build/app.bundle.js"),
                        help="the CDS Hooks sandbox build whose reason list is read")
    args = parser.parse_args()
    src = Sources(args.mirrors)
    src.sandbox = args.sandbox
    cancer_sets(src)
    history_and_risk_sets(src)
    treatment_sets(src)
    hospice_sets(src)
    device_sets(src)
    kidney_and_lab_sets(src)
    staging_sets(src)


if __name__ == "__main__":
    main()
