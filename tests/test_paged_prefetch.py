"""A paged prefetch (a searchset with ``link[next]``) is read to its end, or the call is refused with 412.

The EHR's FHIR server is a real FixtureFhirServer on loopback; its ``_count`` paging makes the first
page exactly as a FHIR server would (absolute ``link[next]`` under its base). The chart of the
example holds a breast-cancer history on page one and a bone metastasis on page two: read as if
complete, the first page alone gets a "Cancel this order" warning for a bone scan that the second
page shows to be indicated.
"""

from __future__ import annotations

import json

import pytest
import requests

from cds_service.devtools.fixture_fhir_server import FixtureFhirServer
from cds_service.ehr.fhir_client import FhirClient
from cds_service.ehr.prefetch_completion import complete_prefetch
from cds_service.errors import PrefetchUnavailable
from cds_service.hooks.request import decode_hook_body
from tests.fhir_builders import ICD10CM, condition, patient
from tests.sandbox_requests import SELECT_ID, order_select, pama_ratings

TOKEN = "paging-token-42"
BONE_SCAN = "78306"
BREAST_HISTORY = "415076002"  # the order's reason: personal history of breast cancer (SNOMED)
CHART = [
    patient(),
    condition("Z85.3", ICD10CM, id="c1", display="Personal history of breast cancer"),
    condition("C79.51", ICD10CM, id="c2", display="Secondary malignant neoplasm of bone"),
    condition("I10", ICD10CM, id="c3", display="Essential hypertension"),
]


@pytest.fixture
def ehr():
    with FixtureFhirServer(CHART) as server:
        yield server


def first_page(server: FixtureFhirServer, count: int = 1) -> dict:
    """Page one of the patient's Condition search, as the EHR's FHIR server gives it."""
    response = requests.get(f"{server.base_url}/Condition", params={"patient": "pat-onc-1", "_count": count},
                            timeout=5)
    page = response.json()
    assert any(link["relation"] == "next" for link in page["link"])
    server.clear_requests()
    return page


def bone_scan_call(conditions_prefetch: dict, fhir_server: str | None) -> dict:
    body = order_select(BONE_SCAN, [BREAST_HISTORY], fhir_server=fhir_server)
    body["prefetch"]["conditions"] = conditions_prefetch
    if fhir_server is not None:
        body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "user/Condition.read", "subject": "cds-service"}
    return body


def page_requests(server: FixtureFhirServer) -> list:
    return [r for r in server.requests if r.path == "/Condition"]


def test_next_pages_are_read_with_the_token_and_change_the_answer(live_server, ehr):
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=bone_scan_call(first_page(ehr), ehr.base_url))
    assert response.status_code == 200
    answer = response.json()
    # Page two holds the bone metastasis: no low-value warning, no cancel suggestion.
    assert pama_ratings(answer) != [["not-appropriate", "usually-not-appropriate"]]
    assert not any(s["label"].startswith("Cancel this order") for card in answer["cards"] for s in card.get("suggestions", []))
    pages = page_requests(ehr)
    assert len(pages) == 2, [r.target for r in pages]  # pages two and three of the three-condition search
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in pages)


def test_the_first_page_alone_would_have_warned(live_server, ehr):
    """The same page one with its next link removed: the chart really is one page, and warns."""
    page = first_page(ehr)
    page["link"] = [link for link in page["link"] if link["relation"] != "next"]
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=bone_scan_call(page, ehr.base_url))
    assert response.status_code == 200
    assert pama_ratings(response.json()) == [["not-appropriate", "usually-not-appropriate"]]
    assert page_requests(ehr) == []


def test_next_link_to_another_address_is_412_and_never_called(live_server, ehr):
    with FixtureFhirServer(CHART) as elsewhere:
        page = first_page(ehr)
        for link in page["link"]:
            if link["relation"] == "next":
                link["url"] = link["url"].replace(ehr.base_url, elsewhere.base_url)
        response = live_server.post(f"/cds-services/{SELECT_ID}", json=bone_scan_call(page, ehr.base_url))
        assert response.status_code == 412
        error = response.json()
        assert error["error"] == "fhir-fetch-failed"
        assert "conditions" in error["message"] and "not on the fhirServer" in error["message"]
        assert elsewhere.requests == [] and ehr.requests == []


def test_paged_prefetch_without_fhir_server_is_412(live_server, ehr):
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=bone_scan_call(first_page(ehr), None))
    assert response.status_code == 412
    assert response.json()["error"] == "prefetch-unavailable"
    assert "conditions" in response.json()["message"]


