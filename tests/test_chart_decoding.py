"""Hook bodies decoded into FhirObjects: only the elements the chart reads, the same facts as plain
JSON gives, never a rejected body, and a body limit that holds for chunked uploads too."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import msgspec
import orjson
import pytest

from cds_service.chart.decoding import CodeableConcept, Coding, FhirObject, as_fhir_objects
from cds_service.chart.extract import extract_chart_facts
from cds_service.hooks.request import decode_hook_body
from tests.fhir_builders import bundle, condition, hook_request, scc_antigen, service_request
from tests.sandbox_requests import SELECT_ID, order_select

CHARTS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "charts"
TODAY = date(2026, 11, 21)


def _decoded_prefetch(prefetch: dict) -> dict:
    body = hook_request(service_request(), prefetch=prefetch)
    return decode_hook_body(orjson.dumps(body))["prefetch"]


@pytest.mark.parametrize("chart", sorted(CHARTS.glob("*.json")), ids=lambda p: p.stem)
def test_every_fixture_chart_gives_the_same_facts_decoded_or_from_plain_json(chart):
    prefetch = {"chart": json.loads(chart.read_text(encoding="utf-8"))}
    from_plain = extract_chart_facts(prefetch, None, TODAY)
    decoded = _decoded_prefetch(prefetch)
    assert isinstance(decoded["chart"], FhirObject)
    assert extract_chart_facts(decoded, None, TODAY) == from_plain
    assert from_plain.facts, "a fixture chart that gives no facts tests nothing"


def test_only_the_elements_the_chart_reads_are_kept():
    resource = condition("C53.9", "http://hl7.org/fhir/sid/icd-10-cm", id="c1")
    resource["text"] = {"status": "generated", "div": "<div>narrative naming the patient</div>"}
    decoded = _decoded_prefetch({"conditions": bundle(resource)})["conditions"]
    kept = decoded.entry[0].resource
    assert msgspec.to_builtins(kept.code) == resource["code"] and kept.id == "c1"
    assert "text" not in msgspec.to_builtins(kept) and "subject" not in msgspec.to_builtins(kept)
    with pytest.raises(AttributeError):  # a reader of an undeclared element fails loudly in tests
        kept.subject


def test_coded_elements_are_typed_and_keep_only_what_is_read():
    resource = condition("C53.9", "http://hl7.org/fhir/sid/icd-10-cm", id="c1")
    resource["code"]["coding"][0].update({"version": "2026", "userSelected": True, "extension": [{"url": "x"}]})
    resource["code"]["id"] = "local"
    kept = _decoded_prefetch({"conditions": bundle(resource)})["conditions"].entry[0].resource
    assert isinstance(kept.code, CodeableConcept) and isinstance(kept.code.coding[0], Coding)
    assert msgspec.to_builtins(kept.code) == {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                                           "code": "C53.9"}]}


def test_junk_inside_coded_elements_is_kept_and_read_like_plain_json():
    shapes = [
        {"coding": "C53.9"},                                          # coding not a list
        {"coding": {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C53.9"}},  # one object
        {"coding": [7, None, [], "x", {"system": 5, "code": "C53.9"}]},   # junk codings
        [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C53.9"}]}],  # a list
        "C53.9", 12, True,
    ]
    resources = []
    for index, shape in enumerate(shapes):
        resource = condition("C53.9", "http://hl7.org/fhir/sid/icd-10-cm", id=f"c{index}")
        resource["code"] = shape
        resource["bodySite"] = shape
        resources.append(resource)
    good = condition("C53.9", "http://hl7.org/fhir/sid/icd-10-cm", id="good")
    good["bodySite"] = [{"coding": "x"}, 5, {"coding": [{"system": "http://snomed.info/sct", "code": "71252005"}]}]
    prefetch = {"conditions": bundle(*resources, good)}
    plain, typed = extract_chart_facts(prefetch, None, TODAY), extract_chart_facts(_decoded_prefetch(prefetch), None, TODAY)
    assert typed == plain
    [fact] = typed.facts
    assert fact.source == "Condition/good" and [c.code for c in fact.body_site_codes] == ["71252005"]
    assert typed.skipped_resources == 6  # malformed codes; a list of junk codings is merely uncoded


def test_junk_where_resources_belong_is_kept_as_it_is_and_counted_like_plain_json():
    prefetch = {
        "resource-is-a-string": {"resourceType": "Bundle", "entry": [{"resource": "Condition/1"}, 7, None]},
        "entry-is-an-object": {"resourceType": "Bundle", "entry": {"resource": {"resourceType": "Condition"}}},
        "list": [scc_antigen("o1", 2.5, "2026-10-01"), "junk", [[{"no": "resourceType"}]]],
        "scalar": 42,
        "nothing": None,
    }
    decoded = _decoded_prefetch(prefetch)
    assert decoded["resource-is-a-string"].entry[0].resource == "Condition/1"
    assert decoded["entry-is-an-object"].entry == {"resource": {"resourceType": "Condition"}}
    plain, typed = extract_chart_facts(prefetch, None, TODAY), extract_chart_facts(decoded, None, TODAY)
    assert typed == plain
    assert typed.skipped_resources == 6 and [f.source for f in typed.facts] == ["Observation/o1"]
    assert set(typed.missing) == {"entry-is-an-object", "scalar", "nothing"}


def test_bodies_the_typed_decoder_does_not_take_are_decoded_as_plain_json():
    assert decode_hook_body(b"[1, 2]") == [1, 2]
    for not_json in (b'{"hook": "order-select",', b'{"hook": 1e999}'):
        with pytest.raises(orjson.JSONDecodeError):  # the caller answers 400 with orjson's message
            decode_hook_body(not_json)
    with pytest.raises(orjson.JSONDecodeError):  # msgspec would hit Python's recursion limit first
        decode_hook_body(b'{"prefetch": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}")


def test_unknown_members_of_the_body_are_dropped_and_absent_ones_stay_absent():
    body = decode_hook_body(b'{"hook": "order-select", "hookInstance": "x", "extension": {"a": 1}, "fhirServer": null}')
    assert body == {"hook": "order-select", "hookInstance": "x", "fhirServer": None}


def test_plain_dicts_become_fhir_objects_and_odd_python_values_pass_through():
    converted = as_fhir_objects(bundle(condition("C50.9", "http://hl7.org/fhir/sid/icd-10-cm", id="c2")))
    assert isinstance(converted, FhirObject) and converted.entry[0].resource.id == "c2"
    odd = {1: "not a JSON object key"}
    assert as_fhir_objects(odd) is odd


# --- the body limit, over real HTTP ----------------------------------------------------------------


def _chunks(data: bytes, size: int = 4096):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_chunked_body_over_the_limit_is_413(make_live_server):
    server = make_live_server(max_body_bytes=10_000)
    body = order_select("78306", ["415076002"])
    body["padding"] = "x" * 20_000
    response = server.post(f"/cds-services/{SELECT_ID}", data=_chunks(orjson.dumps(body)),
                           headers={"Content-Type": "application/json"})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 413
    assert response.json()["error"] == "payload-too-large"


def test_a_chunked_body_under_the_limit_is_answered(make_live_server):
    server = make_live_server()
    body = order_select("78306", ["415076002"])
    response = server.post(f"/cds-services/{SELECT_ID}", data=_chunks(orjson.dumps(body), 256),
                           headers={"Content-Type": "application/json"})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 200
    assert response.json()["cards"], "the same call with Content-Length gets a card (tests/test_api.py)"
