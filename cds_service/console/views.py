"""The console's pages: request values in, HTML out (the HTTP layer is ``server/console_routes.py``).

Each function takes what the page needs (store, knowledge, the query values, the viewer) and
returns HTML. Query values are checked here; a bad one raises :class:`BadQuery` (a 400 page).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Mapping

from cds_service.audit import analytics, decision_queries
from cds_service.audit.store import Store
from cds_service.console import charts
from cds_service.console.render import page
from cds_service.kb.model import Knowledge

DEFAULT_DAYS = 30
MAX_DAYS = 3660
RATINGS = ("usually-appropriate", "may-be-appropriate", "usually-not-appropriate")
OUTCOMES = ("rated", "no-criteria-apply", "not-rated")


class BadQuery(ValueError):
    """A query value the page cannot use, with the reason shown to the viewer."""


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and what the page needs to build forms and inline styles."""

    username: str
    role: str
    csrf_token: str
    nonce: str
    show_clinicians: bool = False


@dataclass(frozen=True)
class Range:
    start: date
    end: date
    service: str | None

    def query(self) -> str:
        service = f"&service={self.service}" if self.service else ""
        return f"start={self.start.isoformat()}&end={self.end.isoformat()}{service}"


def _date(value: str | None, name: str, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadQuery(f"{name} must be a date written YYYY-MM-DD, not {value[:40]!r}") from None


def read_range(args: Mapping[str, str], store: Store) -> Range:
    today = datetime.now(timezone.utc).date()
    end = _date(args.get("end"), "end", today)
    start = _date(args.get("start"), "start", end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise BadQuery("start must not be after end")
    if (end - start).days > MAX_DAYS:
        raise BadQuery(f"a range spans at most {MAX_DAYS} days")
    service = args.get("service") or None
    if service and service not in analytics.services(store):
        raise BadQuery(f"no decisions from a service called {service[:60]!r}")
    return Range(start, end, service)


def _choice(args: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = args.get(name) or None
    if value is not None and value not in allowed:
        raise BadQuery(f"{name} must be one of {', '.join(allowed)}")
    return value


def _days(rng: Range) -> list[str]:
    return [(rng.start + timedelta(days=i)).isoformat() for i in range((rng.end - rng.start).days + 1)]


def _common(store: Store, knowledge: Knowledge, viewer: Viewer, rng: Range | None, active: str) -> dict:
    return {"viewer": viewer, "range": rng, "active": active, "services": analytics.services(store),
            "knowledge_version": knowledge.version,
            "titles": {s.id: s.title for s in knowledge.scenarios}}


def overview(store: Store, knowledge: Knowledge, args: Mapping[str, str], viewer: Viewer) -> str:
    rng = read_range(args, store)
    fig = analytics.figures(store, rng.start, rng.end, rng.service)
    days = [d for d in _days(rng) if d in fig.per_day] or _days(rng)[-1:]
    per_day = [(d, fig.per_day.get(d, {})) for d in days]
    nonce = viewer.nonce
    pictures = {
        "ratings": charts.bars("Orders by outcome and rating", ["orders"],
                               {**{r: [fig.by_rating[r]] for r in RATINGS},
                                **{o: [fig.by_outcome[o]] for o in OUTCOMES[1:]}}, nonce),
        "burden": charts.lines("Orders and cards per day", days,
                               {"orders": [p.get("orders", 0) for _, p in per_day],
                                "cards": [p.get("cards", 0) for _, p in per_day]}, nonce),
        "feedback": charts.bars("Feedback on the cards shown", ["cards"],
                                {"accepted": [fig.feedback["accepted"]], "overridden": [fig.feedback["overridden"]],
                                 "no feedback": [fig.no_feedback]}, nonce),
        "latency": charts.lines("Answer time per day (ms)", days,
                                {"p50": [p.get("p50_ms") for _, p in per_day],
                                 "p95": [p.get("p95_ms") for _, p in per_day]}, nonce),
    }
    reasons = fig.override_reasons.most_common(10)
    if reasons:
        pictures["reasons"] = charts.horizontal_bars("Override reasons", [d or c or "(none given)" for (c, d), _ in
                                                                         reasons], [n for _, n in reasons], nonce)
    return page("overview.html", fig=fig, per_day=per_day, reasons=reasons, pictures=pictures, ratings=RATINGS,
                outcomes=OUTCOMES, scenarios=analytics.scenario_table(store, rng.start, rng.end, rng.service),
                **_common(store, knowledge, viewer, rng, "overview"))


def scenario(store: Store, knowledge: Knowledge, scenario_id: str, args: Mapping[str, str],
             viewer: Viewer) -> str | None:
    found = next((s for s in knowledge.scenarios if s.id == scenario_id), None)
    rng = read_range(args, store)
    fig = analytics.figures(store, rng.start, rng.end, rng.service, scenario=scenario_id)
    if found is None and not fig.orders:
        return None
    return page("scenario.html", scenario_id=scenario_id, scenario=found, fig=fig, ratings=RATINGS,
                reasons=fig.override_reasons.most_common(10),
                **_common(store, knowledge, viewer, rng, "scenarios"))


def scenarios(store: Store, knowledge: Knowledge, args: Mapping[str, str], viewer: Viewer) -> str:
    rng = read_range(args, store)
    rows = {r["scenario"]: r for r in analytics.scenario_table(store, rng.start, rng.end, rng.service)}
    listed = [rows.get(s.id, {"scenario": s.id, "orders": 0, "cards": 0, "accepted": 0, "overridden": 0})
              for s in knowledge.scenarios]
    listed += [r for sid, r in rows.items() if sid and sid not in {s.id for s in knowledge.scenarios}]
    return page("scenarios.html", rows=listed, **_common(store, knowledge, viewer, rng, "scenarios"))


def decisions(store: Store, knowledge: Knowledge, args: Mapping[str, str], viewer: Viewer) -> str:
    rng = read_range(args, store)
    try:
        page_no = max(int(args.get("page") or 0), 0)
    except ValueError:
        raise BadQuery("page must be a whole number") from None
    scenario_id = args.get("scenario")
    filt = decision_queries.DecisionFilter(
        rng.start, rng.end, rng.service, scenario_id if scenario_id != "*" else None,
        _choice(args, "rating", RATINGS), _choice(args, "outcome", OUTCOMES),
        _choice(args, "feedback", decision_queries.FEEDBACK_FILTERS))
    rows, more = decision_queries.decision_page(store, filt, page_no)
    base = rng.query() + "".join(f"&{k}={v}" for k, v in (("scenario", filt.scenario), ("rating", filt.rating),
                                 ("outcome", filt.outcome), ("feedback", filt.feedback)) if v is not None)
    return page("decisions.html", rows=rows, more=more, page_no=page_no, filt=filt, base_query=base,
                ratings=RATINGS, outcomes=OUTCOMES, feedback_filters=decision_queries.FEEDBACK_FILTERS,
                scenario_ids=[s.id for s in knowledge.scenarios],
                **_common(store, knowledge, viewer, rng, "decisions"))


def decision(store: Store, knowledge: Knowledge, decision_id: int, viewer: Viewer) -> str | None:
    detail = decision_queries.decision_detail(store, decision_id)
    if detail is None:
        return None
    return page("decision.html", d=detail, **_common(store, knowledge, viewer, None, "decisions"))


def message(viewer: Viewer | None, title: str, text: str) -> str:
    return page("message.html", viewer=viewer, title=title, text=text, active="", range=None)
