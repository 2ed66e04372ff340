"""FHIR fixture replay: ``python -m cds_service replay [DIR] [--case PATTERN] [--verbose]``.

Replays every case of a fixture directory (format: ``fhir_fixtures/README.md``) over real HTTP and
compares the answers with the case's expectations. It starts, on 127.0.0.1:

* a fixture FHIR server (:mod:`cds_service.devtools.fixture_fhir_server`) holding every chart of the directory;
* the service itself (development mode, a throw-away SQLite database in a temporary directory).

Each case runs in each of its modes:

* ``prefetch`` — the runner fills the prefetch from the FHIR server, rendering the discovery
  templates as a CDS client would, and sends it with the request;
* ``prefetch+server`` — the same prefetch, sent together with ``fhirServer`` as an EHR does, so
  the service can read the pages a prefetched search left behind (``link[next]``);
* ``fetch`` — no prefetch; ``fhirServer`` points at the FHIR server and the service fetches;
* ``sandbox`` — no chart: every prefetch key ``null``, as the CDS Hooks sandbox's PAMA tab sends.

Dates in the charts and requests are shifted by (today − ``as_of``) days, so a case means the same
whenever it runs. Every response is also checked against the CDS Hooks response schema.
Exit status 0 when every case passes, 1 on any mismatch, 2 when the fixtures or the knowledge base
cannot be read.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, TextIO

import requests


from cds_service.codes import PAMA_AUC_APPLIED, PAMA_RATING
from cds_service.config import Settings
from cds_service.devtools.fhir_search import flatten
from cds_service.devtools.fixture_fhir_server import FixtureFhirServer
from cds_service.hooks.prefetch import render_template
from cds_service.hooks.schemas import problems
from cds_service.hooks.services import SERVICES_BY_ID
from cds_service.server.embedded import BackgroundService

MODES = ("prefetch", "prefetch+server", "fetch", "sandbox")
TIERS = {"usually-appropriate": "UA", "may-be-appropriate": "MBA", "usually-not-appropriate": "UNA"}


class FixtureError(Exception):
    """A fixture file cannot be read or is not in the documented format."""


# --- dates ---------------------------------------------------------------------------------------

# FHIR date / dateTime / instant: YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss(.sss)(Z|±hh:mm).
_FHIR_DATE = re.compile(
    r"(?P<y>[0-9]{4})(?:-(?P<m>0[1-9]|1[0-2])(?:-(?P<d>0[1-9]|[12][0-9]|3[01])"
    r"(?P<time>T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?",
    re.ASCII,
)
#: Elements whose string values are never dates, even when they look like one.
_NOT_DATES = frozenset({"id", "code", "system", "reference", "url", "version", "display", "text", "div", "value"})
#: A bare year ("2024") counts as a date only under an element that is a date.
_DATE_KEYS = frozenset({"date", "start", "end", "issued", "started", "authoredOn", "lastUpdated", "recorded",
                        "recordedOn", "dateAsserted", "birthDate", "as_of"})


def _is_date_key(key: str | None) -> bool:
    return key is not None and (key in _DATE_KEYS or key.endswith(("Date", "DateTime", "Instant")))


def shift_date_string(text: str, days: int, key: str | None = None) -> str:
    """``text`` moved ``days`` days if it is a FHIR date/dateTime/instant, else unchanged.

    Precision, time of day and time zone are kept: "2024-05" stays a year-month (its first day is
    moved), "2024-05-17T23:30:00-05:00" keeps "T23:30:00-05:00" (the local date is moved).
    """
    match = _FHIR_DATE.fullmatch(text)
    if match is None or (match["m"] is None and not _is_date_key(key)):
        return text
    try:
        moved = date(int(match["y"]), int(match["m"] or 1), int(match["d"] or 1)) + timedelta(days=days)
    except (ValueError, OverflowError):  # 2023-02-30, or out of range
        return text
    if match["m"] is None:
        return f"{moved.year:04d}"
    if match["d"] is None:
        return f"{moved.year:04d}-{moved.month:02d}"
    return moved.isoformat() + (match["time"] or "")


def shift_dates(obj: Any, days: int, key: str | None = None) -> Any:
    """A copy of a JSON value with every FHIR date/dateTime/instant string moved by ``days`` days."""
    if isinstance(obj, dict):
        return {k: shift_dates(v, days, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [shift_dates(item, days, key) for item in obj]
    if isinstance(obj, str) and days and key not in _NOT_DATES:
        return shift_date_string(obj, days, key)
    return obj


# --- fixtures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    as_of: date
    chart: str | None                       # path relative to the fixture directory
    modes: tuple[str, ...]
    request: dict
    expect: dict
    service_id: str


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FixtureError(f"{path}: cannot read JSON ({exc})") from None


def load_case(path: Path, fixture_dir: Path) -> Case:
    raw = _read_json(path)
    where = path.relative_to(fixture_dir)
    if not isinstance(raw, dict):
        raise FixtureError(f"{where}: a case must be a JSON object")
    missing = [k for k in ("description", "as_of", "modes", "request", "expect") if k not in raw]
    if missing:
        raise FixtureError(f"{where}: missing {', '.join(missing)}")
    try:
        as_of = date.fromisoformat(raw["as_of"])
    except (TypeError, ValueError):
        raise FixtureError(f"{where}: as_of must be YYYY-MM-DD") from None
    modes = raw["modes"]
    if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
        raise FixtureError(f"{where}: modes must be a non-empty list of {', '.join(MODES)}")
    chart = raw.get("chart")
    if chart is None and set(modes) - {"sandbox"}:
        raise FixtureError(f"{where}: modes prefetch/fetch need a chart")
    if chart is not None and not (fixture_dir / chart).is_file():
        raise FixtureError(f"{where}: chart {chart} not found")
    request = raw["request"]
    if not isinstance(request, dict) or not isinstance(request.get("context"), dict):
        raise FixtureError(f"{where}: request must be an object with a context")
    service_id = request.get("service") or raw.get("service")
    if service_id not in SERVICES_BY_ID:
        raise FixtureError(f"{where}: request.service must be one of {', '.join(sorted(SERVICES_BY_ID))}")
    if not isinstance(raw["expect"], dict):
        raise FixtureError(f"{where}: expect must be an object")
    return Case(path.stem, raw["description"], as_of, chart, tuple(modes), request, raw["expect"], service_id)


def load_fixtures(fixture_dir: Path, pattern: str | None = None) -> tuple[list[Case], dict[str, dict]]:
    """The cases (matching ``pattern``, a glob or substring of the case id) and every chart by path."""
    case_files = sorted((fixture_dir / "cases").glob("*.json"))
    if not case_files:
        raise FixtureError(f"{fixture_dir}: no cases/*.json")
    charts = {}
    patients: dict[str, str] = {}
    for path in sorted((fixture_dir / "charts").glob("*.json")):
        name = path.relative_to(fixture_dir).as_posix()
        bundle = _read_json(path)
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise FixtureError(f"{name}: a chart must be a FHIR Bundle")
        for resource in flatten([bundle]):
            if resource["resourceType"] == "Patient":
                if resource.get("id") in patients:
                    raise FixtureError(f"{name}: Patient/{resource.get('id')} is also in {patients[resource['id']]}")
                patients[resource.get("id")] = name
        charts[name] = bundle
    cases = [load_case(path, fixture_dir) for path in case_files]
    if pattern:
        cases = [c for c in cases if fnmatch.fnmatch(c.id, pattern) or pattern in c.id]
    return cases, charts


# --- running -------------------------------------------------------------------------------------


@dataclass
class Result:
    case: str
    mode: str
    expected: str
    got: str
    ms: float
    problems: list[str] = field(default_factory=list)
    response: Any = None

    @property
    def passed(self) -> bool:
        return not self.problems


def _start_service(tmp_dir: str) -> BackgroundService:
    """The service on loopback with its own temporary SQLite database (your database is never touched)."""
    settings = Settings.from_env(
        mode="development", database_url=f"sqlite:///{tmp_dir}/replay.sqlite3", trusted_issuers_file="",
        allowed_fhir_servers=(), audit_hash_key="", cors_origins=("*",), log_level="WARNING",
        # Loopback on a shared, busy machine: the first connection to a fresh fixture server can take
        # over the production 1 s connect timeout, which would turn a case into a 412 at random.
        fhir_connect_timeout=5.0,
    )
    return BackgroundService(settings, name="replay-service")


def today_utc() -> date:
    """The service's "today" (the request date it rates against)."""
    return datetime.now(timezone.utc).date()


