"""Hypothesis strategies for hostile HTTP input: hook bodies, feedback bodies, discovery/CORS requests.

Bodies start from valid calls (order-select, order-sign, feedback) and are then bent in the ways a
broken or hostile client bends them: any member replaced by a value of another JSON type, an
element nested hundreds or thousands deep, an array blown up to tens of thousands of items (the
body stays under the service's 8 MiB limit), or bytes that are not JSON at all.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import strategies as st

from tests.sandbox_requests import SIGN_ID, SELECT_ID, imaging_order, order_select, order_sign

CPTS = ("78306", "78816", "72197", "74177", "71260", "70553")
REASONS = ("415076002", "254837009", "363354003", "93655004")
MAX_BODY_BYTES = 8 * 1024 * 1024

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), st.sampled_from(["", "abc", "ServiceRequest", "Patient/x", "draft", "\x00", "é" * 5]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Member and item paths in a JSON value (the root too); the first 3 items of an array only."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            found += paths_of(item, prefix + (index,))
    return found


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


class Deep(str):
    """An element nested ``depth`` deep, as JSON text: a Python value that deep would exceed the
    fuzzer's own recursion limit. It stands in the body as a unique marker string that
    :func:`encoded` replaces by the text."""

    def __new__(cls, depth: int, kind: str):
        marker = super().__new__(cls, f"@@deep-{uuid.uuid4().hex}@@")
        opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
        marker.json = opening * depth + "1" + closing * depth
        marker.depth, marker.kind = depth, kind
        return marker

    def __repr__(self) -> str:
        return f"Deep({self.depth}, {self.kind!r})"


def nested_json(depth: int, kind: str) -> str:
    return Deep(depth, kind).json


depths = st.one_of(st.integers(min_value=30, max_value=700), st.sampled_from([900, 1000, 1100, 2000, 5000]))
deep_values = st.builds(Deep, depths, st.sampled_from(["list", "dict"]))
# Up to 30,000 items: enough to exercise unbounded error lists (issue 13 point 2) without a single
# example taking the fuzz run's whole time budget; bench/bench_amplification.py sends the big ones.
huge_arrays = st.builds(lambda n, item: [item] * n, st.sampled_from([600, 5_000, 30_000]),
                        st.sampled_from([{}, 0, "x", None, [], {"resourceType": "ServiceRequest"}]))


@st.composite
def valid_hook_bodies(draw) -> tuple[str, dict]:
    cpt, reasons = draw(st.sampled_from(CPTS)), draw(st.lists(st.sampled_from(REASONS), max_size=2))
    if draw(st.booleans()):
        return SELECT_ID, order_select(cpt, reasons)
    orders = [imaging_order(draw(st.sampled_from(CPTS)), reasons, order_id=f"order-{i}")
              for i in range(draw(st.integers(min_value=1, max_value=3)))]
    return SIGN_ID, order_sign(orders)


def _bent(draw, body: Any, extra: st.SearchStrategy) -> tuple[Any, list]:
    """``body`` with one to three members (or items) replaced by a value from ``extra``, and the
    ``Deep`` values put in."""
    deep = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths_of(body)))
        new = draw(extra)
        if isinstance(new, Deep):
            deep.append(new)
        body = replaced(body, path, new)
    return body, deep


def encoded(bent: tuple[Any, list]) -> bytes:
    body, deep = bent
    text = json.dumps(body)
    for value in deep:
        text = text.replace(json.dumps(str(value)), value.json)
    raw = text.encode()
    return raw if len(raw) <= MAX_BODY_BYTES else b'{"hook": "too-big-for-the-fuzzer"}'


def valid_feedback_entry(card: str | None = None) -> dict:
    return {"card": card or str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-21T08:13:37Z",
            "overrideReason": {"reason": {"code": "patient-preference", "system": "http://example.org/override"},
                               "userComment": "discussed with the patient"}}


@st.composite
def valid_feedback_bodies(draw) -> tuple[str, dict]:
    """(service id, body): one accepted card and up to two overridden ones."""
    entries = [valid_feedback_entry() for _ in range(draw(st.integers(min_value=1, max_value=3)))]
    entries[0] = {"card": entries[0]["card"], "outcome": "accepted", "outcomeTimestamp": "2026-11-21T08:13:37.5+01:00",
                  "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}
    return draw(st.sampled_from([SELECT_ID, SIGN_ID])), {"feedback": entries}


#: What a POST goes to: its valid bodies, the path of a service id, and how often each way of
#: bending a body is drawn (member types most often, for hooks most of all).
POST_TARGETS = {
    "hook": (valid_hook_bodies, "/cds-services/{}", ("types", "types", "types", "deep", "huge", "bytes")),
    "feedback": (valid_feedback_bodies, "/cds-services/{}/feedback", ("types", "types", "deep", "huge", "bytes")),
}


@st.composite
def posted_calls(draw, target: str) -> tuple[str, bytes]:
    """(path, body bytes) for a POST to a hook service (``target="hook"``) or its feedback endpoint
    (``"feedback"``): a valid body bent (:func:`_bent`), or cut anywhere and followed by random bytes."""
    valid_bodies, path, ways = POST_TARGETS[target]
    service_id, body = draw(valid_bodies())
    how = draw(st.sampled_from(ways))
    if how == "bytes":
        raw = json.dumps(body).encode()
        cut = draw(st.integers(min_value=0, max_value=len(raw)))
        return path.format(service_id), raw[:cut] + draw(st.binary(max_size=40))
    extra = {"types": json_values, "deep": deep_values, "huge": huge_arrays}[how]
    return path.format(service_id), encoded(_bent(draw, body, extra))


# requests refuses header values with leading whitespace (a client-side error, not a finding).
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)


@st.composite
def discovery_requests(draw) -> tuple[str, str, dict]:
    """(method, path, headers) for discovery, CORS preflight and neighbouring paths."""
    method = draw(st.sampled_from(["GET", "OPTIONS", "HEAD", "POST", "PUT", "DELETE", "PATCH"]))
    path = draw(st.one_of(
        st.sampled_from(["/cds-services", "/cds-services/", f"/cds-services/{SELECT_ID}",
                         f"/cds-services/{SIGN_ID}/feedback", "/cds-services/unknown", "/", "/ready", "/health"]),
        st.builds(lambda s: "/cds-services/" + s,
                  st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#/%"),
                          min_size=1, max_size=40)),
    ))
    headers = {}
    if draw(st.booleans()):
        headers["Origin"] = draw(st.one_of(st.just("https://sandbox.cds-hooks.org"), header_text))
    if draw(st.booleans()):
        headers["Access-Control-Request-Method"] = draw(st.one_of(st.sampled_from(["POST", "GET"]), header_text))
    if draw(st.booleans()):
        headers["Access-Control-Request-Headers"] = draw(st.one_of(st.just("authorization, content-type"), header_text))
    if draw(st.booleans()):
        headers["Authorization"] = draw(st.one_of(st.just("Bearer a.b.c"), header_text))
    if draw(st.booleans()):
        headers["Content-Type"] = draw(st.one_of(st.just("application/json"), header_text))
    return method, path, headers
