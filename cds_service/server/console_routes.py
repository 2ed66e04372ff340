"""Routes of the committee console (``/console/``): sessions, CSRF, headers; pages come from ``console/``.

Every page but the sign-in form and the stylesheet needs a live session: without one a GET is sent
to the sign-in form and a POST is refused (403). Every POST must carry the session's CSRF token
(the sign-in form a double-submit token, since no session exists yet). Pages are sent with a
content security policy that allows no script at all and only the console's own stylesheet and
the charts' nonce-marked style elements, and are never cached.
"""

from __future__ import annotations

import json
import secrets
from datetime import date

from flask import Blueprint, Response, abort, current_app, g, redirect, request

from cds_service.console import auth, try_chart, views
from cds_service.console.knowledge_view import knowledge_context
from cds_service.console.render import page, static_file
from cds_service.errors import CdsError, InvalidRequest
from cds_service.hooks.request import decode_hook_body
from cds_service.hooks.services import SERVICES_BY_ID

bp = Blueprint("console", __name__, url_prefix="/console")

COOKIE = "cds_console"
SIGNIN_CSRF_COOKIE = "cds_console_signin"
_OPEN_ENDPOINTS = {"console.sign_in_form", "console.sign_in", "console.static"}


def _cds():
    return current_app.extensions["cds"]


def _secure_cookie() -> bool:
    return _cds().settings.console_cookie_secure


def _set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", secure=_secure_cookie(), httponly=True,
                        samesite="Strict")


@bp.before_request
def _require_session():
    g.console_nonce = secrets.token_urlsafe(16)
    g.console_session = auth.current_session(_cds().store, request.cookies.get(COOKIE))
    if request.endpoint in _OPEN_ENDPOINTS:
        return None
    if g.console_session is None:
        if request.method == "POST":
            return _html(views.message(None, "Not signed in", "Sign in first."), 403)
        return redirect("/console/sign-in", code=303)
    if request.method == "POST" and not auth.csrf_ok(g.console_session, request.form.get("csrf_token")):
        return _html(views.message(_viewer(), "Refused", "The form was not sent from this console (CSRF token "
                                   "missing or wrong). Reload the page and try again."), 403)
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    nonce = getattr(g, "console_nonce", "")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'self' 'nonce-{nonce}'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def _viewer() -> views.Viewer:
    s = g.console_session
    return views.Viewer(s.username, s.role, s.csrf_token, g.console_nonce, _cds().settings.console_show_clinicians)


def _html(body: str | None, status: int = 200) -> Response:
    if body is None:
        body, status = views.message(_viewer() if g.get("console_session") else None, "Not found",
                                     "There is no such page."), 404
    return Response(body, status=status, mimetype="text/html")


def _page(render, *args) -> Response:
    cds = _cds()
    try:
        return _html(render(cds.store, cds.knowledge, *args, _viewer()))
    except views.BadQuery as problem:
        return _html(views.message(_viewer(), "Cannot show this", str(problem)), 400)


@bp.get("/static/<name>")
def static(name: str):
    text = static_file(name)
    if text is None:
        abort(404)
    return Response(text, mimetype="text/css", headers={"Cache-Control": "public, max-age=3600"})


@bp.get("/sign-in")
def sign_in_form(problem: str | None = None, username: str | None = None, status: int = 200):
    token = secrets.token_urlsafe(32)
    response = _html(page("signin.html", viewer=None, range=None, active="", csrf_token=token, problem=problem,
                          username=username), status)
    _set_cookie(response, SIGNIN_CSRF_COOKIE, token, max_age=3600)
    return response


@bp.post("/sign-in")
def sign_in():
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE) or ""
    submitted = request.form.get("csrf_token") or ""
    if not expected or not secrets.compare_digest(expected, submitted):
        return sign_in_form("The form had expired or was not sent from this console; please try again.", status=403)
    username = (request.form.get("username") or "").strip()
    result = auth.sign_in(_cds().store, username, request.form.get("password") or "", request.remote_addr or "")
    if result.refused == "limited":
        return sign_in_form("Too many failed sign-ins: wait 15 minutes and try again.", username, 429)
    if result.refused:
        return sign_in_form("Wrong user name or password.", username, 401)
    response = redirect("/console/", code=303)
    _set_cookie(response, COOKIE, result.token, max_age=int(auth.SESSION_LIFETIME.total_seconds()))
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/console")
    return response


