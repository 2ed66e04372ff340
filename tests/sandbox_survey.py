"""Survey of the PAMA Imaging tab: every study × reason combination of our scenarios that the tab's own
lists can express, run in headless Chromium against the service, written as a Markdown table.

    .venv/bin/python -m tests.sandbox_survey --out docs/sandbox-before.md --screenshots docs/img/

For each reason set (typed into the tab, for the reasons-only patient or a fixture chart's patient) the
tab is loaded once and each study is picked in turn; the row records the rating line, the cards
(indicator, summary, rendered height at 1400×1000) and, when a card offers a switch to another study,
what the tab shows after taking it. Not a test: it measures (issue 11, the before/after evidence).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.sandbox_harness import (REASONS_ONLY_PATIENT, PamaTab, TabState, browser_context, running_servers,
                                   sandbox_build_dir, switch_suggestions)

CERVIX = ("429484003", "30473006")                       # history of cervical cancer, pelvic pain
BONE = ("307576001", "367336001")                        # osteosarcoma of bone, chemotherapy
SPINE = ("94602001", "55705006", "429479009")            # vertebral metastasis, arthrodesis, radiotherapy history
BREAST = ("415076002",)                                  # personal history of breast cancer
RECTAL_MASS = ("254582000", "429479009", "74285003")      # rectal adenocarcinoma, radiotherapy, pelvic mass
RECTAL_TREATED = ("254582000", "16564004")               # rectal adenocarcinoma, Hartmann resection
PET_CT = ("78816", "78814", "78811", "78812", "78813")


@dataclass(frozen=True)
class ReasonSet:
    scenario: str
    patient: str
    reasons: tuple[str, ...]
    studies: tuple[str, ...]


SETS = [
    ReasonSet("cervix, suspected recurrence", REASONS_ONLY_PATIENT, CERVIX,
              ("74183", "72197", "72195", "74177", "74176", "71260", "72193") + PET_CT[:2]),
    ReasonSet("cervix + pacemaker", REASONS_ONLY_PATIENT, CERVIX + ("441509002",), ("74183", "72197")),
    ReasonSet("cervix + CKD stage 4", REASONS_ONLY_PATIENT, CERVIX + ("431857002",), ("74183",)),
    ReasonSet("bone tumour surveillance", REASONS_ONLY_PATIENT, BONE,
              ("78306", "73720", "73701", "73220", "73201", "73718", "71260", "78816")),
    ReasonSet("bone tumour surveillance (chart)", "fx-bone-surveillance", ("307576001",),
              ("78306", "73701", "73720", "78816")),
    ReasonSet("spine metastasis, new weakness", REASONS_ONLY_PATIENT, SPINE + ("26544005",),
              ("72157", "72156", "72146", "72129", "78816")),
    ReasonSet("spine metastasis, weakness + defibrillator (chart)", "fx-spine-icd", ("309774006",), ("72157",)),
    ReasonSet("spine metastasis follow-up", REASONS_ONLY_PATIENT, SPINE, ("72157", "72146", "78816")),
    ReasonSet("breast, asymptomatic", REASONS_ONLY_PATIENT, BREAST,
              ("78306", "78816", "78814", "78813", "71260", "71250", "74177", "74160", "70553")),
    ReasonSet("breast, asymptomatic (chart)", "fx-breast-survivor", BREAST, ("78306",)),
    ReasonSet("breast + headache", REASONS_ONLY_PATIENT, BREAST + ("25064002",), ("70553", "78816", "78306")),
    ReasonSet("rectal, presacral mass", REASONS_ONLY_PATIENT, RECTAL_MASS, ("72197", "74177", "71260", "78816")),
    ReasonSet("rectal, presacral mass (chart)", "fx-rectal-presacral", ("74285003",), ("72197", "78816")),
    ReasonSet("rectal, treated (surveillance)", REASONS_ONLY_PATIENT, RECTAL_TREATED, ("74177", "71260", "78816")),
]


def _rating_in(response: dict | None) -> str:
    for action in (response or {}).get("extension", {}).get("systemActions", []):
        for ext in action.get("resource", {}).get("extension", []):
            if ext.get("url", "").endswith("/pama-rating"):
                return "/".join(c.get("code", "") for c in ext["valueCodeableConcept"]["coding"])
    return ""


def _cards_cell(state: TabState) -> str:
    if not state.cards:
        return "none"
    return "<br>".join(f"{c.indicator} {c.height:.0f} px: {c.summary}" for c in state.cards)


def _short(name: str, limit: int = 60) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def survey(tab: PamaTab, shots: Path | None, stage: str = "before") -> list[dict]:
    rows = []
    for reason_set in SETS:
        tab.load(reason_set.patient)
        reason_names = [tab.add_reason(code) for code in reason_set.reasons]
        for code in reason_set.studies:
            tab.take_problems()
            study = tab.choose_study(code)
            state = tab.state()
            row = {"scenario": reason_set.scenario, "patient": reason_set.patient, "code": code, "study": study,
                   "reasons": reason_names, "badge": state.badge, "rating": _rating_in(state.response),
                   "cards": _cards_cell(state), "heights": [c.height for c in state.cards], "switch": "—"}
            if shots and (reason_set.scenario, code) == ("breast, asymptomatic", "78306"):
                tab.screenshot(shots / f"sandbox-{stage}-card.png")
            switches = switch_suggestions(state.response)
            if switches:
                tab.click_suggestion(switches[0]["label"])
                after = tab.state()
                shown = f"“{_short(after.study)}”" if after.study else "**blank study line**"
                row["switch"] = f"{switches[0]['label']} → {shown}, {after.badge}"
                if shots and (reason_set.scenario, code) == ("bone tumour surveillance (chart)", "78306"):
                    tab.page.screenshot(path=str(shots / f"sandbox-{stage}-switched.png"))
            elif any(c.buttons for c in state.cards):
                row["switch"] = "no switch; buttons: " + ", ".join(b for c in state.cards for b in c.buttons)
            row["problems"] = [f"{p.what}: {p.detail}" for p in tab.take_problems()]
            rows.append(row)
            print(f"{reason_set.scenario:45} {code} {state.badge:22} {row['cards'][:80]}", flush=True)
    return rows


def _service_commit() -> str:
    """The last commit that changed the service or its knowledge (what was measured)."""
    done = subprocess.run(["git", "log", "-1", "--format=%h %cd", "--date=short", "--", "cds_service", "knowledge"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _summary(rows: list[dict]) -> list[str]:
    heights = [h for r in rows for h in r["heights"]]
    with_card = sum(1 for r in rows if r["heights"])
    switched = [r for r in rows if "→" in r["switch"]]
    blank = sum(1 for r in switched if "blank" in r["switch"])
    bare = sum(1 for r in rows if r["rating"] and r["badge"] not in ("appropriate✓", "not-appropriate⚠"))
    unrated = sum(1 for r in rows if not r["rating"])
    height_line = "no card."
    if heights:
        height_line = (f"{len(heights)} cards, min {min(heights):.0f} px, median {sorted(heights)[len(heights) // 2]:.0f}"
                       f" px, max {max(heights):.0f} px; {sum(1 for h in heights if h > 900)} taller than 900 px.")
    return [
        f"- {len(rows)} combinations; {with_card} show at least one card, {len(rows) - with_card} none.",
        f"- Card heights: {height_line}",
        f"- Switch suggestions taken: {len(switched)}; the study line is blank afterwards in {blank}.",
        f"- Rating shown as bare text (neither ✓ nor ⚠): {bare}; answer without any rating (the line keeps "
        f"the previous value): {unrated}.",
        f"- `no-criteria-apply` with no card at all (unexplained silence inside a recognised scenario): "
        f"{sum(1 for r in rows if r['rating'].startswith('no-criteria-apply') and not r['heights'])}.",
        f"- Console errors or failed service calls: {sum(len(r['problems']) for r in rows)}.",
    ]


def markdown(rows: list[dict], seconds: float, stage: str = "before") -> str:
    lines = [
        f"# The PAMA Imaging tab {stage} the card rework (issue 11)",
        "",
        f"Measured {datetime.date.today().isoformat()} against the service as of commit `{_service_commit()}` "
        f"with `python -m tests.sandbox_survey --stage {stage} --out docs/sandbox-{stage}.md --screenshots docs/img/` (the CDS "
        "Hooks sandbox build of /work/shared/cds-hooks-sandbox, headless Chromium at 1400×1000, the service "
        f"and the fixture FHIR server on loopback; {len(rows)} combinations in {seconds:.0f} s). Evidence for "
        "the issue's closing note; the survey is run again after the fix.",
        "",
        "Reasons are typed into the tab's reason list (SNOMED CT only; the tab has no ICD-10 and no body "
        f"site), studies picked from its CPT list. Patient `{REASONS_ONLY_PATIENT}` has an empty chart "
        "(reasons only); `fx-…` patients are fixture charts. *Badge*: the tab's rating line (\"kept\" when the "
        "answer carried no rating, so the tab still shows the previous one). *Rating sent*: the Argonaut code "
        "and ACR tier in the answer. *Cards*: indicator, rendered height, summary. *Switch*: the first "
        "suggestion that replaces the study, taken in the tab, and what the study line and badge show then.",
        "",
        "Not expressible in the tab: studies outside its 247 CPT codes (CT, MR and nuclear medicine only), "
        "among them US pelvis 76856/76830, femur radiographs 73552, mammography 77065–77067, CT-guided biopsy "
        "77012 and FDG-PET/CT skull base to mid-thigh 78815 — so they appear only as switch targets; ICD-10 "
        "reasons and body sites (a bone tumour's site comes only from a chart).",
        "",
        f"Screenshots: [a low-value warning card](img/sandbox-{stage}-card.png) (full page) and "
        f"[the order after taking a switch suggestion](img/sandbox-{stage}-switched.png).",
        "",
        "## Summary",
        "",
        *_summary(rows),
    ]
    for reason_set in SETS:
        set_rows = [r for r in rows if r["scenario"] == reason_set.scenario]
        if not set_rows:
            continue
        lines += ["", f"## {reason_set.scenario}", "",
                  f"Patient `{reason_set.patient}`; reasons: " + "; ".join(set_rows[0]["reasons"]) + ".", "",
                  "| study (CPT) | badge | rating sent | cards | switch |", "|---|---|---|---|---|"]
        for r in set_rows:
            badge = r["badge"] if r["rating"] else f"{r['badge']} (kept)"
            lines.append(f"| {r['code']} {_short(r['study'], 70)} | {badge} | {r['rating'] or 'none'} | "
                         f"{r['cards']} | {r['switch']} |")
    problems = [(r, p) for r in rows for p in r["problems"]]
    if problems:
        lines += ["", "## Console errors and failed calls", ""]
        lines += [f"- {r['scenario']} / {r['code']}: {p}" for r, p in problems]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    parser.add_argument("--screenshots", type=Path, help="directory for the two example screenshots")
    parser.add_argument("--rows", type=Path, help="also keep the measured rows as JSON here; with --from-rows, "
                                                  "write the Markdown from such a file without measuring")
    parser.add_argument("--from-rows", action="store_true")
    parser.add_argument("--stage", default="before", choices=("before", "after"),
                        help="names the page and the screenshots (sandbox-<stage>…)")
    args = parser.parse_args(argv)
    if args.from_rows:
        saved = json.loads(args.rows.read_text())
        args.out.write_text(markdown(saved["rows"], saved["seconds"], args.stage))
        return 0
    build = sandbox_build_dir()
    if build is None:
        print("the CDS Hooks sandbox build was not found (set CDS_SANDBOX_BUILD)", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with running_servers(build) as servers, browser_context() as context:
        rows = survey(PamaTab.open(context, servers), args.screenshots, args.stage)
    seconds = time.monotonic() - started
    if args.rows:
        args.rows.write_text(json.dumps({"rows": rows, "seconds": seconds}, ensure_ascii=False, indent=1))
    args.out.write_text(markdown(rows, seconds, args.stage))
    print(f"wrote {args.out} ({len(rows)} combinations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
