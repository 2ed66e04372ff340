"""Prefetch templates and completion (CDS Hooks 2.0 checklist P1-P4), against a real loopback FHIR server."""

from __future__ import annotations

import time

import pytest

from cds_service.errors import FhirFetchFailed, FhirServerNotAllowed, PrefetchUnavailable
from cds_service.ehr.fhir_client import FhirClient
from cds_service.devtools.fixture_fhir_server import FixtureFhirServer
from cds_service.ehr.prefetch_completion import complete_prefetch
from cds_service.hooks.prefetch import find_missing_prefetch, render_template

CONTEXT = {
    "patientId": "pat-onc-1",
    "userId": "Practitioner/COREPRACTITIONER1",
    "selections": ["ServiceRequest/example-request-id"],
    "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "ServiceRequest", "id": "example-request-id"}}]},
}

TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}&_count=100",
    "observations": "Observation?patient={{context.patientId}}&_count=100",
    "practitioner": "Practitioner/{{userPractitionerId}}",
}

RESOURCES = [
    {"resourceType": "Patient", "id": "pat-onc-1", "name": [{"given": ["Ada"]}]},
    {"resourceType": "Practitioner", "id": "COREPRACTITIONER1"},
    {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/pat-onc-1"}},
    {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/someone-else"}},
    {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/pat-onc-1"}},
]
TOKEN = "secret-access-token"


# -- render_template ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, expected",
    [
        ("Patient/{{context.patientId}}", "Patient/pat-onc-1"),
        ("Condition?patient={{context.patientId}}&_count=100", "Condition?patient=pat-onc-1&_count=100"),
        ("Condition?patient={{ context.patientId }}", "Condition?patient=pat-onc-1"),
        ("{{context.userId}}", "Practitioner/COREPRACTITIONER1"),  # spec: "user": "{{context.userId}}"
        ("ServiceRequest?requester={{context.userId}}", "ServiceRequest?requester=Practitioner%2FCOREPRACTITIONER1"),
        ("Practitioner/{{userPractitionerId}}", "Practitioner/COREPRACTITIONER1"),
        ("Observation?performer={{userPractitionerId}}", "Observation?performer=COREPRACTITIONER1"),
        ("Patient?_id={{context.patientId}},{{context.patientId}}", "Patient?_id=pat-onc-1,pat-onc-1"),
        ("Patient/{{context.patientId}}/_history", "Patient/pat-onc-1/_history"),
        ("Observation?code=http://loinc.org|2857-1", "Observation?code=http://loinc.org|2857-1"),  # no tokens
    ],
)
def test_render_resolves_tokens(template, expected):
    assert render_template(template, CONTEXT) == expected


@pytest.mark.parametrize(
    "value, encoded",
    [
        ("a b", "a%20b"),
        ("x&_id=other", "x%26_id%3Dother"),       # cannot add query parameters
        ("a/b?c#d", "a%2Fb%3Fc%23d"),
        ("é", "%C3%A9"),
        ("{{userPractitionerId}}", "%7B%7BuserPractitionerId%7D%7D"),  # data, never expanded again
    ],
)
def test_render_url_encodes_query_values(value, encoded):
    rendered = render_template("Observation?patient={{context.patientId}}", {**CONTEXT, "patientId": value})
    assert rendered == f"Observation?patient={encoded}"


@pytest.mark.parametrize(
    "value", ["../Practitioner/x", "..", ".", "a b", "a?b", "x/y/z", "pat%2F1", "p#1", "A" * 65, "", "{{context.userId}}"]
)
def test_render_refuses_unsafe_path_values(value):
    assert render_template("Patient/{{context.patientId}}", {**CONTEXT, "patientId": value}) is None


def test_render_numbers_but_not_booleans():
    assert render_template("Encounter?_count={{context.n}}", {"n": 42}) == "Encounter?_count=42"
    assert render_template("Encounter?x={{context.f}}", {"f": 2.5}) == "Encounter?x=2.5"
    assert render_template("Encounter?x={{context.b}}", {"b": True}) is None
    assert render_template("Encounter?x={{context.f}}", {"f": float("nan")}) is None


@pytest.mark.parametrize(
    "template",
    [
        "Encounter/{{context.encounterId}}",                                    # optional field absent
        "ServiceRequest?_id={{context.draftOrders.entry.0.resource.id}}",       # nested path
        "ServiceRequest?_id={{context.draftOrders}}",                           # object, not primitive
        "ServiceRequest?_id={{context.selections}}",                            # array, not primitive
        "Patient/{{context.{{context.patientId}}}}",                            # nested tokens
        "Patient/{{{{context.patientId}}}}",
        "Patient/{{context.patientId}",                                         # unbalanced
        "Patient/{context.patientId}}",
        "Patient/{{patientId}}",                                                # not a context path
        "Patient/{{Patient.id}}",                                               # pre-1.0 syntax
        "ServiceRequest?authored=ge{{today() - 90 days}}",                      # 3.0 ballot / sandbox only
        "Practitioner/{{user}}",                                                # sandbox extension
        "PractitionerRole/{{userPractitionerRoleId}}",                          # userId is a Practitioner
        "Patient/{{userPatientId}}",
        "RelatedPerson/{{userRelatedPersonId}}",
        "Patient/{{}}",
        "Patient/{{context.}}",
        "Patient/{{context.patientId.x}}",
    ],
)
def test_render_unresolvable_returns_none(template):
    assert render_template(template, CONTEXT) is None


def test_render_encounter_id_present_or_null():
    assert render_template("Encounter/{{context.encounterId}}", {**CONTEXT, "encounterId": "enc-1"}) == "Encounter/enc-1"
    assert render_template("Encounter/{{context.encounterId}}", {**CONTEXT, "encounterId": None}) is None


@pytest.mark.parametrize(
    "user_id, token, expected",
    [
        ("Practitioner/abc", "userPractitionerId", "abc"),
        ("PractitionerRole/r-1", "userPractitionerRoleId", "r-1"),
        ("PractitionerRole/r-1", "userPractitionerId", None),
        ("Patient/p.1", "userPatientId", "p.1"),
        ("RelatedPerson/rp", "userRelatedPersonId", "rp"),
        ("Practitioner/abc", "userRelatedPersonId", None),
        ("abc", "userPractitionerId", None),
        ("Practitioner/", "userPractitionerId", None),
        ("Practitioner/a/b", "userPractitionerId", None),
        ("https://ehr.example.org/fhir/Practitioner/abc", "userPractitionerId", None),
        ("practitioner/abc", "userPractitionerId", None),
        (None, "userPractitionerId", None),
        (42, "userPractitionerId", None),
    ],
)
def test_render_user_tokens(user_id, token, expected):
    rendered = render_template("X?who={{" + token + "}}", {"userId": user_id})
    assert rendered == (None if expected is None else f"X?who={expected}")


def test_render_rejects_non_string_input():
    assert render_template(None, CONTEXT) is None  # type: ignore[arg-type]
    assert render_template("Patient/{{context.patientId}}", None) is None  # type: ignore[arg-type]


# -- find_missing_prefetch ----------------------------------------------------------------------


def test_missing_versus_null():
    prefetch = {"patient": {"resourceType": "Patient", "id": "pat-onc-1"}, "conditions": None, "extra": {}}
    assert find_missing_prefetch(TEMPLATES, prefetch) == ["observations", "practitioner"]


def test_missing_when_no_prefetch():
    assert find_missing_prefetch(TEMPLATES, None) == list(TEMPLATES)
    assert find_missing_prefetch(TEMPLATES, {}) == list(TEMPLATES)
    assert find_missing_prefetch({}, None) == []


def test_all_null_is_complete():
    assert find_missing_prefetch(TEMPLATES, {key: None for key in TEMPLATES}) == []


# -- complete_prefetch --------------------------------------------------------------------------


@pytest.fixture
def fhir():
    with FixtureFhirServer(RESOURCES) as server:
        yield server


@pytest.fixture
def forbidden():
    with FixtureFhirServer(RESOURCES) as server:
        yield server


@pytest.fixture
def client(fhir):
    """A production-like client: only the fixture server is allowed, no loopback wildcard."""
    c = FhirClient(allowed_servers=(fhir.base_url,), allow_loopback=False, connect_timeout=0.5, read_timeout=0.5)
    yield c
    c.close()


def complete(client, prefetch, fhir_server, *, templates=TEMPLATES, context=CONTEXT, token=TOKEN, **kwargs):
    return complete_prefetch(
        templates=templates, prefetch=prefetch, context=context, fhir_server=fhir_server,
        access_token=token, client=client, **kwargs,
    )


def test_complete_prefetch_needs_no_server(client, fhir):
    prefetch = {
        "patient": {"resourceType": "Patient", "id": "pat-onc-1"},
        "conditions": None,
        "observations": {"resourceType": "Bundle", "type": "searchset", "entry": []},
        "practitioner": None,
        "not-a-template-key": {"resourceType": "Basic"},
    }
    result = complete(client, prefetch, None)
    assert result == {k: prefetch[k] for k in TEMPLATES}
    assert result["conditions"] is None  # null = "no data", kept, not fetched
    assert "not-a-template-key" not in result
    assert fhir.requests == []


def test_fetches_only_missing_keys(client, fhir):
    prefetch = {"patient": {"resourceType": "Patient", "id": "pat-onc-1"}, "conditions": None}
    original = dict(prefetch)
    result = complete(client, prefetch, fhir.base_url)
    assert prefetch == original  # input not mutated
    assert result["patient"] == {"resourceType": "Patient", "id": "pat-onc-1"}
    assert result["conditions"] is None
    assert [e["resource"]["id"] for e in result["observations"]["entry"]] == ["o1"]
    assert result["practitioner"]["id"] == "COREPRACTITIONER1"
    assert sorted(r.target for r in fhir.requests) == [
        "/Observation?patient=pat-onc-1&_count=100",
        "/Practitioner/COREPRACTITIONER1",
    ]
    assert all(r.method == "GET" and r.header("Authorization") == f"Bearer {TOKEN}" for r in fhir.requests)


def test_fetches_everything_without_prefetch_and_without_token(client, fhir):
    result = complete(client, None, fhir.base_url, token=None)
    assert list(result) == list(TEMPLATES)
    assert result["patient"]["id"] == "pat-onc-1"
    assert [e["resource"]["id"] for e in result["conditions"]["entry"]] == ["c1"]
    assert len(fhir.requests) == 4
    assert all(r.header("Authorization") is None for r in fhir.requests)


def test_missing_key_without_fhir_server_is_412(client, fhir):
    with pytest.raises(PrefetchUnavailable) as info:
        complete(client, {"patient": None}, None)
    assert type(info.value) is PrefetchUnavailable
    assert info.value.status == 412
    assert "conditions" in info.value.message and "practitioner" in info.value.message
    assert "patient," not in info.value.message  # the null key is not reported missing
    assert fhir.requests == []


def test_not_allowed_server_gets_no_call(client, fhir, forbidden):
    with pytest.raises(FhirServerNotAllowed) as info:
        complete(client, {"patient": None}, forbidden.base_url)
    assert info.value.status == 412
    assert "conditions" in info.value.message
    assert "pat-onc-1" not in info.value.message
    assert forbidden.requests == [] and fhir.requests == []


@pytest.mark.parametrize(
    "url_for",
    [
        lambda a, b: b.replace("127.0.0.1", "localhost"),
        lambda a, b: "http://" + a.split("//")[1] + "@" + b.split("//")[1],
        lambda a, b: a + ".evil.com",
        lambda a, b: "http://169.254.169.254/latest/meta-data",
    ],
)
def test_not_allowed_variants(url_for, client, fhir, forbidden):
    with pytest.raises(FhirServerNotAllowed):
        complete(client, None, url_for(fhir.base_url, forbidden.base_url))
    assert forbidden.requests == [] and fhir.requests == []


def test_development_client_refuses_metadata_address(fhir):
    dev = FhirClient(allowed_servers=(), allow_loopback=True, connect_timeout=0.2, read_timeout=0.2)
    try:
        with pytest.raises(FhirServerNotAllowed):
            complete(dev, None, "http://169.254.169.254")
        assert complete(dev, None, fhir.base_url)["patient"]["id"] == "pat-onc-1"  # loopback is fine
    finally:
        dev.close()


def test_unrenderable_template_is_412_and_nothing_is_fetched(client, fhir):
    templates = {**TEMPLATES, "encounter": "Encounter/{{context.encounterId}}"}
    with pytest.raises(PrefetchUnavailable) as info:
        complete(client, None, fhir.base_url, templates=templates)
    assert type(info.value) is PrefetchUnavailable
    assert "encounter" in info.value.message
    assert fhir.requests == []  # the other, renderable keys are not fetched either


def test_unrenderable_template_is_fine_when_prefetched(client, fhir):
    templates = {"encounter": "Encounter/{{context.encounterId}}"}
    assert complete(client, {"encounter": None}, fhir.base_url, templates=templates) == {"encounter": None}
    assert fhir.requests == []


@pytest.mark.parametrize("max_concurrency", [1, 4])
def test_fetch_failure_is_412_naming_the_key(max_concurrency, fhir):
    fhir.configure("/Condition", fail_status=500)
    client = FhirClient(allowed_servers=(fhir.base_url,), allow_loopback=False, max_concurrency=max_concurrency)
    with pytest.raises(FhirFetchFailed) as info:
        complete(client, {"patient": None}, fhir.base_url)
    client.close()
    assert info.value.status == 412
    assert "conditions" in info.value.message
    assert "pat-onc-1" not in info.value.message and TOKEN not in info.value.message


def test_timeout_is_412(client, fhir):
    fhir.configure("/Observation", delay_seconds=3)
    started = time.monotonic()
    with pytest.raises(FhirFetchFailed) as info:
        complete(client, {"patient": None, "conditions": None, "practitioner": None}, fhir.base_url)
    assert "observations" in info.value.message
    assert time.monotonic() - started < 2


def test_operation_outcome_from_server_is_returned(client, fhir):
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden"}]}
    fhir.configure("/Condition", body=outcome)
    result = complete(client, {"patient": None, "observations": None, "practitioner": None}, fhir.base_url)
    assert result["conditions"] == outcome


def test_missing_keys_fetched_concurrently(client, fhir):
    for prefix in ("/Patient", "/Condition", "/Observation", "/Practitioner"):
        fhir.configure(prefix, delay_seconds=0.4)
    started = time.monotonic()
    result = complete(client, None, fhir.base_url)
    elapsed = time.monotonic() - started
    assert set(result) == set(TEMPLATES)
    assert elapsed < 1.2  # sequentially it would take at least 1.6 s


def test_every_shipped_template_is_fetched_in_one_wave(fhir):
    """All of the service's prefetch templates go out at once: the call waits for the slowest
    query, not for several waves of them."""
    from cds_service.hooks.services import PREFETCH_TEMPLATES

    fhir.configure("/", delay_seconds=0.4)
    c = FhirClient(allowed_servers=(fhir.base_url,), allow_loopback=False, read_timeout=3)
    try:
        started = time.monotonic()
        result = complete(c, None, fhir.base_url, templates=PREFETCH_TEMPLATES)
        elapsed = time.monotonic() - started
    finally:
        c.close()
    assert set(result) == set(PREFETCH_TEMPLATES) and len(PREFETCH_TEMPLATES) > 4
    # One wave takes ~0.4 s; the former cap of 4 at a time needed 3 waves (1.2 s).
    assert elapsed < 1.0, f"{len(PREFETCH_TEMPLATES)} queries took {elapsed:.2f} s"


def test_paged_search_is_merged(fhir):
    fhir.add([{"resourceType": "Condition", "id": f"x{i}", "subject": {"reference": "Patient/pat-onc-1"}} for i in range(5)])
    c = FhirClient(allowed_servers=(fhir.base_url,), allow_loopback=False, max_pages=5)
    try:
        result = complete(c, None, fhir.base_url, templates={"conditions": "Condition?patient={{context.patientId}}&_count=2"})
    finally:
        c.close()
    assert result["conditions"]["total"] == 6
    assert len(result["conditions"]["entry"]) == 6
    assert len(fhir.requests) == 3
