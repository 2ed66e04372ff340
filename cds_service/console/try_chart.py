""""Try a chart": the shipped example requests, and cards laid out as an EHR shows them.

The examples (``examples/*.json``, package data) are hook requests for synthetic fixture charts,
written by ``tests/make_console_examples.py``. A tried request is answered by the service with
``record=False``: no decision, card or metric is stored or counted, and its ``fhirServer`` and
``fhirAuthorization`` are dropped first, so the service reads only the pasted prefetch and calls
nobody.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from html import escape
from importlib import resources

from markupsafe import Markup

_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+|/[^)\s]*)\)")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


@lru_cache(maxsize=1)
def examples() -> dict[str, dict]:
    folder = resources.files("cds_service.console").joinpath("examples")
    found = {}
    for item in sorted(folder.iterdir(), key=lambda f: f.name):
        if item.name.endswith(".json"):
            found[item.name[:-5]] = json.loads(item.read_text(encoding="utf-8"))
    return found


def without_outbound_access(body: dict) -> dict:
    """The request with nothing that would let the service call the EHR."""
    return {k: v for k, v in body.items() if k not in ("fhirServer", "fhirAuthorization")}


def _inline(text: str) -> str:
    out = escape(text)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', out)


def detail_html(markdown: str) -> Markup:
    """A card's detail (the few Markdown forms cards use: paragraphs, bullets, bold, links), escaped."""
    blocks = []
    for block in re.split(r"\n\s*\n", markdown or ""):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if not lines:
            continue
        if all(line.startswith(("- ", "* ")) for line in lines):
            blocks.append("<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
    return Markup("".join(blocks))


def cards_for_page(response: dict) -> list[dict]:
    cards = []
    for card in response.get("cards") or ():
        cards.append({
            "summary": card.get("summary", ""), "indicator": card.get("indicator", "info"),
            "detail": detail_html(card.get("detail", "")),
            "source": card.get("source") or {},
            "suggestions": [s.get("label", "") for s in card.get("suggestions") or ()],
            "links": [link for link in card.get("links") or () if str(link.get("url", "")).startswith(("http", "/"))],
            "override_reasons": [r.get("display", r.get("code", "")) for r in card.get("overrideReasons") or ()],
        })
    return cards
