"""The committee console over real HTTP: sign-in, sessions, CSRF, limits, and figures that match the audit."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from datetime import date

import pytest
import requests

from cds_service.audit import analytics, rollup
from cds_service.audit.store import Store
from cds_service.config import Settings
from cds_service.console import auth
from tests.conftest import LiveServer
from tests.console_seed import DAYS, FIRST_DAY, seed
from tests.pg_harness import postgres_url, throwaway_schema  # noqa: F401

PASSWORD = "a long enough passphrase"
PAGES = ("/console/", "/console/scenarios", "/console/decisions", "/console/users", "/console/decisions/1",
         "/console/scenarios/rectal-post-treatment-surveillance", "/console/knowledge/", "/console/knowledge/versions",
         "/console/try")
RANGE = {"start": FIRST_DAY.date().isoformat(), "end": date(2026, 11, 2 + DAYS - 1).isoformat()}


@pytest.fixture
def console(tmp_path):
    from cds_service.server.app import create_app

    settings = Settings(mode="development", database_url=f"sqlite:///{tmp_path}/console.sqlite3",
                        log_level="WARNING", console_cookie_secure=False)
    server = LiveServer(create_app(settings)).start()
    store = server.app.extensions["cds"].store
    auth.add_user(store, "alice", PASSWORD, "admin")
    auth.add_user(store, "victor", PASSWORD, "viewer")
    yield server
    server.stop()
    store.close()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(server: LiveServer, username: str = "alice", password: str = PASSWORD) -> requests.Session:
    browser = requests.Session()
    form = browser.get(server.url + "/console/sign-in", timeout=10)
    browser.post(server.url + "/console/sign-in", timeout=10,
                 data={"csrf_token": _csrf(form.text), "username": username, "password": password})
    return browser


def figure(html: str, name: str) -> str:
    return re.search(rf'data-figure="{re.escape(name)}">([^<]*)<', html).group(1).replace("\u202f", "")


def test_no_page_without_a_session(console):
    anonymous = requests.Session()
    for path in PAGES:
        answer = anonymous.get(console.url + path, allow_redirects=False, timeout=10)
        assert answer.status_code == 303 and answer.headers["Location"].endswith("/console/sign-in"), path
    refused = anonymous.post(console.url + "/console/users/add", data={"username": "eve", "password": "x" * 20,
                                                                      "role": "admin"}, timeout=10)
    assert refused.status_code == 403
    assert [a.username for a in auth.list_users(console.app.extensions["cds"].store)] == ["alice", "victor"]


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session(console):
    browser = requests.Session()
    form = browser.get(console.url + "/console/sign-in", timeout=10)
    answer = browser.post(console.url + "/console/sign-in", allow_redirects=False, timeout=10,
                          data={"csrf_token": _csrf(form.text), "username": "alice", "password": PASSWORD})
    assert answer.status_code == 303
    cookie = next(h for h in answer.raw.headers.getlist("Set-Cookie") if h.startswith("cds_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    page = browser.get(console.url + "/console/", timeout=10)
    assert page.status_code == 200 and "alice (admin)" in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    token = browser.cookies["cds_console"]
    browser.post(console.url + "/console/sign-out", data={"csrf_token": _csrf(page.text)}, timeout=10)
    replayed = requests.get(console.url + "/console/", cookies={"cds_console": token}, allow_redirects=False,
                            timeout=10)
    assert replayed.status_code == 303  # the old cookie opens nothing


def test_cookies_are_secure_by_default():
    assert Settings().console_cookie_secure is True


def test_wrong_password_refused_and_attempts_limited_across_workers(console, tmp_path):
    from cds_service.server.app import create_app

    other_worker = LiveServer(create_app(console.app.extensions["cds"].settings)).start()
    try:
        for attempt in range(auth.MAX_FAILURES_PER_ACCOUNT):
            server = console if attempt % 2 else other_worker
            browser = sign_in(server, password="not the password")
            assert "cds_console" not in browser.cookies
        right = requests.Session()
        form = right.get(console.url + "/console/sign-in", timeout=10)
        answer = right.post(console.url + "/console/sign-in", timeout=10,
                            data={"csrf_token": _csrf(form.text), "username": "alice", "password": PASSWORD})
        assert answer.status_code == 429 and "Too many failed sign-ins" in answer.text
        assert "cds_console" not in right.cookies
        assert "cds_console" in sign_in(console, "victor").cookies  # another account is not locked out
    finally:
        other_worker.stop()


def test_forms_without_the_csrf_token_are_refused(console):
    browser = sign_in(console)
    refused = browser.post(console.url + "/console/users/add", timeout=10,
                           data={"username": "eve", "password": "x" * 20, "role": "admin"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = browser.post(console.url + "/console/sign-out", data={"csrf_token": "guess"}, timeout=10)
    assert wrong.status_code == 403
    assert browser.get(console.url + "/console/", timeout=10).status_code == 200  # still signed in
    stranger = requests.Session()
    no_cookie = stranger.post(console.url + "/console/sign-in", timeout=10,
                              data={"csrf_token": "x", "username": "alice", "password": PASSWORD})
    assert no_cookie.status_code == 403 and "cds_console" not in stranger.cookies


def test_only_admins_manage_accounts(console):
    viewer = sign_in(console, "victor")
    assert viewer.get(console.url + "/console/users", timeout=10).status_code == 403
    admin = sign_in(console)
    page = admin.get(console.url + "/console/users", timeout=10)
    added = admin.post(console.url + "/console/users/add", timeout=10,
                       data={"csrf_token": _csrf(page.text), "username": "carol", "password": PASSWORD,
                             "role": "viewer"})
    assert added.status_code == 200 and "Created carol" in added.text
    assert "cds_console" in sign_in(console, "carol").cookies


def test_overview_figures_match_the_seeded_audit(console):
    seeded = seed(console.app.extensions["cds"].store)
    page = sign_in(console).get(console.url + "/console/", params=RANGE, timeout=10).text
    assert figure(page, "orders") == str(seeded.orders)
    assert figure(page, "silent") == str(seeded.silent)
    assert figure(page, "cards") == str(seeded.cards)
    for rating, n in seeded.by_rating.items():
        assert figure(page, rating) == str(n)
    assert figure(page, "cards-per-100") == f"{100 * seeded.cards / seeded.orders:.1f}"
    assert figure(page, "accepted").startswith(f"{seeded.feedback['accepted']} (")
    assert figure(page, "overridden").startswith(f"{seeded.feedback['overridden']} (")
    assert figure(page, "no-feedback") == str(seeded.cards - sum(seeded.feedback.values()))
    for reason in seeded.reasons:
        assert reason in page
    assert "<script" not in page and page.count("<svg") >= 4


def test_latency_percentiles_are_within_a_bucket_of_the_exact_ones(console):
    store = console.app.extensions["cds"].store
    seeded = seed(store, n=300)
    fig = analytics.figures(store, FIRST_DAY.date(), date(2026, 11, 30))
    for day, values in seeded.latencies.items():
        values = sorted(values)
        exact = values[max(0, int(0.95 * len(values) + 0.999999) - 1)]
        assert exact <= fig.per_day[day]["p95_ms"] <= exact * rollup.LATENCY_GROWTH + 0.01


def test_filters_and_decision_page(console):
    store = console.app.extensions["cds"].store
    seeded = seed(store)
    browser = sign_in(console)
    listed = browser.get(console.url + "/console/decisions", timeout=10,
                         params={**RANGE, "scenario": "rectal-post-treatment-surveillance",
                                 "rating": "usually-not-appropriate"}).text
    ids = re.findall(r'href="/console/decisions/(\d+)"', listed)
    assert ids and len(ids) <= 50
    detail = browser.get(console.url + f"/console/decisions/{ids[0]}", timeout=10).text
    assert figure(detail, "rating") .startswith("usually-not-appropriate")
    assert "Ordering clinician" not in detail  # shown only when the site enables it
    scen = browser.get(console.url + "/console/scenarios/rectal-post-treatment-surveillance", params=RANGE,
                       timeout=10).text
    assert figure(scen, "orders") == str(seeded.by_scenario["rectal-post-treatment-surveillance"]["orders"])
    assert 'href="/evidence/rectal-post-treatment-surveillance"' in scen
    bad = browser.get(console.url + "/console/decisions", params={"start": "yesterday"}, timeout=10)
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text


def test_clinician_hash_shown_only_when_enabled(console, tmp_path):
    from cds_service.server.app import create_app

    seed(console.app.extensions["cds"].store, n=3)
    settings = replace(console.app.extensions["cds"].settings, console_show_clinicians=True)
    shown = LiveServer(create_app(settings)).start()
    try:
        page = sign_in(shown).get(shown.url + "/console/decisions/1", timeout=10).text
        assert "Ordering clinician (keyed hash)" in page and "Practitioner" not in page
    finally:
        shown.stop()


def _rollups(store: Store) -> tuple:
    def read(tx):
        return tuple(sorted(tuple(str(v) for v in row) for row in tx.execute(f"SELECT * FROM {table}").fetchall())
                     for table in ("decision_daily", "latency_daily", "feedback_daily"))
    return store.run(read, readonly=True)


def _check_rebuild(store: Store) -> None:
    seed(store, n=60)
    written = _rollups(store)
    store.run(rollup.rebuild)
    assert _rollups(store) == written and written[0]


def test_rollups_kept_by_writes_equal_a_rebuild_sqlite(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path}/r.sqlite3")
    store.init_schema()
    _check_rebuild(store)


def test_rollups_kept_by_writes_equal_a_rebuild_postgresql(postgres_url):  # noqa: F811
    with throwaway_schema(postgres_url) as url:
        store = Store.from_url(url)
        store.init_schema()
        try:
            _check_rebuild(store)
        finally:
            store.close()


def test_console_user_command(tmp_path):
    url = f"sqlite:///{tmp_path}/cli.sqlite3"
    run = [sys.executable, "-m", "cds_service", "console-user", "--database-url", url]
    added = subprocess.run([*run, "add", "dana", "--role", "admin", "--password-stdin"], input=PASSWORD + "\n",
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0 and "created dana (admin)" in added.stdout
    short = subprocess.run([*run, "add", "erin", "--password-stdin"], input="short\n", capture_output=True,
                           text=True, timeout=60)
    assert short.returncode == 2 and "12 characters" in short.stderr
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, timeout=60)
    assert listed.stdout.startswith("dana\tadmin") and PASSWORD not in listed.stdout
    store = Store.from_url(url)
    stored = auth.list_users(store)[0].password_hash
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert subprocess.run([*run, "remove", "dana"], capture_output=True, timeout=60).returncode == 0
    assert auth.list_users(store) == []


def test_trying_a_chart_shows_cards_and_stores_nothing(console):
    store = console.app.extensions["cds"].store
    browser = sign_in(console)
    form = browser.get(console.url + "/console/try", timeout=10)
    answer = browser.post(console.url + "/console/try", timeout=30,
                          data={"csrf_token": _csrf(form.text), "example": "breast-survivor-pet-ct"})
    assert answer.status_code == 200 and "Low-value scan" in answer.text
    assert store.run(lambda tx: tx.execute("SELECT COUNT(*) FROM decisions").fetchone()[0], readonly=True) == 0
    bad = browser.post(console.url + "/console/try", timeout=10, data={"csrf_token": _csrf(form.text),
                       "service": "onc-imaging-order-select", "request": "[1, 2"})
    assert bad.status_code == 400 and "refused" in bad.text


def test_knowledge_versions_are_remembered_and_compared(console):
    store = console.app.extensions["cds"].store
    from cds_service.audit import knowledge_versions
    from cds_service.console.knowledge_view import snapshot

    current = knowledge_versions.seen(store)[0]
    older = snapshot(console.app.extensions["cds"].knowledge)
    scenario = next(iter(older["scenarios"]))
    study = next(iter(older["scenarios"][scenario]["ratings"]))
    older["scenarios"][scenario]["ratings"][study] = "may-be-appropriate-was"
    knowledge_versions.remember(store, "2026.01", "0" * 64, older)
    page = sign_in(console).get(console.url + "/console/knowledge/versions", timeout=10,
                                params={"from": "0" * 64, "to": current.digest}).text
    assert f"changed <strong>{scenario}</strong>" in page and "may-be-appropriate-was" in page


def test_every_example_chart_carries_its_services_whole_prefetch():
    """A new prefetch template makes the examples stale: run tests/make_console_examples.py."""
    from cds_service.console.try_chart import examples
    from cds_service.hooks.services import SERVICES_BY_ID

    for name, example in examples().items():
        assert set(SERVICES_BY_ID[example["service"]].prefetch) <= set(example["request"]["prefetch"]), name
