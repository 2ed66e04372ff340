"""The fixture FHIR server answers what the CDS Hooks sandbox and the service need (real HTTP)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import requests

from cds_service.devtools.fixture_fhir_server import FixtureFhirServer, load_resources

BUNDLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {"resource": {"resourceType": "Patient", "id": "pat-onc-1", "name": [{"given": ["Ada"]}]}},
        {
            "resource": {
                "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/pat-onc-1"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "363406005"}]},
            }
        },
        {
            "resource": {
                "resourceType": "Condition", "id": "c2", "subject": {"reference": "http://other/fhir/Patient/pat-onc-1"},
                "clinicalStatus": {"coding": [{"code": "resolved"}]},
            }
        },
        {"resource": {"resourceType": "Condition", "id": "c3", "subject": {"reference": "Patient/other"}}},
        {"fullUrl": "urn:uuid:0b9d6f1e-0000-4000-8000-000000000001", "resource": {"resourceType": "Observation", "patient": {"reference": "Patient/pat-onc-1"}}},
    ],
}


@pytest.fixture
def server():
    with FixtureFhirServer([BUNDLE]) as s:
        yield s


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_metadata_and_cors(server):
    response = requests.get(server.base_url + "/metadata", timeout=5)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert response.json()["resourceType"] == "CapabilityStatement"
    assert response.json()["fhirVersion"] == "4.0.1"


def test_options_preflight(server):
    response = requests.options(
        server.base_url + "/Condition/_search",
        headers={"Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
        timeout=5,
    )
    assert response.status_code == 204
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_read_and_404(server):
    assert requests.get(server.base_url + "/Patient/pat-onc-1", timeout=5).json()["name"][0]["given"] == ["Ada"]
    missing = requests.get(server.base_url + "/Patient/nobody", timeout=5)
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    # Bundles are flattened; an entry without id takes it from its urn:uuid fullUrl.
    assert requests.get(server.base_url + "/Observation/0b9d6f1e-0000-4000-8000-000000000001", timeout=5).ok


@pytest.mark.parametrize("param", ["patient=pat-onc-1", "patient=Patient/pat-onc-1", "subject=Patient/pat-onc-1"])
def test_search_by_patient(param, server):
    bundle = requests.get(f"{server.base_url}/Condition?{param}", timeout=5).json()
    assert bundle["type"] == "searchset" and bundle["total"] == 2
    assert ids(bundle) == ["c1", "c2"]


def test_patient_type_search(server):
    assert requests.get(server.base_url + "/Patient", timeout=5).json()["total"] == 1  # the sandbox probes this
    assert ids(requests.get(server.base_url + "/Patient?_id=pat-onc-1", timeout=5).json()) == ["pat-onc-1"]


def test_token_filters_and_unknown_params_ignored(server):
    url = server.base_url + "/Condition?patient=pat-onc-1&clinical-status=active,recurrence&date=ge2020-01-01&_sort=-date"
    assert ids(requests.get(url, timeout=5).json()) == ["c1"]
    url = server.base_url + "/Condition?code=http://snomed.info/sct|363406005"
    assert ids(requests.get(url, timeout=5).json()) == ["c1"]


def test_post_search_form_encoded_like_the_sandbox(server):
    response = requests.post(
        server.base_url + "/Condition/_search",
        data="clinical-status=active,recurrence,relapse,remission&patient=pat-onc-1",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer t"},
        timeout=5,
    )
    assert ids(response.json()) == ["c1"]
    recorded = server.requests[-1]
    assert recorded.method == "POST" and recorded.path == "/Condition/_search"
    assert recorded.params["patient"] == ["pat-onc-1"]
    assert recorded.header("authorization") == "Bearer t"


def test_paging_links_are_absolute_and_complete(server):
    server.add([{"resourceType": "Condition", "id": f"p{i}", "subject": {"reference": "Patient/pat-onc-1"}} for i in range(3)])
    url = server.base_url + "/Condition?patient=pat-onc-1&_count=2"
    seen = []
    while url:
        bundle = requests.get(url, timeout=5).json()
        assert bundle["total"] == 5
        seen += ids(bundle)
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        assert url is None or url.startswith(server.base_url + "/Condition?")
    assert seen == ["c1", "c2", "p0", "p1", "p2"]


def test_read_only(server):
    assert requests.put(server.base_url + "/Patient/pat-onc-1", json={}, timeout=5).status_code == 405
    assert requests.post(server.base_url + "/Patient", json={}, timeout=5).status_code == 405


def test_failure_knobs(server):
    server.configure("/Condition", fail_status=503)
    assert requests.get(server.base_url + "/Condition", timeout=5).status_code == 503
    assert requests.get(server.base_url + "/Patient/pat-onc-1", timeout=5).status_code == 200
    server.clear_behaviours()
    assert requests.get(server.base_url + "/Condition", timeout=5).status_code == 200
    server.configure("/Patient", delay_seconds=0.3)
    started = time.monotonic()
    requests.get(server.base_url + "/Patient/pat-onc-1", timeout=5)
    assert time.monotonic() - started >= 0.3


def test_stop_is_prompt_even_with_a_delayed_request():
    server = FixtureFhirServer([BUNDLE]).start()
    server.configure("/", delay_seconds=30)
    try:
        requests.get(server.base_url + "/metadata", timeout=0.2)
    except requests.Timeout:
        pass
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2


def test_load_resources_and_cli(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bundle.json").write_text(json.dumps(BUNDLE))
    (tmp_path / "practitioner.json").write_text(json.dumps({"resourceType": "Practitioner", "id": "pr1"}))
    (tmp_path / "notes.json").write_text(json.dumps({"hook": "order-select"}))  # not FHIR: skipped
    loaded = load_resources([tmp_path])
    assert sorted(f"{r['resourceType']}/{r['id']}" for r in loaded)[:2] == ["Condition/c1", "Condition/c2"]
    assert len(loaded) == 6

    process = subprocess.Popen(
        [sys.executable, "-m", "cds_service.devtools.fixture_fhir_server", "--port", "0", str(tmp_path)],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        base = None
        deadline = time.monotonic() + 20
        while base is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            found = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
            base = found.group(1) if found else None
        assert base, "the CLI did not report its URL"
        assert requests.get(base + "/Practitioner/pr1", timeout=5).json()["id"] == "pr1"
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()


def test_include_adds_the_referenced_medication_and_device_once():
    resources = [
        {"resourceType": "MedicationRequest", "id": "mr-1", "subject": {"reference": "Patient/p1"},
         "medicationReference": {"reference": "Medication/m1"}},
        {"resourceType": "MedicationRequest", "id": "mr-2", "subject": {"reference": "Patient/p1"},
         "medicationReference": {"reference": "Medication/m1"}},
        {"resourceType": "Medication", "id": "m1"},
        {"resourceType": "DeviceUseStatement", "id": "dus-1", "subject": {"reference": "Patient/p1"},
         "device": {"reference": "Device/d1"}},
        {"resourceType": "Device", "id": "d1"},
    ]
    with FixtureFhirServer(resources) as server:
        meds = requests.get(f"{server.base_url}/MedicationRequest",
                            params={"patient": "p1", "_include": "MedicationRequest:medication"}, timeout=5).json()
        plain = requests.get(f"{server.base_url}/MedicationRequest", params={"patient": "p1"}, timeout=5).json()
        uses = requests.get(f"{server.base_url}/DeviceUseStatement",
                            params={"patient": "p1", "_include": "DeviceUseStatement:device"}, timeout=5).json()
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in meds["entry"]] == [
        ("mr-1", "match"), ("mr-2", "match"), ("m1", "include")]
    assert meds["total"] == 2  # included resources are not matches
    assert [e["resource"]["id"] for e in plain["entry"]] == ["mr-1", "mr-2"]
    assert [e["resource"]["id"] for e in uses["entry"]] == ["dus-1", "d1"]
