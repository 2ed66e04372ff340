"""End to end in a real browser: the CDS Hooks sandbox's PAMA Imaging tab, driven in headless Chromium,
against the service, the fixture FHIR server and the sandbox's static build, all on loopback (issue 11,
point 5).

One case per clinical scenario, chosen in the tab's own study and reason lists, some through a fixture
chart and some through the order's reasons only (a patient whose chart holds nothing else). Each case
checks what the clinician sees: the rating badge, the card's summary, that the card fits on a screen
(at most 900 px tall at 1400×1000), that taking the switch suggestion leaves a named study rated ✓, and
that the browser console shows no error caused by the service. Screenshots go to a temporary artifacts
directory (printed; $CDS_BROWSER_ARTIFACTS to choose it).

Needs /usr/bin/chromium (``bash .ci/browser.sh``; $CDS_TEST_CHROMIUM for another binary), Playwright for Python (``[test]`` extra) and the
sandbox build (/work/shared/cds-hooks-sandbox/build or $CDS_SANDBOX_BUILD); skipped without them, except
in CI (CI=true), where a missing part fails the run.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sandbox_harness import (CHROMIUM, REASONS_ONLY_PATIENT, PamaTab, browser_context, running_servers,
                                   sandbox_build_dir, switch_suggestions)

MAX_CARD_HEIGHT = 900       # px at a 1400×1000 viewport: a card read in five seconds fits on the screen
MAX_SUMMARY = 140           # CDS Hooks: summary under 140 characters
APPROPRIATE, NOT_APPROPRIATE = "appropriate✓", "not-appropriate⚠"
#: Shown as bare text by the tab; allowed only where a case says so, and only next to a card that explains it.
NO_CRITERIA = "no-criteria-apply"
# Words a clinician must not see in a card (internal references and notes).
INTERNAL_TEXT = re.compile(r"example-request-id|ServiceRequest/|\bseed\b", re.IGNORECASE)


def _missing_parts() -> list[str]:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (install with `bash .ci/browser.sh`)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright for Python (pip install -e '.[test]')")
    if sandbox_build_dir() is None:
        missing.append("the CDS Hooks sandbox build (set CDS_SANDBOX_BUILD)")
    return missing


@pytest.fixture(scope="module", autouse=True)
def browser_parts():
    """Skip without a browser, Playwright or the sandbox build; in CI (CI=true) fail instead."""
    missing = _missing_parts()
    if missing and os.environ.get("CI", "").lower() == "true":
        pytest.fail("browser test cannot run in CI: missing " + "; ".join(missing), pytrace=False)
    if missing:
        pytest.skip("browser test needs " + "; ".join(missing))


@dataclass(frozen=True)
class Case:
    id: str
    patient: str                       # a fixture chart's patient, or the reasons-only patient
    study: tuple[str, str]             # (CPT code, words of its display in the tab's list)
    reasons: tuple[tuple[str, str], ...]
    badges: tuple[str, ...]            # accepted rating lines for the ordered study
    summary_words: tuple[tuple[str, ...], ...]   # every group must be present (any word of a group)
    badges_after_switch: tuple[str, ...] = (APPROPRIATE,)


CASES = [
    # Treated cervical cancer with pelvic pain: MRI abdomen+pelvis is Usually Appropriate, but the
    # pacemaker makes MRI unsafe: the card must say so and offer CT abdomen+pelvis instead.
    Case("cervix-reasons-only", REASONS_ONLY_PATIENT,
         ("74183", "imaging, abdomen; without contrast material(s), followed by"),
         (("429484003", "History of malignant neoplasm of cervix"), ("30473006", "Pain in pelvis"),
          ("441509002", "Cardiac pacemaker in situ")),
         (APPROPRIATE,), (("MRI",), ("unsafe", "pacemaker", "MR safety"), ("CT",))),
    # Treated femur osteosarcoma, no site symptoms (fixture chart): a whole-body bone scan is Usually
    # Not Appropriate; radiographs of the area are the study to switch to.
    Case("bone-fixture-chart", "fx-bone-surveillance",
         ("78306", "Bone and/or joint imaging; whole body"), (("307576001", "Osteosarcoma of bone"),),
         (NOT_APPROPRIATE,), (("bone scan",), ("Usually Not Appropriate", "low-value", "low value"),
                              ("radiograph", "x-ray"))),
    # Operated and irradiated vertebral metastasis, new limb weakness, implanted defibrillator (fixture
    # chart): MRI spine is Usually Appropriate but unsafe here; CT myelography instead.
    Case("spine-fixture-chart", "fx-spine-icd",
         ("72157", "and further sequences; thoracic"),
         (("309774006", "Weakness of limb"),),
         (APPROPRIATE,), (("MRI",), ("unsafe", "defibrillator", "MR safety"), ("myelograph",))),
    # Asymptomatic breast cancer survivor (reason only): a whole-body bone scan is a low-value
    # surveillance scan. Issue 11 (point 3) asks for a switch the EHR can apply, with cancel kept as a
    # second suggestion, so this case too expects a switch to a named study rated ✓.
    Case("breast-reasons-only", REASONS_ONLY_PATIENT,
         ("78306", "Bone and/or joint imaging; whole body"),
         (("415076002", "Personal history of primary malignant neoplasm of breast"),),
         (NOT_APPROPRIATE,), (("bone scan",), ("low-value", "low value", "Usually Not Appropriate"))),
    # Rectal cancer after radiotherapy, new presacral mass already seen on a recent MRI (fixture chart):
    # another pelvic MRI is not the next step, a CT-guided biopsy is. No ACR imaging variant rates a
    # pelvic MRI (or a biopsy) for a suspected presacral recurrence, so the honest Argonaut code is
    # no-criteria-apply — allowed here only because the card beside it says what to do instead, and
    # after the switch the biopsy (not an imaging study PAMA criteria rate) keeps that code.
    Case("rectal-fixture-chart", "fx-rectal-presacral",
         ("72197", "imaging, pelvis; without contrast material(s), followed by"),
         (("74285003", "Mass of pelvic structure"),),
         (APPROPRIATE, NOT_APPROPRIATE, NO_CRITERIA), (("biopsy",),), (APPROPRIATE, NO_CRITERIA)),
]


@pytest.fixture(scope="module")
def artifacts(browser_parts) -> Path:
    path = Path(os.environ.get("CDS_BROWSER_ARTIFACTS") or tempfile.mkdtemp(prefix="sandbox-browser-artifacts-"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nsandbox browser screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def tab(browser_parts, artifacts):
    """One browser and one page for the whole module; every case reloads the tab for its patient."""
    with running_servers(sandbox_build_dir(), artifacts / "servers") as servers, browser_context() as context:
        yield PamaTab.open(context, servers)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pama_tab(tab: PamaTab, artifacts: Path, case: Case):
    failures: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            failures.append(message)

    tab.take_problems()
    tab.load(case.patient)
    study_name = tab.choose_study(*case.study)
    for code, words in case.reasons:
        tab.add_reason(code, words)
    before = tab.state()
    tab.screenshot(artifacts / f"{case.id}-1-order.png")

    check(before.badge in case.badges, f"rating badge is {before.badge!r}, expected one of {case.badges}")
    check(bool(before.cards), "no card is shown")
    check(before.badge != NO_CRITERIA or bool(before.cards), "no-criteria-apply is shown without a card explaining it")
    for card in before.cards:
        check(card.height <= MAX_CARD_HEIGHT, f"card {card.summary[:60]!r} is {card.height:.0f} px tall "
                                              f"(at most {MAX_CARD_HEIGHT})")
        check(len(card.summary) <= MAX_SUMMARY, f"summary has {len(card.summary)} characters: {card.summary!r}")
    card_text = "\n".join(f"{c.get('summary', '')}\n{c.get('detail', '')}" for c in (before.response or {}).get(
        "cards", []))
    leaked = sorted(set(m.group(0) for m in INTERNAL_TEXT.finditer(card_text)))
    check(not leaked, f"card text shows internal references or notes: {leaked}")
    summaries = " | ".join(c.summary for c in before.cards)
    for group in case.summary_words:
        check(any(word.lower() in summaries.lower() for word in group),
              f"card summary does not mention {' / '.join(group)}: {summaries!r}")

    switches = switch_suggestions(before.response)
    check(bool(switches), "no suggestion switches to another study: "
                          f"buttons {[b for c in before.cards for b in c.buttons]}")
    if switches:
        tab.click_suggestion(switches[0]["label"])
        after = tab.state()
        tab.screenshot(artifacts / f"{case.id}-2-switched.png")
        check(bool(after.study), f"after {switches[0]['label']!r} the order shows no study name "
                                 f"(codes {switches[0]['codes']})")
        check(after.study != study_name, f"after {switches[0]['label']!r} the study is still {after.study!r}")
        check(after.badge in case.badges_after_switch,
              f"after {switches[0]['label']!r} the rating badge is {after.badge!r}")

    for problem in tab.take_problems():
        failures.append(f"{problem.what}: {problem.detail}")
    assert not failures, f"{case.id} (screenshots in {artifacts}):\n- " + "\n- ".join(failures)
