"""The evidence pages over real HTTP: every card links to a page a clinician can open without logging in,
which shows every rating of the scenario with its radiation level, the rules in plain words and the
primary sources, as accessible HTML with no script and no patient data."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from cds_service.cards import wording
from cds_service.kb.loader import load_knowledge
import json

from cds_service.config import Settings
from tests.conftest import free_port
from tests.jwt_helpers import generate_key
from tests.sandbox_requests import SELECT_ID, order_select

KNOWLEDGE = load_knowledge()
SCENARIOS = {s.id: s for s in KNOWLEDGE.scenarios}


class _Outline(HTMLParser):
    """What an assistive technology would find: language, headings, tables, links, scripts, text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)

    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def _outline(html: str) -> _Outline:
    parser = _Outline()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
def test_every_scenario_has_a_readable_page_with_every_rating(live_server, scenario_id):
    answer = live_server.get(f"/evidence/{scenario_id}")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    page = _outline(answer.text)
    text = page.plain()
    scenario = SCENARIOS[scenario_id]
    assert scenario.title in text
    for rating in scenario.ratings:
        procedure = KNOWLEDGE.procedures[rating.procedure]
        assert procedure.name in text and rating.rating.label in text
        assert (wording.radiation(procedure) or "") in text
    unverified = [r for r in scenario.ratings if not wording.is_verified(r.confidence)]
    assert text.count("Not yet verified against the ACR table") == len(unverified)
    assert KNOWLEDGE.version in text
    # Semantic, script-free HTML: language, one title heading, a captioned table with row and column headers.
    assert ("html", {"lang": "en"}) in page.tags
    assert page.count("h1") == 1 and page.count("script") == 0
    assert page.count("caption") == 1 and page.count("th") == 5 + len(scenario.ratings) + len(scenario.covers)
    assert "unknown" not in text.lower() and "seed" not in text.lower()


def test_page_lists_only_primary_sources_and_plain_rules(live_server):
    text = _outline(live_server.get("/evidence/cervix-suspected-recurrence").text).plain()
    assert "Pelvic pain in the last 90 days" in text and "SCC antigen rising" in text
    assert "None of:" in text  # the early post-treatment window excludes the scenario
    assert "doi.org/10.1016/j.jacr.2024.02.026" in live_server.get("/evidence/cervix-suspected-recurrence").text
    for source in KNOWLEDGE.sources.values():
        if source.kind not in wording.PRIMARY_KINDS:
            assert source.title not in text, source.id


def test_index_stylesheet_and_unknown_scenario(live_server):
    index = live_server.get("/evidence/")
    assert index.status_code == 200
    assert all(f'href="{scenario_id}"' in index.text for scenario_id in SCENARIOS)
    css = live_server.get("/evidence/evidence.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css") and "table" in css.text
    missing = live_server.get("/evidence/no-such-scenario")
    assert missing.status_code == 404 and "No such scenario" in missing.text
    assert "script-src" not in index.headers["Content-Security-Policy"]  # nothing may run on the pages


def test_cards_link_to_the_page_of_their_scenario(live_server):
    body = order_select("76856", ["429484003", "30473006"])  # treated cervical cancer, pelvic pain, US pelvis
    card = live_server.post(f"/cds-services/{SELECT_ID}", json=body).json()["cards"][0]
    evidence = [link["url"] for link in card["links"] if "/evidence/" in link["url"]]
    assert evidence and evidence[0].startswith("http")  # absolute, from the public base URL
    assert evidence[0].endswith("/evidence/cervix-suspected-recurrence")
    assert "/evidence/cervix-suspected-recurrence" in card["detail"]
    page = live_server.session.get(live_server.url + evidence[0][evidence[0].index("/evidence/"):], timeout=10)
    assert page.status_code == 200 and "Pelvic ultrasound" in page.text


def test_pages_need_no_login_when_hook_calls_do(make_live_server, tmp_path):
    # An inline key is enough: the page is asked for without any token, the hook call is refused.
    issuers = tmp_path / "issuers.json"
    key = generate_key("ES384", kid="k1").public_jwk()
    issuers.write_text(json.dumps({"issuers": [{"iss": "https://ehr.example.org", "jwks": {"keys": [key]}}]}))
    port = free_port()
    server = make_live_server(Settings(mode="production", public_base_url=f"http://127.0.0.1:{port}",
                                       trusted_issuers_file=str(issuers), cors_origins=("https://ehr.example.org",),
                                       database_url=f"sqlite:///{tmp_path}/s.sqlite3", log_level="WARNING"), port=port)
    assert server.get("/cds-services").status_code == 401
    page = server.get("/evidence/breast-distant-surveillance-asymptomatic")
    assert page.status_code == 200 and "Whole-body bone scan" in page.text