def build_request(case: Case, mode: str, days: int, fhir: FixtureFhirServer) -> dict:
    body = shift_dates(copy.deepcopy(case.request), days)
    body.pop("service", None)
    body.pop("prefetch", None)
    body.pop("fhirServer", None)
    templates = SERVICES_BY_ID[case.service_id].prefetch
    if mode == "sandbox":
        body["prefetch"] = {key: None for key in templates}
    elif mode == "fetch":
        body["fhirServer"] = fhir.base_url
    else:  # prefetch: what a CDS client does before calling the service
        if mode == "prefetch+server":
            body["fhirServer"] = fhir.base_url
        body["prefetch"] = {}
        for key, template in templates.items():
            query = render_template(template, body["context"])
            if query is not None:
                # A fresh connection per read (module-level get): small answers on a kept-alive
                # connection to the fixture server can stall ~40 ms each (Nagle / delayed ACK).
                answer = requests.get(f"{fhir.base_url}/{query}", timeout=10)
                body["prefetch"][key] = answer.json() if answer.status_code == 200 else None
    return body


def run_case(case: Case, mode: str, service_url: str, fhir: FixtureFhirServer, charts: dict, http: requests.Session) -> Result:
    days = (today_utc() - case.as_of).days
    if case.chart is not None:
        fhir.add(shift_dates(charts[case.chart], days))  # this case's dates (same ids: replaces)
    expected = describe_expectation(case.expect)
    try:
        body = build_request(case, mode, days, fhir)
        started = time.perf_counter()
        answer = http.post(f"{service_url}/cds-services/{case.service_id}", json=body, timeout=30)
    except requests.RequestException as exc:
        return Result(case.id, mode, expected, "no answer", 0.0, [f"request failed: {exc}"])
    ms = (time.perf_counter() - started) * 1000
    try:
        response = answer.json()
    except ValueError:
        response = None
    found = check(case.expect, answer.status_code, response)
    got = describe_response(answer.status_code, response)
    return Result(case.id, mode, expected, got, ms, found, response)