@bp.post("/sign-out")
def sign_out():
    auth.sign_out(_cds().store, request.cookies.get(COOKIE))
    response = redirect("/console/sign-in", code=303)
    response.delete_cookie(COOKIE, path="/console", secure=_secure_cookie(), httponly=True, samesite="Strict")
    return response


@bp.get("/")
def overview():
    return _page(views.overview, request.args)


@bp.get("/scenarios")
def scenarios():
    return _page(views.scenarios, request.args)


@bp.get("/scenarios/<scenario_id>")
def scenario(scenario_id: str):
    return _page(views.scenario, scenario_id, request.args)


@bp.get("/decisions")
def decisions():
    return _page(views.decisions, request.args)


@bp.get("/decisions/<int:decision_id>")
def decision(decision_id: int):
    return _page(views.decision, decision_id)


def _admin() -> views.Viewer:
    viewer = _viewer()
    if viewer.role != "admin":
        abort(403)
    return viewer


@bp.get("/users")
def users(notice: str | None = None, status: int = 200):
    viewer = _admin()
    return _html(page("users.html", viewer=viewer, range=None, active="users", notice=notice,
                      accounts=auth.list_users(_cds().store)), status)


@bp.post("/users/add")
def add_user():
    _admin()
    form = request.form
    try:
        created = auth.add_user(_cds().store, form.get("username", ""), form.get("password", ""),
                                form.get("role", ""))
    except auth.AccountError as error:
        return users(f"Not saved: {error}.", 400)
    return users(f"{'Created' if created else 'Updated'} {form['username']}.")


@bp.post("/users/remove")
def remove_user():
    viewer = _admin()
    name = request.form.get("username", "")
    if name == viewer.username:
        return users("You cannot remove your own account.", 400)
    removed = auth.remove_user(_cds().store, name)
    return users(f"Removed {name}." if removed else f"No account {name}.", 200 if removed else 404)


@bp.errorhandler(403)
@bp.errorhandler(404)
def _refused(error):
    title = "Not allowed" if error.code == 403 else "Not found"
    text = "This page is for administrators." if error.code == 403 else "There is no such page."
    viewer = _viewer() if g.get("console_session") else None
    return _html(views.message(viewer, title, text), error.code)


@bp.get("/knowledge/", defaults={"section": "scenarios"})
@bp.get("/knowledge/<section>")
def knowledge(section: str):
    cds = _cds()
    context = knowledge_context(cds.store, cds.knowledge, section, request.args)
    if context is None:
        abort(404)
    return _html(page("knowledge.html", viewer=_viewer(), range=None, active="knowledge", **context))


def _try_page(status: int = 200, **context) -> Response:
    defaults = {"examples": try_chart.examples(), "chosen": None, "pasted": None, "problem": None, "cards": None,
                "actions": 0, "service": None, "service_ids": sorted(SERVICES_BY_ID)}
    return _html(page("try.html", viewer=_viewer(), range=None, active="try", **{**defaults, **context}), status)


@bp.get("/try")
def try_form():
    return _try_page()


@bp.post("/try")
def try_request():
    name, pasted = request.form.get("example") or "", request.form.get("request") or ""
    example = try_chart.examples().get(name)
    try:
        if example is not None:
            service_id, body = example["service"], json.loads(json.dumps(example["request"]))
            today = date.fromisoformat(example["as_of"])
        else:
            service_id, today = request.form.get("service") or "", None
            body = decode_hook_body(pasted.encode("utf-8"))
        service = SERVICES_BY_ID.get(service_id)
        if service is None or not isinstance(body, dict):
            raise InvalidRequest("choose a service and paste a JSON object")
        answer = _cds().decisions.decide(service, try_chart.without_outbound_access(body), today=today, record=False)
    except (CdsError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        return _try_page(400, chosen=name, pasted=pasted, problem=f"The service refused this request: {message}")
    return _try_page(chosen=name, pasted=pasted, service=service_id, cards=try_chart.cards_for_page(answer),
                     actions=len(answer.get("systemActions") or ()))