def test_more_pages_than_the_limit_is_412(make_live_server, ehr):
    server = make_live_server(fhir_max_pages=2)
    response = server.post(f"/cds-services/{SELECT_ID}", json=bone_scan_call(first_page(ehr), ehr.base_url))
    assert response.status_code == 412
    assert "more than 2 pages" in response.json()["message"]
    assert len(page_requests(ehr)) == 1  # page two read, page three is over the limit


def test_a_page_that_cannot_be_read_is_412(live_server, ehr):
    page = first_page(ehr)
    ehr.configure("/Condition", fail_status=503)
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=bone_scan_call(page, ehr.base_url))
    assert response.status_code == 412
    assert response.json()["error"] == "fhir-fetch-failed"
    assert TOKEN not in response.text and "pat-onc-1" not in response.text


def test_fetched_search_beyond_the_page_limit_is_412_not_a_partial_chart(make_live_server, ehr):
    """An absent key fetched by the service runs into the same limit: refused, not read as complete."""
    server = make_live_server(fhir_max_pages=1)
    ehr.add([condition("I10", ICD10CM, id=f"extra-{i}") for i in range(250)])  # > 200, the template's _count
    body = order_select(BONE_SCAN, [BREAST_HISTORY], fhir_server=ehr.base_url)
    del body["prefetch"]["conditions"]
    response = server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 412
    message = response.json()["message"]
    assert "conditions" in message and "more than 1 pages" in message
    assert len(page_requests(ehr)) == 1


def test_completion_joins_the_prefetched_page_and_the_pages_read_after_it(ehr):
    """The joined Bundle keeps the decoded first page's entries and appends the others once each."""
    raw = json.dumps({"prefetch": {"conditions": first_page(ehr)}}).encode()
    prefetch = decode_hook_body(raw)["prefetch"]
    client = FhirClient(allowed_servers=(), allow_loopback=True, max_pages=5)
    try:
        completed = complete_prefetch(templates={"conditions": "Condition?patient={{context.patientId}}"},
                                      prefetch=prefetch, context={"patientId": "pat-onc-1"},
                                      fhir_server=ehr.base_url, access_token=TOKEN, client=client)
    finally:
        client.close()
    joined = completed["conditions"]
    assert joined["type"] == "searchset" and "link" not in joined
    resources = [e.resource if hasattr(e, "resource") else e["resource"] for e in joined["entry"]]
    assert [r.id if hasattr(r, "id") else r["id"] for r in resources] == ["c1", "c2", "c3"]


def test_completion_refuses_a_paged_prefetch_off_the_allow_list_before_any_call(ehr):
    client = FhirClient(allowed_servers=("https://ehr.example.org/fhir",), allow_loopback=False)
    try:
        with pytest.raises(PrefetchUnavailable) as info:
            complete_prefetch(templates={"conditions": "Condition?patient={{context.patientId}}"},
                              prefetch={"conditions": first_page(ehr)}, context={"patientId": "pat-onc-1"},
                              fhir_server=ehr.base_url, access_token=TOKEN, client=client)
    finally:
        client.close()
    assert info.value.status == 412 and info.value.code == "fhir-server-not-allowed"
    assert ehr.requests == []


# -- the templates ask for what the chart really holds ------------------------------------------------


def test_an_ehr_without_prefetch_is_asked_for_every_way_treatments_devices_and_stage_are_recorded(live_server, ehr):
    """The service reads medications as requested, administered or stated (with their Medication),
    devices and their use statements, and stage-group Observations: each is one search it makes."""
    body = order_select(BONE_SCAN, [BREAST_HISTORY], fhir_server=ehr.base_url)
    del body["prefetch"]
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer"}
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 200
    searched = {r.path.lstrip("/"): r.params for r in ehr.requests}
    for resource_type in ("MedicationRequest", "MedicationAdministration", "MedicationStatement"):
        assert searched[resource_type]["_include"] == [f"{resource_type}:medication"]
    assert searched["DeviceUseStatement"]["_include"] == ["DeviceUseStatement:device"]
    assert "Device" in searched
    stage_searches = [r.params["code"][0] for r in ehr.requests
                      if r.path == "/Observation" and "21908-9" in r.params.get("code", [""])[0]]
    assert stage_searches  # stage groups and M categories, SNOMED CT and LOINC coded
    assert {"http://snomed.info/sct|399537006", "http://loinc.org|21902-2",
            "http://snomed.info/sct|399387003"} <= set(stage_searches[0].split(","))
