"""Concrete reproducers of the 5xx classes the fuzzer (tests/test_fuzz_http.py) found, over real HTTP.

Each case is a minimal body of one class in docs/hardening-findings.md. The ones the service still
gets wrong are marked ``xfail(strict=True)``: they fail today, and once the application is fixed
the strict mark turns them into failures until it is removed, so the list cannot go stale.
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


def known(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


EXTENSION_TYPE = "F1: a draft order's `extension` that is not an array (TypeError building the rating action)"
DEEP_ORDER = "F2: an element of a draft order nested 500+ deep (RecursionError copying the order into the answer)"
DEEP_BODY = "F3: a hook body nested ~1000 deep, inside orjson's 1024 limit (RecursionError in the request schema check)"
DEEP_FEEDBACK = "F4: a feedback entry nested ~1000 deep (RecursionError in the feedback schema check)"

CASES = [
    pytest.param(*hook(ORDER + ("extension",), "5"), id="order-extension-number", marks=known(EXTENSION_TYPE)),
    pytest.param(*hook(ORDER + ("extension",), "true"), id="order-extension-boolean", marks=known(EXTENSION_TYPE)),
    pytest.param(*hook(ORDER + ("extension",), nested_json(500, "list")), id="order-extension-500-deep",
                 marks=known(DEEP_ORDER)),
    pytest.param(*hook(ORDER + ("note",), nested_json(500, "list")), id="order-note-500-deep-list",
                 marks=known(DEEP_ORDER)),
    pytest.param(*hook(ORDER + ("note",), nested_json(500, "dict")), id="order-note-500-deep-object",
                 marks=known(DEEP_ORDER)),
    pytest.param(f"/cds-services/{SELECT_ID}", nested_json(1000, "dict").encode(), id="body-1000-deep",
                 marks=known(DEEP_BODY)),
    pytest.param(*hook(("context", "patientId"), nested_json(1000, "list")), id="context-1000-deep",
                 marks=known(DEEP_BODY)),
    pytest.param(*feedback(("feedback", 0, "card"), nested_json(1000, "list")), id="feedback-card-1000-deep",
                 marks=known(DEEP_FEEDBACK)),
    pytest.param(*feedback(("feedback", 0, "overrideReason"), nested_json(1000, "dict")),
                 id="feedback-override-reason-1000-deep", marks=known(DEEP_FEEDBACK)),
    pytest.param(*feedback(("feedback", 0), nested_json(1000, "list")), id="feedback-entry-1000-deep",
                 marks=known(DEEP_FEEDBACK)),
    # Neighbours that are handled today (4xx or a normal answer), kept so that a fix of the
    # classes above does not break them.
    pytest.param(f"/cds-services/{SELECT_ID}", nested_json(2000, "list").encode(), id="body-2000-deep"),
    pytest.param(*hook(ORDER + ("extension",), "{}"), id="order-extension-object"),
    pytest.param(*hook(ORDER + ("note",), nested_json(400, "list")), id="order-note-400-deep"),
    pytest.param(*feedback(("feedback", 0, "card"), nested_json(2000, "list")), id="feedback-card-2000-deep"),
]


@pytest.mark.parametrize("path, raw", CASES)
def test_fuzz_reproducer_is_answered_without_a_server_error(service, path, raw):
    answer = requests.post(service + path, data=raw, headers={"Content-Type": "application/json"}, timeout=20)
    assert answer.status_code < 500, f"{answer.status_code}: {answer.text[:200]}"


@known("F1b: a draft order's `extension` string is echoed back as one extension per character")
def test_an_extension_string_is_not_echoed_back_as_characters(service):
    path, raw = hook(ORDER + ("extension",), '"abc"')
    answer = requests.post(service + path, data=raw, headers={"Content-Type": "application/json"}, timeout=20)
    assert answer.status_code < 500
    if answer.status_code == 200:
        for action in answer.json().get("extension", {}).get("systemActions", []):
            assert all(isinstance(item, dict) for item in action["resource"].get("extension", []))
