"""The CDS Hooks 2.0 HTTP contract, exercised through a real HTTP server on loopback.

Checklist items (D*, P*, R*, F*, G*) refer to /shared/reference/cds-hooks-2.0-service-checklist.md.
Every response is also schema-checked by the fixtures in conftest.py.
"""

from __future__ import annotations

import io
import json
import re

from tests.sandbox_requests import SELECT_ID, SIGN_ID, imaging_order, order_select, order_sign, pama_ratings

BREAST_HISTORY = "415076002"  # Personal history of primary malignant neoplasm of breast (SNOMED, sandbox list)
BONE_SCAN = "78306"


def test_discovery_lists_one_service_per_hook_with_valid_prefetch(live_server):
    response = live_server.get("/cds-services")
    assert response.status_code == 200
    services = response.json()["services"]
    assert sorted(s["hook"] for s in services) == ["order-select", "order-sign"]
    for service in services:
        assert service["id"] and service["title"] and service["description"]
        for key, template in service["prefetch"].items():
            tokens = re.findall(r"{{\s*([^}]+?)\s*}}", template)
            assert set(tokens) <= {"context.patientId", "userPractitionerId"}, (key, template)
            assert "sort:desc" not in template
            if "_sort" in template:
                assert "_sort=-date" in template
        resource_types = {t.split("?")[0].split("/")[0] for t in service["prefetch"].values()}
        assert {"Patient", "Condition", "Procedure", "Observation", "DiagnosticReport", "ImagingStudy",
                "AllergyIntolerance", "Device"} <= resource_types


def test_empty_sandbox_order_gets_fast_empty_answer_without_chart(live_server):
    # The sandbox sends `coding: [{}]` on tab entry; no prefetch and no FHIR server must still be fine.
    body = order_select(None, prefetch=None)
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_unrelated_order_is_silent_and_needs_no_chart(live_server):
    body = order_select("99999", ["44465007"], prefetch=None)  # not an imaging code of the catalogue
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_malformed_json_is_a_400_with_a_reason(live_server):
    response = live_server.session.post(
        f"{live_server.url}/cds-services/{SELECT_ID}", data=b'{"hook": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid-request"
    assert "JSON" in response.json()["message"]


def test_wrong_types_and_missing_fields_are_listed(live_server):
    body = order_select(BONE_SCAN, [BREAST_HISTORY])
    body["context"]["selections"] = "ServiceRequest/example-request-id"
    del body["hookInstance"]
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 400
    details = " ".join(response.json()["details"])
    assert "hookInstance" in details and "selections" in details


def test_hook_must_match_the_service(live_server):
    body = order_select(BONE_SCAN, [BREAST_HISTORY])
    response = live_server.post(f"/cds-services/{SIGN_ID}", json=body)
    assert response.status_code == 400
    assert "order-sign" in " ".join(response.json()["details"])


def test_non_object_bodies_are_rejected(live_server):
    for payload in ([], "text", 42, None):
        response = live_server.post(f"/cds-services/{SELECT_ID}", json=payload)
        assert response.status_code == 400, payload


def test_unknown_fields_are_tolerated(live_server):
    body = order_select(None)
    body["futureField"] = {"x": 1}
    body["context"]["newContextField"] = "value"
    assert live_server.post(f"/cds-services/{SELECT_ID}", json=body).status_code == 200


def test_unknown_service_is_404(live_server):
    response = live_server.post("/cds-services/no-such-service", json=order_select(None))
    assert response.status_code == 404
    assert response.json()["error"] == "unknown-service"


def test_huge_body_is_413(make_live_server):
    server = make_live_server(max_body_bytes=10_000)
    body = order_select(BONE_SCAN, [BREAST_HISTORY])
    body["padding"] = "x" * 20_000
    response = server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 413
    assert response.json()["error"] == "payload-too-large"


def test_missing_prefetch_without_fhir_server_is_412(live_server):
    body = order_select(BONE_SCAN, [BREAST_HISTORY], prefetch=None)
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 412
    assert response.json()["error"] == "prefetch-unavailable"


def test_fhir_server_off_the_allow_list_is_412_without_a_call(live_server):
    body = order_select(BONE_SCAN, [BREAST_HISTORY], prefetch=None, fhir_server="http://169.254.169.254/fhir")
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 412
    assert response.json()["error"] == "fhir-server-not-allowed"


def test_null_prefetch_means_no_data_and_rates_from_the_order(live_server):
    body = order_select(BONE_SCAN, [BREAST_HISTORY])
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 200
    answer = response.json()
    assert pama_ratings(answer) == [["not-appropriate", "usually-not-appropriate"]]
    assert answer["systemActions"] == answer["extension"]["systemActions"]
    [card] = answer["cards"]
    assert card["indicator"] == "warning"


def test_operation_outcome_and_a_broken_resource_in_prefetch_do_not_fail(live_server):
    body = order_select(BONE_SCAN, [BREAST_HISTORY])
    body["prefetch"]["conditions"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    body["prefetch"]["labs"] = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "Observation", "code": "not-a-codeable-concept", "effectiveDateTime": 12}},
        {"resource": "garbage"},
    ]}
    response = live_server.post(f"/cds-services/{SELECT_ID}", json=body)
    assert response.status_code == 200
    assert pama_ratings(response.json()) == [["not-appropriate", "usually-not-appropriate"]]


