"""Concrete reproducers of the 5xx classes the fuzzer (tests/test_fuzz_http.py) found, over real HTTP.

Each case is a minimal body of one class in docs/hardening-findings.md (F1-F4), which all gave 500
before issue 13 was fixed; each now asserts the answer it gets.
"""

from __future__ import annotations

import copy
import json

import pytest
import requests

from tests.conftest import free_port
from tests.fuzz_bodies import nested_json, valid_feedback_entry
from tests.sandbox_requests import SELECT_ID, order_select
from tests.service_process import start_dev_server

ORDER = ("context", "draftOrders", "entry", 0, "resource")
MARKER = "@@here@@"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fuzz-regressions")
    port = free_port()
    server = start_dev_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(url)
    yield url
    server.stop()


def _with(body: dict, path: tuple, value_json: str) -> bytes:
    """``body`` as JSON with the member at ``path`` set to the JSON text ``value_json``."""
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = MARKER
    return json.dumps(body).replace(json.dumps(MARKER), value_json).encode()


def hook(path: tuple, value_json: str) -> tuple[str, bytes]:
    return f"/cds-services/{SELECT_ID}", _with(order_select("78306", ["415076002"]), path, value_json)


def feedback(path: tuple, value_json: str) -> tuple[str, bytes]:
    return f"/cds-services/{SELECT_ID}/feedback", _with({"feedback": [valid_feedback_entry()]}, path, value_json)


# Each class of docs/hardening-findings.md with the answer it gets since it was fixed: a
# wrong-typed extension is left out of the answer (the order is still rated, 200); anything nested
# deeper than the bounds of cds_service/hooks/limits.py is a 400 that says where.
RATED, TOO_DEEP = 200, 400

CASES = [
    # F1: a draft order's `extension` that is not an array.
    pytest.param(*hook(ORDER + ("extension",), "5"), RATED, id="order-extension-number"),
    pytest.param(*hook(ORDER + ("extension",), "true"), RATED, id="order-extension-boolean"),
    # F2: an element of a draft order nested 500 deep (RecursionError copying it into the answer).
    pytest.param(*hook(ORDER + ("extension",), nested_json(500, "list")), TOO_DEEP, id="order-extension-500-deep"),
    pytest.param(*hook(ORDER + ("note",), nested_json(500, "list")), TOO_DEEP, id="order-note-500-deep-list"),
    pytest.param(*hook(ORDER + ("note",), nested_json(500, "dict")), TOO_DEEP, id="order-note-500-deep-object"),
    # F3: a hook body nested ~1,000 deep, inside orjson's 1,024 limit.
    pytest.param(f"/cds-services/{SELECT_ID}", nested_json(1000, "dict").encode(), TOO_DEEP, id="body-1000-deep"),
    pytest.param(*hook(("context", "patientId"), nested_json(1000, "list")), TOO_DEEP, id="context-1000-deep"),
    # F4: a feedback entry nested ~1,000 deep.
    pytest.param(*feedback(("feedback", 0, "card"), nested_json(1000, "list")), TOO_DEEP,
                 id="feedback-card-1000-deep"),
    pytest.param(*feedback(("feedback", 0, "overrideReason"), nested_json(1000, "dict")), TOO_DEEP,
                 id="feedback-override-reason-1000-deep"),
    pytest.param(*feedback(("feedback", 0), nested_json(1000, "list")), TOO_DEEP, id="feedback-entry-1000-deep"),
    # Neighbours: beyond the decoder's own limit, an empty extension object, a draft order
    # element nested 400 deep (answered before the fix, now refused by the same bound).
    pytest.param(f"/cds-services/{SELECT_ID}", nested_json(2000, "list").encode(), TOO_DEEP, id="body-2000-deep"),
    pytest.param(*hook(ORDER + ("extension",), "{}"), RATED, id="order-extension-object"),
    pytest.param(*hook(ORDER + ("note",), nested_json(400, "list")), TOO_DEEP, id="order-note-400-deep"),
    pytest.param(*feedback(("feedback", 0, "card"), nested_json(2000, "list")), TOO_DEEP,
                 id="feedback-card-2000-deep"),
]


@pytest.mark.parametrize("path, raw, status", CASES)
def test_fuzz_reproducer_gets_its_answer_not_a_server_error(service, path, raw, status):
    answer = requests.post(service + path, data=raw, headers={"Content-Type": "application/json"}, timeout=20)
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:200]}"
    if status == RATED:
        assert answer.json()["systemActions"], "the order is still rated"
    else:
        assert answer.json()["error"] == "invalid-request" and answer.json()["message"], "the 400 says why"


@pytest.mark.parametrize("value", ['"abc"', "5", "[5, \"x\", {\"url\": \"http://example.org/kept\", \"valueString\": \"k\"}]"])
def test_a_malformed_extension_is_not_echoed_back(service, value):
    path, raw = hook(ORDER + ("extension",), value)
    answer = requests.post(service + path, data=raw, headers={"Content-Type": "application/json"}, timeout=20)
    assert answer.status_code == 200
    actions = answer.json()["systemActions"]
    assert actions
    for action in actions:
        extensions = action["resource"]["extension"]
        assert all(isinstance(item, dict) for item in extensions), extensions
        assert not any(item.get("url") in ("a", "b", "c") for item in extensions)
    if value.startswith("["):  # the one well-formed extension of the list is kept
        assert any(item.get("url") == "http://example.org/kept" for item in actions[0]["resource"]["extension"])
