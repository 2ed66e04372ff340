"""Routes of the evidence pages the cards link to: read-only HTML, no patient data, so no JWT.

``GET /evidence/`` lists the scenarios, ``GET /evidence/<scenario id>`` shows one, and
``GET /evidence/evidence.css`` is their stylesheet. The HTML is made by ``cds_service.evidence``.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from cds_service.evidence.page import CSS_NAME, index_page, scenario_page, stylesheet

bp = Blueprint("evidence", __name__)

#: Nothing on the pages runs or loads from elsewhere: only the page's own stylesheet.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "public, max-age=300",
}


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/html", headers=_HEADERS)


def _knowledge():
    return current_app.extensions["cds"].knowledge


@bp.get("/evidence/")
def evidence_index():
    return _html(index_page(_knowledge()))


@bp.get(f"/evidence/{CSS_NAME}")
def evidence_stylesheet():
    return Response(stylesheet(), mimetype="text/css", headers=_HEADERS)


@bp.get("/evidence/<scenario_id>")
def evidence_scenario(scenario_id: str):
    knowledge = _knowledge()
    scenario = next((s for s in knowledge.scenarios if s.id == scenario_id), None)
    if scenario is None:
        return _html('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Not found</title></head>'
                     '<body><main><h1>No such scenario</h1><p><a href="./">All scenarios</a></p></main></body></html>',
                     404)
    return _html(scenario_page(scenario, knowledge))