def fixture_dirs(fixture_dir: Path) -> list[Path]:
    """The directory itself, then each sub-directory that is a fixture directory of its own (has a
    ``cases/`` folder, e.g. ``fhir_fixtures/realworld/``): every corpus under it is replayed."""
    nested = sorted(sub for sub in fixture_dir.iterdir() if sub.is_dir() and (sub / "cases").is_dir()) \
        if fixture_dir.is_dir() else []
    return [fixture_dir, *nested]


def run(fixture_dir: str | Path = "fhir_fixtures", pattern: str | None = None) -> list[Result]:
    """Replay the cases of the directory and of its nested corpora (each with its own FHIR server,
    since their charts are separate); raises :class:`FixtureError` when the fixtures cannot be read."""
    corpora = [load_fixtures(directory, pattern) for directory in fixture_dirs(Path(fixture_dir))]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="cds-replay-") as tmp:
        service = _start_service(tmp)
        try:
            with requests.Session() as http:
                for cases, charts in corpora:
                    if not cases:
                        continue
                    with FixtureFhirServer(list(charts.values())) as fhir:
                        for case in cases:
                            for mode in case.modes:
                                results.append(run_case(case, mode, service.url, fhir, charts, http))
        finally:
            service.stop()
    return results


# --- expectations --------------------------------------------------------------------------------


