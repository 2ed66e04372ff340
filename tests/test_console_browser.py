"""The committee console in a real browser: headless Chromium (Debian's, by executable path) through
Playwright, against the service started as ``python -m cds_service serve`` on a temporary SQLite
audit seeded with decisions and feedback (tests/console_seed.py).

Checks what a committee member would notice: signing in, the overview's figures equal to the
seeded audit, filtering decisions and opening one, a scenario and its evidence link, trying a
chart, signing out; a wrong password and a forged CSRF token refused; no page without a session;
no console error (the pages' content security policy allows no script, so a blocked style or
script would show here); and axe-core (installed by .ci/axe.sh, injected from the local file) on
every page with no serious or critical violation. Screenshots go to docs/img/.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cds_service.audit.store import Store
from cds_service.console import auth
from tests.conftest import free_port
from tests.console_seed import DAYS, FIRST_DAY, seed
from tests.pg_harness import ci_enabled

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CDS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
AXE = ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"
PASSWORD = "a long enough passphrase"
RANGE = f"start={FIRST_DAY.date().isoformat()}&end=2026-11-{1 + DAYS:02d}"
SCENARIO = "rectal-post-treatment-surveillance"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (bash .ci/browser.sh)"
    if not AXE.is_file():
        return f"no axe-core at {AXE} (bash .ci/axe.sh)"
    return None


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    problem = _missing()
    if problem:
        (pytest.fail if ci_enabled() else pytest.skip)(problem)
    folder = tmp_path_factory.mktemp("console-browser")
    url = f"sqlite:///{folder}/audit.sqlite3"
    store = Store.from_url(url)
    store.init_schema()
    seeded = seed(store)
    auth.add_user(store, "alice", PASSWORD, "admin")
    store.close()
    port = free_port()
    env = {**os.environ, "CDS_DATABASE_URL": url, "CDS_LOG_LEVEL": "WARNING",
           "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, "-m", "cds_service", "serve", "--port", str(port)], env=env, cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    yield base, seeded
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(service):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    tab.errors = []
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    yield tab
    context.close()


def sign_in(page, base: str, password: str = PASSWORD) -> None:
    page.goto(base + "/console/sign-in")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def axe_violations(page) -> list[str]:
    page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate("async () => (await axe.run(document)).violations"
                          ".map(v => ({id: v.id, impact: v.impact, n: v.nodes.length}))")
    return [f"{v['id']} ({v['impact']}, {v['n']} nodes)" for v in found if v["impact"] in ("serious", "critical")]


def figure(page, name: str) -> str:
    return page.locator(f'[data-figure="{name}"]').first.inner_text().replace("\u202f", "")


def test_no_page_without_a_session(service, page):
    base, _ = service
    for path in ("/console/", "/console/decisions", f"/console/scenarios/{SCENARIO}", "/console/try",
                 "/console/knowledge/", "/console/users", "/console/decisions/1"):
        page.goto(base + path)
        assert page.url.endswith("/console/sign-in"), path
        assert page.get_by_role("heading", name="Sign in").is_visible()


def test_wrong_password_is_refused(service, page):
    base, _ = service
    sign_in(page, base, password="not the password")
    assert page.get_by_role("alert").inner_text() == "Wrong user name or password."
    page.goto(base + "/console/")
    assert page.url.endswith("/console/sign-in")


def test_a_forged_csrf_token_is_refused(service, page):
    base, _ = service
    sign_in(page, base)
    page.locator("form.signout input[name=csrf_token]").evaluate("input => { input.value = 'forged'; }")
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_role("heading", name="Refused").is_visible()
    page.goto(base + "/console/")
    assert page.get_by_role("heading", name="Overview").is_visible()  # the forged form ended nothing


def test_a_committee_member_walks_through_the_console(service, page):
    base, seeded = service
    sign_in(page, base)
    assert page.get_by_role("heading", name="Overview").is_visible()
    page.get_by_label("From", exact=True).fill(FIRST_DAY.date().isoformat())
    page.get_by_label("To", exact=True).fill(f"2026-11-{1 + DAYS:02d}")
    page.get_by_role("button", name="Show").click()
    assert figure(page, "orders") == str(seeded.orders)
    assert figure(page, "cards") == str(seeded.cards)
    assert figure(page, "silent") == str(seeded.silent)
    assert figure(page, "overridden").startswith(str(seeded.feedback["overridden"]))
    assert page.locator("figure svg").count() >= 4
    violations = {"overview": axe_violations(page)}
    page.screenshot(path=str(ROOT / "docs" / "img" / "console-overview.png"), full_page=True)

    page.goto(f"{base}/console/decisions?{RANGE}")
    page.locator("select[name=scenario]").select_option(SCENARIO)
    page.locator("select[name=rating]").select_option("usually-not-appropriate")
    page.get_by_role("button", name="Show").click()
    rows = page.locator("#decision-list tbody tr")
    assert rows.count() >= 1 and all("Usually" not in r or "rectal" in r.lower() for r in rows.all_inner_texts())
    violations["decisions"] = axe_violations(page)
    rows.first.get_by_role("link").click()
    assert figure(page, "rating").startswith("usually-not-appropriate")
    violations["decision"] = axe_violations(page)

    page.goto(f"{base}/console/scenarios/{SCENARIO}?{RANGE}")
    assert figure(page, "orders") == str(seeded.by_scenario[SCENARIO]["orders"])
    violations["scenario"] = axe_violations(page)
    page.screenshot(path=str(ROOT / "docs" / "img" / "console-scenario.png"), full_page=True)
    page.get_by_role("link", name="Evidence page of this scenario").click()
    assert page.url.endswith(f"/evidence/{SCENARIO}")

    page.goto(base + "/console/try")
    page.locator("select[name=example]").select_option("breast-survivor-pet-ct")
    page.get_by_role("button", name="Show the cards").click()
    card = page.locator("article.ehr-card").first
    assert "Low-value scan" in card.locator("h3").inner_text()
    violations["try"] = axe_violations(page)
    for path in ("/console/knowledge/", "/console/knowledge/versions", "/console/users", "/console/scenarios"):
        page.goto(base + path)
        violations[path] = axe_violations(page)

    page.goto(base + "/console/")
    page.get_by_role("button", name="Sign out").click()
    assert page.url.endswith("/console/sign-in")
    page.goto(base + "/console/decisions")
    assert page.url.endswith("/console/sign-in")
    assert {k: v for k, v in violations.items() if v} == {}
    assert page.errors == []
