"""The evidence pages in a real browser (headless Chromium): readable with JavaScript switched off,
nothing loaded from elsewhere, no console error, the rating table laid out on a laptop screen."""

from __future__ import annotations

import os

import pytest

from tests.sandbox_harness import CHROMIUM, browser_context

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"needs {CHROMIUM} (.ci/browser.sh)")


def test_evidence_page_reads_without_javascript_and_loads_nothing_else(live_server):
    pytest.importorskip("playwright.sync_api")
    url = f"{live_server.url}/evidence/cervix-suspected-recurrence"
    with browser_context() as context:
        page = context.browser.new_page(java_script_enabled=False, viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("requestfailed", lambda request: problems.append(f"failed {request.url}"))
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        answer = page.goto(url)
        assert answer is not None and answer.status == 200
        assert page.locator("h1").inner_text() == "Treated cervical cancer, suspected recurrence"
        rows = page.locator("table tbody tr")
        assert rows.count() >= 5
        first = rows.nth(0)
        assert first.locator("th").inner_text() and "Appropriate" in first.locator("td").nth(0).inner_text()
        # The stylesheet applied (table full width) and the table fits the screen without scrolling sideways.
        box = page.locator("table").bounding_box()
        assert box is not None and box["width"] > 500 and box["x"] + box["width"] <= 1400
        body = page.locator("main").bounding_box()
        assert body is not None and body["x"] + body["width"] <= 1400
        assert all(r.startswith(live_server.url) for r in requested), requested
        assert not problems, problems
        page.close()