def ratings(response: dict) -> dict[str, dict]:
    """Order id → {"pama", "tier", "scenario"} from ``extension.systemActions`` (what the sandbox reads)."""
    found = {}
    for action in (response.get("extension") or {}).get("systemActions") or []:
        resource = action.get("resource") or {}
        rating: dict[str, Any] = {}
        for ext in resource.get("extension") or []:
            if ext.get("url") == PAMA_RATING:
                coding = (ext.get("valueCodeableConcept") or {}).get("coding") or [{}]
                rating["pama"] = coding[0].get("code")
                rating["tier"] = coding[1].get("code") if len(coding) > 1 else None
            elif ext.get("url") == PAMA_AUC_APPLIED:
                rating["scenario"] = str(ext.get("valueUri")).rsplit("/auc/", 1)[-1]
        if rating:
            found[resource.get("id")] = rating
    return found


def _suggestion_kinds(card: dict) -> list[str]:
    """"cancel" for a delete action, "switch-to:<code>" for each code of a replacement order."""
    kinds = []
    for suggestion in card.get("suggestions") or []:
        for action in suggestion.get("actions") or []:
            if action.get("type") == "delete":
                kinds.append("cancel")
            elif action.get("type") in ("update", "create"):
                codings = ((action.get("resource") or {}).get("code") or {}).get("coding") or [{}]
                kinds.extend(f"switch-to:{coding.get('code')}" for coding in codings)
    return kinds


def card_mismatches(want: dict, card: dict) -> list[str]:
    """How ``card`` differs from the expected card ``want`` (empty when it matches)."""
    found = []
    if "indicator" in want and card.get("indicator") != want["indicator"]:
        found.append(f"indicator {card.get('indicator')!r}")
    for field_name in ("summary", "detail"):
        text = (card.get(field_name) or "").lower()
        missing = [part for part in want.get(f"{field_name}_contains", []) if part.lower() not in text]
        if missing:
            found.append(f"{field_name} lacks {missing}")
    if "suggestion" in want:
        kinds = _suggestion_kinds(card)
        if want["suggestion"] in (None, "none"):
            if kinds:
                found.append(f"suggestions {kinds}, expected none")
        elif want["suggestion"] not in kinds:
            found.append(f"suggestions {kinds or 'none'}")
    return found


def check(expect: dict, status: int, response: Any) -> list[str]:
    """What differs between the expectation and the answer (empty when it passes)."""
    found: list[str] = []
    if status != expect.get("status", 200):
        return [f"status {status}, expected {expect.get('status', 200)}"]
    if status != 200:
        return []
    if not isinstance(response, dict):
        return ["answer is not a JSON object"]
    found += [f"response schema: {p}" for p in problems("response", response)]
    if response.get("systemActions", []) != (response.get("extension") or {}).get("systemActions", []):
        found.append("systemActions and extension.systemActions differ")
    got = ratings(response)
    if "orders" in expect:
        for order_id, want in expect["orders"].items():
            if want.get("rated") is False:
                if order_id in got:
                    found.append(f"order {order_id}: rated {got[order_id]}, expected no rating")
                continue
            have = got.get(order_id)
            if have is None:
                found.append(f"order {order_id}: not rated, expected {want}")
                continue
            for key in ("pama", "tier", "scenario"):
                if key in want and have.get(key) != want[key]:
                    found.append(f"order {order_id}: {key} {have.get(key)!r}, expected {want[key]!r}")
        for order_id in set(got) - set(expect["orders"]):
            found.append(f"order {order_id}: rated {got[order_id]} but not in the expectation")
    cards = list(response.get("cards") or [])
    if "cards" in expect:
        unmatched = list(cards)
        for want in expect["cards"]:
            hit = next((c for c in unmatched if not card_mismatches(want, c)), None)
            if hit is not None:
                unmatched.remove(hit)
                continue
            found.append(f"no card like {json.dumps(want)}")
            for card in unmatched:
                found.append(f"  card {card.get('summary')!r}: " + "; ".join(card_mismatches(want, card)))
    count = expect.get("card_count", len(expect["cards"]) if "cards" in expect else None)
    if count is not None and len(cards) != count:
        found.append(f"{len(cards)} cards, expected {count}: " + "; ".join(repr(c.get("summary")) for c in cards))
    return found