def test_rating_action_echoes_the_order_with_its_own_content_and_a_fresh_rating(live_server):
    # The action replaces the EHR's draft order, so everything the EHR put in must come back as
    # sent - including numbers JSON allows but 64 bits cannot hold - with earlier PAMA ratings
    # replaced rather than repeated.
    body = order_select(BONE_SCAN, [BREAST_HISTORY])
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["note"] = [{"text": "patient asks about scan timing"}]
    order["extension"] = [
        {"url": "http://example.org/fhir/site-priority", "valueInteger": 7},
        {"url": "http://fhir.org/argonaut/Extension/pama-rating",
         "valueCodeableConcept": {"coding": [{"system": "http://fhir.org/argonaut/CodeSystem/pama-rating",
                                              "code": "appropriate"}]}},
    ]
    big = "123456789012345678901234567890"
    raw = json.dumps(body).replace('"valueInteger": 7', f'"valueInteger": {big}')
    response = live_server.session.post(f"{live_server.url}/cds-services/{SELECT_ID}", data=raw,
                                        headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 200
    assert f'"valueInteger":{big}' in response.text
    [action] = response.json()["extension"]["systemActions"]
    echoed = action["resource"]
    assert echoed["note"] == order["note"] and echoed["code"]["text"] == order["code"]["text"]
    # The codes come back as sent; a coding sent without a display gets the study's name (issue 11:
    # an EHR redrawing the order from this update must still show which study it is).
    assert [(c["system"], c["code"]) for c in echoed["code"]["coding"]] == [
        (c["system"], c["code"]) for c in order["code"]["coding"]]
    assert all(c["display"] == "Whole-body bone scan" for c in echoed["code"]["coding"])
    urls = [e["url"] for e in echoed["extension"]]
    assert urls.count("http://fhir.org/argonaut/Extension/pama-rating") == 1
    assert urls[0] == "http://example.org/fhir/site-priority"
    assert pama_ratings(response.json()) == [["not-appropriate", "usually-not-appropriate"]]


def test_order_sign_rates_every_imaging_order_and_skips_other_request_types(live_server):
    orders = [
        imaging_order(BONE_SCAN, [BREAST_HISTORY], order_id="o1"),
        imaging_order("99999", [BREAST_HISTORY], order_id="o2"),
        {"resourceType": "MedicationRequest", "id": "m1", "status": "draft", "intent": "order"},
        imaging_order("71260", [BREAST_HISTORY], order_id="o3"),
    ]
    response = live_server.post(f"/cds-services/{SIGN_ID}", json=order_sign(orders))
    assert response.status_code == 200
    rated_ids = [a["resource"]["id"] for a in response.json()["extension"]["systemActions"]]
    assert rated_ids == ["o1", "o3"]


def test_two_requests_in_a_row_do_not_share_state(live_server):
    # Regression guard for the "answer cached on a long-lived object" bug seen in CDS servers.
    first = live_server.post(f"/cds-services/{SELECT_ID}", json=order_select(BONE_SCAN, [BREAST_HISTORY])).json()
    second = live_server.post(f"/cds-services/{SELECT_ID}", json=order_select(None)).json()
    third = live_server.post(f"/cds-services/{SELECT_ID}", json=order_select(BONE_SCAN, [BREAST_HISTORY])).json()
    assert first["cards"] and second == {"cards": []} and third["cards"]
    assert first["cards"][0]["uuid"] != third["cards"][0]["uuid"]


def test_cors_preflight_is_answered_without_credentials(live_server):
    response = live_server.session.options(
        f"{live_server.url}/cds-services/{SELECT_ID}",
        headers={"Origin": "http://localhost:8080", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_cors_origins_are_restricted_when_configured(make_live_server):
    server = make_live_server(cors_origins=("https://ehr.example.org",))
    allowed = server.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    refused = server.get("/cds-services", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_feedback_is_stored_and_malformed_feedback_refused(live_server):
    body = order_select(BONE_SCAN, [BREAST_HISTORY])
    answer = live_server.post(f"/cds-services/{SELECT_ID}", json=body).json()
    card = answer["cards"][0]
    feedback = {"feedback": [{
        "card": card["uuid"], "outcome": "accepted",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
        "outcomeTimestamp": "2026-11-21T07:43:28.224Z",
    }]}
    ok = live_server.post(f"/cds-services/{SELECT_ID}/feedback", json=feedback)
    assert ok.status_code == 200 and ok.json() == {"stored": 1}
    again = live_server.post(f"/cds-services/{SELECT_ID}/feedback", json=feedback)  # a retried POST
    assert again.status_code == 200 and again.json() == {"stored": 0}

    missing_suggestions = {"feedback": [{"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-21T07:43:28Z"}]}
    assert live_server.post(f"/cds-services/{SELECT_ID}/feedback", json=missing_suggestions).status_code == 400
    assert live_server.post(f"/cds-services/{SELECT_ID}/feedback", json={"feedback": "no"}).status_code == 400
    assert live_server.post("/cds-services/nope/feedback", json=feedback).status_code == 404

    out = io.StringIO()
    assert live_server.app.extensions["cds"].store.export("feedback", "json", out) == 1
    [record] = json.loads(out.getvalue())
    assert record["card_uuid"] == card["uuid"]
    assert record["hook_instance"] == body["hookInstance"]  # feedback is tied to its decision


def test_health_ready_and_metrics(live_server):
    assert live_server.get("/health").json() == {"status": "ok"}
    ready = live_server.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    live_server.post(f"/cds-services/{SELECT_ID}", json=order_select(BONE_SCAN, [BREAST_HISTORY]))
    live_server.post("/cds-services/no-such-service", json=order_select(None))
    live_server.post(f"/cds-services/{SELECT_ID}", json=order_select(BONE_SCAN, [BREAST_HISTORY], prefetch=None))  # 412
    metrics = live_server.get("/metrics").text
    assert "cds_request_latency_seconds" in metrics
    assert 'service="unknown",status="404"' in metrics and "no-such-service" not in metrics
    assert 'outcome="prefetch-unavailable"' in metrics
    assert 'rating="usually-not-appropriate"' in metrics
    assert 'indicator="warning"' in metrics


def test_procedure_given_as_order_reason_counts_but_is_undated(live_server):
    # Chemoradiation (703423002) as a reason says the patient was treated, not when: it must make
    # the cervix recurrence scenario apply without tripping its early post-treatment exclusion.
    body = order_select("76856", ["363354003", "703423002", "30473006"])  # US pelvis; cervix ca; CRT; pelvic pain
    answer = live_server.post(f"/cds-services/{SELECT_ID}", json=body).json()
    assert pama_ratings(answer) == [["not-appropriate", "usually-not-appropriate"]]
    [card] = answer["cards"]
    assert card["suggestions"][0]["actions"][0]["resource"]["code"]["coding"][0]["code"] in {"74183", "72197"}
