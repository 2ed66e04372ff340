"""The hand-written request check must agree with request.schema.json on every variant.

``parse_hook_request`` trusts ``conforms_to_request_schema`` to skip the (slower) JSON Schema
validation. If the two ever disagreed, a malformed request could get past validation (check says
yes, schema says no) or a valid one be held to the slow path. So each variant below, built by
setting every field the schema constrains to values of every JSON type and to edge strings, or
deleting it, is checked both ways.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from cds_service.errors import InvalidRequest
from cds_service.hooks.request import conforms_to_request_schema, decode_hook_body, parse_hook_request
from cds_service.hooks.schemas import validator
from cds_service.hooks.services import SERVICES_BY_ID
from tests.sandbox_requests import SELECT_ID, imaging_order, order_select, order_sign

DELETE = object()
HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
VALUES: list[Any] = [
    None, True, False, 0, 1, 1.0, 1.5, -3, "", " ", "x", "order-select", "order-sign", "Bearer", "bearer", "BEARER ",
    "https://ehr.example.org/fhir", "http://", "ftp://x", "https//x", HOOK_INSTANCE, HOOK_INSTANCE.upper(),
    HOOK_INSTANCE + "\n", HOOK_INSTANCE + "0", "Patient/1", [], ["x"], [1], ["a", None], {}, {"a": 1},
    {"resourceType": "Bundle"}, DELETE,
]
PATHS = [
    ("hook",), ("hookInstance",), ("fhirServer",), ("fhirAuthorization",),
    ("fhirAuthorization", "access_token"), ("fhirAuthorization", "token_type"), ("fhirAuthorization", "expires_in"),
    ("fhirAuthorization", "scope"), ("fhirAuthorization", "subject"), ("fhirAuthorization", "patient"),
    ("context",), ("context", "userId"), ("context", "patientId"), ("context", "encounterId"),
    ("context", "selections"), ("context", "draftOrders"), ("prefetch",), ("prefetch", "patient"),
    ("prefetch", "conditions"), ("unknownField",), ("context", "unknownField"),
]


def bases() -> list[dict]:
    with_auth = order_select("78816")
    with_auth["fhirServer"] = "https://ehr.example.org/fhir"
    with_auth["fhirAuthorization"] = {"access_token": "abc", "token_type": "Bearer", "expires_in": 300,
                                      "scope": "patient/*.read", "subject": "cds-service"}
    sign = order_sign([imaging_order("74177", order_id="o1"), imaging_order("71260", order_id="o2")])
    sign["prefetch"] = {"patient": {"resourceType": "Patient", "id": "p"}, "conditions": None}
    return [order_select("78816"), sign, with_auth]


def variant(base: dict, path: tuple[str, ...], value: Any) -> dict:
    document = copy.deepcopy(base)
    target = document
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    if value is DELETE:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = copy.deepcopy(value)
    return document


def all_variants() -> list[dict]:
    return [variant(base, path, value) for base in bases() for path in PATHS for value in VALUES]


def test_check_and_schema_agree_on_every_variant():
    schema = validator("request")
    variants = all_variants()
    disagreements = [v for v in variants if conforms_to_request_schema(v) != schema.is_valid(v)]
    assert not disagreements, disagreements[:3]
    # The set is a real test of both sides: plenty of each verdict.
    valid = sum(schema.is_valid(v) for v in variants)
    assert 200 < valid < len(variants) - 200, (valid, len(variants))


def test_check_and_schema_agree_on_every_variant_as_the_http_layer_decodes_it():
    """Over HTTP the prefetch arrives as FhirObjects (decode_hook_body), not dicts."""
    schema = validator("request")
    disagreements = [v for v in all_variants()
                     if conforms_to_request_schema(decode_hook_body(orjson.dumps(v))) != schema.is_valid(v)]
    assert not disagreements, disagreements[:3]


@pytest.mark.parametrize("path, value", [(("hookInstance",), "not-a-uuid"), (("context", "selections"), []),
                                         (("fhirAuthorization",), {"access_token": "x"})])
def test_rejected_requests_still_get_the_schema_messages(path, value):
    with pytest.raises(InvalidRequest) as raised:
        parse_hook_request(variant(order_select("78816"), path, value), SERVICES_BY_ID[SELECT_ID])
    assert raised.value.details and all(":" in detail for detail in raised.value.details)