def _short_rating(rating: dict) -> str:
    if rating.get("rated") is False:
        return "-"
    tier = TIERS.get(rating.get("tier") or "", None)
    return tier or ("NCA" if rating.get("pama") == "no-criteria-apply" else rating.get("pama") or "?")


def _short_card(card: dict, kinds: Iterable[str] | None = None) -> str:
    kinds = list(kinds or [])
    text = card.get("indicator", "?")
    return text + (">" + ",".join(k.replace("switch-to:", "") for k in kinds) if kinds else "")


def describe_expectation(expect: dict) -> str:
    parts = [f"{oid}={_short_rating(r)}" for oid, r in expect.get("orders", {}).items()]
    if "cards" in expect:
        cards = [_short_card(c, [c["suggestion"]] if c.get("suggestion") not in (None, "none") else []) for c in expect["cards"]]
        parts.append("cards[" + " ".join(cards) + "]")
    if expect.get("status", 200) != 200:
        parts.insert(0, f"HTTP {expect['status']}")
    return " ".join(parts)


def describe_response(status: int, response: Any) -> str:
    if status != 200 or not isinstance(response, dict):
        return f"HTTP {status}"
    parts = [f"{oid}={_short_rating(r)}" for oid, r in ratings(response).items()]
    cards = [_short_card(c, _suggestion_kinds(c)) for c in response.get("cards") or []]
    parts.append("cards[" + " ".join(cards) + "]")
    return " ".join(parts)


# --- command line --------------------------------------------------------------------------------


def print_table(results: list[Result], out: TextIO, verbose: bool = False) -> None:
    rows = [(r.case, r.mode, r.expected, r.got, "PASS" if r.passed else "FAIL", f"{r.ms:.0f}") for r in results]
    header = ("case", "mode", "expected", "got", "result", "ms")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:{w}}}" for w in widths)
    print(line.format(*header), file=out)
    print(line.format(*("-" * w for w in widths)), file=out)
    for result, row in zip(results, rows):
        print(line.format(*row), file=out)
        for problem in result.problems:
            print(f"    ! {problem}", file=out)
        if verbose and isinstance(result.response, dict):
            for card in result.response.get("cards") or []:
                print(f"    card {card.get('indicator')}: {card.get('summary')}", file=out)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="python -m cds_service replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture_dir", nargs="?", default="fhir_fixtures", help="fixture directory (default fhir_fixtures/)")
    parser.add_argument("--case", default=None, metavar="PATTERN", help="only cases whose id matches (glob or substring)")
    parser.add_argument("--verbose", "-v", action="store_true", help="also print every card's summary")
    args = parser.parse_args(argv)
    from cds_service.kb.loader import KnowledgeError

    try:
        results = run(args.fixture_dir, args.case)
    except FixtureError as exc:
        print(f"replay: unreadable fixtures: {exc}", file=sys.stderr)
        return 2
    except KnowledgeError as exc:
        print(f"replay: the knowledge base is invalid:\n{exc}", file=sys.stderr)
        return 2
    if not results:
        print(f"replay: no case matches {args.case!r}", file=sys.stderr)
        return 2
    print_table(results, out, args.verbose)
    failed = sum(not r.passed for r in results)
    print(f"\n{len(results) - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0
