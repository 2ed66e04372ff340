"""Bad input gets a bounded, readable 400/413 over real HTTP: array and depth limits before the
schema check, capped problem lists, a bound on draft orders, and the small validation items of
issue 13 (hookInstance, outcomeTimestamp, repeated feedback, override display length)."""

from __future__ import annotations

import copy
import csv
import io
import json
import time
from datetime import datetime

import pytest

from cds_service.audit.records import CardRecord, DecisionRecord, patient_hash
from cds_service.audit.store import Store
from cds_service.hooks.limits import MAX_DRAFT_ORDERS, MAX_FEEDBACK_ENTRIES
from tests.fuzz_bodies import valid_feedback_entry
from tests.sandbox_requests import SELECT_ID, SIGN_ID, imaging_order, order_select, order_sign

FEEDBACK = f"/cds-services/{SELECT_ID}/feedback"
#: Far above what a bounded check needs, far below what the unbounded one took (7 s, 1.4 GB).
QUICK_S = 2.0


def _timed_post(live_server, path: str, body) -> tuple:
    started = time.monotonic()
    answer = live_server.post(path, data=json.dumps(body), headers={"Content-Type": "application/json"})
    return answer, time.monotonic() - started


def test_100000_empty_feedback_entries_are_refused_quickly_with_one_reason(live_server):
    answer, took = _timed_post(live_server, FEEDBACK, {"feedback": [{}] * 100_000})
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["details"] == [f"feedback: 100000 entries; at most {MAX_FEEDBACK_ENTRIES} per call"]
    assert took < QUICK_S, f"{took:.2f} s"


def test_many_invalid_entries_below_the_bound_give_a_capped_problem_list(live_server):
    answer, took = _timed_post(live_server, FEEDBACK, {"feedback": [{}] * MAX_FEEDBACK_ENTRIES})
    assert answer.status_code == 400
    details = answer.json()["details"]
    assert len(details) == 11 and details[-1].startswith("... and ") and details[-1].endswith(" more problems")
    # Four problems per empty entry: card, outcome and outcomeTimestamp missing, and (outcome not
    # being "overridden") acceptedSuggestions too.
    assert int(details[-1].split()[2]) == 4 * MAX_FEEDBACK_ENTRIES - 10
    assert took < QUICK_S, f"{took:.2f} s"


def test_300000_invalid_selections_are_refused_quickly(live_server):
    body = order_select("78306", ["415076002"])
    body["context"]["selections"] = [0] * 300_000
    answer, took = _timed_post(live_server, f"/cds-services/{SELECT_ID}", body)
    assert answer.status_code == 400
    assert answer.json()["details"] == ["context.selections: 300000 items; at most 1000"]
    assert took < QUICK_S, f"{took:.2f} s"


def test_an_order_sign_of_5000_orders_is_refused_with_the_bound(live_server):
    orders = [imaging_order("78306", ["415076002"], order_id=f"order-{n}") for n in range(5000)]
    answer, took = _timed_post(live_server, f"/cds-services/{SIGN_ID}", order_sign(orders))
    assert answer.status_code == 413
    assert answer.json()["message"] == (f"context.draftOrders holds 5000 entries; at most {MAX_DRAFT_ORDERS} "
                                        "orders per call")
    assert took < QUICK_S, f"{took:.2f} s"
    at_the_bound = order_sign(orders[:MAX_DRAFT_ORDERS])
    assert live_server.post(f"/cds-services/{SIGN_ID}", json=at_the_bound).status_code == 200


def test_a_hook_instance_with_a_trailing_newline_is_refused(live_server):
    body = order_select("78306", ["415076002"])
    body["hookInstance"] += "\n"
    answer = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert answer.status_code == 400
    assert any(problem.startswith("hookInstance:") for problem in answer.json()["details"])


@pytest.mark.parametrize("stamp", ["2026-13-45T08:13:37Z", "2026-02-30T25:61:00+01:00", "2026-11-21T08:13:37+99:99"])
def test_an_outcome_timestamp_that_is_no_real_instant_is_refused(live_server, stamp):
    entry = {**valid_feedback_entry(), "outcomeTimestamp": stamp}
    answer = live_server.post(FEEDBACK, json={"feedback": [entry]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"] == ["feedback.0.outcomeTimestamp: not a valid date and time"]


def test_identical_feedback_is_stored_once(live_server):
    entry = valid_feedback_entry()
    assert live_server.post(FEEDBACK, json={"feedback": [entry, copy.deepcopy(entry), entry]}).json() == {"stored": 1}
    assert live_server.post(FEEDBACK, json={"feedback": [entry]}).json() == {"stored": 0}
    assert live_server.post(FEEDBACK, json={"feedback": [entry]}).json() == {"stored": 0}
    out = io.StringIO()
    assert live_server.app.extensions["cds"].store.export("feedback", "json", out) == 1


def test_a_long_free_text_override_display_is_refused(live_server):
    entry = valid_feedback_entry()
    entry["overrideReason"]["reason"]["display"] = "x" * 5000
    answer = live_server.post(FEEDBACK, json={"feedback": [entry]})
    assert answer.status_code == 400
    assert answer.json()["details"][0].startswith("feedback.0.overrideReason.reason.display:")
    entry["overrideReason"]["reason"]["display"] = "Patient declined"
    assert live_server.post(FEEDBACK, json={"feedback": [entry]}).status_code == 200


@pytest.mark.parametrize("value", [" =HYPERLINK(\"http://x\")", "\n=1+1", "\r\n@SUM(A1)", "  +cmd", "\t-2+3"])
def test_csv_export_guards_formulas_behind_blanks_and_line_breaks(tmp_path, value):
    with Store.from_url(f"sqlite:///{tmp_path / 'audit.sqlite3'}") as store:
        store.init_schema()
        store.record_decision(DecisionRecord(
            decided_at=datetime(2026, 11, 1), service_id=SELECT_ID, hook="order-select",
            hook_instance="d3b07384-d113-4ec6-a1b2-3c4d5e6f7a8b", patient_hash=patient_hash(store.audit_key(), "p"),
            order_codes=("http://www.ama-assn.org/go/cpt|78306",), order_ref=value, scenario_id=None, rating=None,
            pama_rating=None, outcome="not-rated", knowledge_version="k", consult_id=None, latency_ms=1.0,
            cards=(CardRecord("card-1", "info", "summary"),)))
        out = io.StringIO()
        store.export("decisions", "csv", out)

    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["order_ref"] == "'" + value
