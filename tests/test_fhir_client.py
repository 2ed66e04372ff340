"""FhirClient: SSRF allow-list, query confinement, paging, redirects, timeouts, size limits.

Real HTTP on 127.0.0.1 against FixtureFhirServer; ``requests`` is never mocked. A second server
plays "the forbidden host": its request log must stay empty whenever a call is refused.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from cds_service.errors import FhirFetchFailed, FhirServerNotAllowed, PrefetchUnavailable
from cds_service.ehr.fhir_client import FhirClient
from cds_service.devtools.fixture_fhir_server import FixtureFhirServer

PATIENT = {"resourceType": "Patient", "id": "pat-secret-42", "name": [{"given": ["Ada"], "family": "Test"}]}
TOKEN = "tok-SECRET-abc.def"


def conditions(n: int, patient: str = "pat-secret-42") -> list[dict]:
    return [
        {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/{patient}"}}
        for i in range(n)
    ]


@pytest.fixture
def server():
    with FixtureFhirServer([PATIENT, *conditions(7)]) as s:
        yield s


@pytest.fixture
def forbidden():
    """A second loopback server that must never be reached."""
    with FixtureFhirServer([PATIENT, *conditions(2)]) as s:
        yield s


@pytest.fixture
def make_client():
    clients = []

    def make(allowed=(), *, allow_loopback=False, **kwargs):
        kwargs.setdefault("connect_timeout", 0.5)
        kwargs.setdefault("read_timeout", 0.5)
        client = FhirClient(allowed_servers=tuple(allowed), allow_loopback=allow_loopback, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- allow-list matrix (no I/O) ------------------------------------------------------------------

PROD_ALLOWED = ("https://trusted.example.org/fhir", "http://127.0.0.1:8081")


@pytest.mark.parametrize(
    "url",
    [
        "https://trusted.example.org/fhir",
        "https://trusted.example.org/fhir/",
        "https://TRUSTED.Example.org/fhir",
        "https://trusted.example.org:443/fhir",
        "https://trusted.example.org/fhir/r4",
        "http://127.0.0.1:8081",
        "http://127.0.0.1:8081/",
        "http://127.0.0.1:8081/any/path",
    ],
)
def test_allowed_urls(url, make_client):
    assert make_client(PROD_ALLOWED).is_allowed(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://trusted.example.org",                   # above the allowed path
        "https://trusted.example.org/fhir2",             # prefix but not on a segment boundary
        "https://trusted.example.org/fhirx/r4",
        "https://trusted.example.org/FHIR",              # paths are case-sensitive
        "http://trusted.example.org/fhir",               # other scheme
        "https://trusted.example.org:8443/fhir",         # other port
        "https://trusted.example.org.evil.com/fhir",     # suffix trickery
        "https://evil.com/trusted.example.org/fhir",
        "https://trusted.example.org@evil.com/fhir",     # userinfo
        "https://trusted@evil.com/fhir",
        "https://user:pw@trusted.example.org/fhir",      # userinfo even on the right host
        "https://trusted.example.org\\@evil.com/fhir",   # backslash
        "https://trusted.example.org./fhir",             # trailing-dot host
        "https://trusted.example.org/fhir/../admin",     # dot segments
        "https://trusted.example.org/fhir/%2e%2e/admin",
        "https://trusted.example.org/fhir%2f..%2fadmin",
        "https://trusted.example.org/fhir//x",
        "https://trusted.example.org/fhir?x=1",          # base URLs carry no query/fragment
        "https://trusted.example.org/fhir#x",
        "https://trusted.example.org/fhir\n",
        "https://trusted.example.org/fh ir",
        "ftp://trusted.example.org/fhir",
        "file:///etc/passwd",
        "//trusted.example.org/fhir",
        "trusted.example.org/fhir",
        "http://127.0.0.1:8081.evil.com",                # port trickery
        "http://127.0.0.1:8082",                         # other port
        "http://127.0.0.1",                              # default port 80, not 8081
        "http://localhost:8081",                         # name != address in production
        "http://[::1]:8081",                             # IPv6 loopback not listed
        "http://127.0.0.1:99999",
        "",
        None,
        42,
    ],
)
def test_refused_urls(url, make_client):
    assert not make_client(PROD_ALLOWED).is_allowed(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1",
        "http://127.0.0.1:8081/fhir",
        "http://127.8.9.10",
        "http://localhost:5000",
        "http://LOCALHOST:5000/fhir",
        "http://[::1]:8081",
        "http://[0:0:0:0:0:0:0:1]/fhir",
        "https://127.0.0.1",
    ],
)
def test_development_allows_literal_loopback(url, make_client):
    assert make_client(allow_loopback=True).is_allowed(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",      # cloud metadata
        "http://[fd00:ec2::254]/latest",
        "http://10.0.0.1:8081",
        "http://192.168.1.1",
        "http://0.0.0.0:8081",
        "http://[::]:8081",
        "http://[::ffff:127.0.0.1]:8081",                # IPv4-mapped loopback
        "http://127.1:8081",                             # shorthand forms getaddrinfo would accept
        "http://2130706433:8081",
        "http://0x7f.0.0.1:8081",
        "http://0177.0.0.1:8081",
        "http://localhost.:8081",
        "http://localhost.evil.com",
        "http://127.0.0.1.nip.io",
        "http://[::1%25lo]:8081",
        "http://trusted@127.0.0.1:8081",
        "https://trusted.example.org/fhir",              # not configured in this client
    ],
)
def test_development_refuses_other_addresses(url, make_client):
    assert not make_client(allow_loopback=True).is_allowed(url)


@pytest.mark.parametrize("entry", ["https://user@trusted.example.org", "ftp://x.org", "https://x.org/a/../b", "x.org"])
def test_bad_allow_list_entry_is_a_config_error(entry):
    with pytest.raises(ValueError):
        FhirClient(allowed_servers=(entry,), allow_loopback=False)


# -- refused calls never reach the network -------------------------------------------------------


def forbidden_variants(allowed_url: str, forbidden_url: str) -> list[str]:
    a_netloc = allowed_url.split("//", 1)[1]
    b_netloc = forbidden_url.split("//", 1)[1]
    b_port = b_netloc.rsplit(":", 1)[1]
    return [
        forbidden_url,
        forbidden_url + "/",
        f"http://{a_netloc}@{b_netloc}",                 # allowed host as userinfo
        f"http://localhost:{b_port}",
        f"http://[::1]:{b_port}",
        f"http://127.0.0.2:{b_port}",
        f"http://{a_netloc}.{b_netloc}",
    ]


def test_not_allowed_server_gets_no_request(server, forbidden, make_client):
    client = make_client([server.base_url], allow_loopback=False)
    for url in forbidden_variants(server.base_url, forbidden.base_url):
        with pytest.raises(FhirServerNotAllowed):
            client.fetch(url, "Patient/pat-secret-42", TOKEN)
    assert forbidden.requests == []
    assert server.requests == []
    # Sanity check: the same call to the allowed server does go out.
    assert client.fetch(server.base_url, "Patient/pat-secret-42", TOKEN)["id"] == "pat-secret-42"
    assert len(server.requests) == 1


def test_not_allowed_is_a_412_error_family(server, forbidden, make_client):
    client = make_client([server.base_url])
    with pytest.raises(PrefetchUnavailable) as info:
        client.fetch(forbidden.base_url, "Patient/1", None)
    assert info.value.status == 412
    assert info.value.code == "fhir-server-not-allowed"


def test_metadata_address_refused_in_development(make_client):
    client = make_client(allow_loopback=True, connect_timeout=0.1, read_timeout=0.1)
    started = time.monotonic()
    with pytest.raises(FhirServerNotAllowed):
        client.fetch("http://169.254.169.254", "Patient/1", TOKEN)
    assert time.monotonic() - started < 0.05  # refused without trying to connect


@pytest.mark.parametrize(
    "query",
    [
        "",
        "http://127.0.0.1:9/Patient/1",
        "//127.0.0.1:9/Patient/1",
        "/Patient/1",
        "../Patient/1",
        "Patient/../../admin",
        "Patient/./1",
        "Patient//1",
        "Patient/%2e%2e/x",
        "Patient%2F..%2Fx",
        "Patient\\..\\x",
        "Patient/1\r\nX-Injected: 1",
        "Patient/1\x00",
        "Patient/1 2",
        "Patient/1#frag",
        "@evil.com/Patient",
        "patient/1",                                     # not a resource type
        "Patient:evil/1",
    ],
)
def test_query_cannot_escape_base(query, server, make_client):
    client = make_client([server.base_url])
    with pytest.raises(FhirFetchFailed):
        client.fetch(server.base_url, query, TOKEN)
    assert server.requests == []


def test_query_values_may_contain_encoded_characters(server, make_client):
    client = make_client([server.base_url])
    bundle = client.fetch(server.base_url, "Condition?patient=Patient%2Fpat-secret-42&code=http://x|1,2", None)
    assert bundle["resourceType"] == "Bundle"


# -- headers ------------------------------------------------------------------------------------


def test_bearer_token_and_accept_header_sent(server, make_client):
    client = make_client([server.base_url])
    patient = client.fetch(server.base_url, "Patient/pat-secret-42", TOKEN)
    assert patient == PATIENT
    (request,) = server.requests
    assert request.method == "GET"
    assert request.path == "/Patient/pat-secret-42"
    assert request.header("Authorization") == f"Bearer {TOKEN}"
    assert request.header("Accept") == "application/fhir+json"


@pytest.mark.parametrize("token", [None, ""])
def test_no_authorization_header_without_token(token, server, make_client):
    make_client([server.base_url]).fetch(server.base_url, "Patient/pat-secret-42", token)
    assert server.requests[0].header("Authorization") is None


def test_malformed_token_refused_before_io(server, make_client):
    with pytest.raises(FhirFetchFailed) as info:
        make_client([server.base_url]).fetch(server.base_url, "Patient/pat-secret-42", "abc\r\nX-Evil: 1")
    assert "abc" not in str(info.value)
    assert server.requests == []


def test_allowed_base_with_path(server, make_client):
    base = server.base_url + "/fhir"
    server.configure("/fhir/Patient", body=PATIENT)
    client = make_client([base])
    assert client.fetch(base + "/", "Patient/pat-secret-42", None)["id"] == "pat-secret-42"
    assert server.requests[0].path == "/fhir/Patient/pat-secret-42"


# -- paging -------------------------------------------------------------------------------------


def test_pages_merged_into_one_searchset(server, make_client):
    client = make_client([server.base_url], max_pages=5)
    bundle = client.fetch(server.base_url, "Condition?patient=pat-secret-42&_count=2", TOKEN)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 7
    assert [e["resource"]["id"] for e in bundle["entry"]] == [f"c{i}" for i in range(7)]
    assert "link" not in bundle  # complete
    assert len(server.requests) == 4
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in server.requests)


def test_paging_capped_at_max_pages(server, make_client):
    client = make_client([server.base_url], max_pages=2)
    bundle = client.fetch(server.base_url, "Condition?patient=pat-secret-42&_count=2", None)
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["c0", "c1", "c2", "c3"]
    assert bundle["total"] == 7
    # The unread page is kept as link[next] so the caller can see the result is incomplete.
    assert [link["relation"] for link in bundle["link"]] == ["next"]
    assert len(server.requests) == 2


def test_single_page_search_returned_as_is(server, make_client):
    bundle = make_client([server.base_url]).fetch(server.base_url, "Condition?patient=pat-secret-42", None)
    assert bundle["total"] == 7 and len(bundle["entry"]) == 7
    assert len(server.requests) == 1


def page(entries: list[dict], next_url: str | None, total: int | None = None) -> dict:
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in entries]}
    if total is not None:
        bundle["total"] = total
    if next_url:
        bundle["link"] = [{"relation": "self", "url": "x"}, {"relation": "next", "url": next_url}]
    return bundle


@pytest.mark.parametrize(
    "next_for",
    [
        lambda a, b: b + "/Condition?page=2",                            # other loopback server
        lambda a, b: a.replace("127.0.0.1", "localhost") + "/Condition",  # other host name for A
        lambda a, b: "http://a@" + a.split("//")[1] + "/Condition",       # userinfo
        lambda a, b: b.replace("http://", "http://" + a.split("//")[1] + "@") + "/Condition",
        lambda a, b: a.replace("http://", "https://") + "/Condition",    # other scheme
        lambda a, b: "/Condition?page=2",                                # relative: not under the base
        lambda a, b: "http://169.254.169.254/latest/meta-data",
        lambda a, b: a + "/Condition/../../x",
    ],
)
def test_foreign_next_link_not_followed(next_for, server, forbidden, make_client):
    next_url = next_for(server.base_url, forbidden.base_url)
    server.configure("/Condition", body=page(conditions(2), next_url, total=9))
    client = make_client([server.base_url, forbidden.base_url.replace("127.0.0.1", "localhost")])
    bundle = client.fetch(server.base_url, "Condition?patient=pat-secret-42", TOKEN)
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["c0", "c1"]
    assert bundle["total"] == 9
    assert bundle["link"] == [{"relation": "next", "url": next_url}]
    assert len(server.requests) == 1
    assert forbidden.requests == []


def test_next_link_outside_base_path_not_followed(server, make_client):
    base = server.base_url + "/fhir"
    server.configure("/fhir/Condition", body=page(conditions(1), server.base_url + "/other/Condition"))
    bundle = make_client([base]).fetch(base, "Condition?patient=x", None)
    assert len(bundle["entry"]) == 1
    assert [r.path for r in server.requests] == ["/fhir/Condition"]


def test_next_link_loop_stops(server, make_client):
    loop = server.base_url + "/Condition?page=again"
    server.configure("/Condition", body=page(conditions(1), loop))
    bundle = make_client([server.base_url], max_pages=5).fetch(server.base_url, "Condition?page=again", None)
    assert len(server.requests) == 1  # the next link is the page just read
    assert len(bundle["entry"]) == 1


def test_next_page_that_is_not_a_bundle_fails(server, make_client):
    server.configure("/Condition", body=page(conditions(1), server.base_url + "/Other?x=1"))
    server.configure("/Other", body=PATIENT)
    with pytest.raises(FhirFetchFailed):
        make_client([server.base_url]).fetch(server.base_url, "Condition?patient=x", None)


# -- redirects, errors, timeouts, size ----------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_not_followed(status, server, forbidden, make_client):
    server.configure("/Patient", fail_status=status, body="", headers={"Location": forbidden.base_url + "/Patient/pat-secret-42"})
    with pytest.raises(FhirFetchFailed) as info:
        make_client([server.base_url]).fetch(server.base_url, "Patient/pat-secret-42", TOKEN)
    assert str(status) in str(info.value)
    assert forbidden.requests == []


def test_slow_server_fails_within_timeout(server, make_client):
    server.configure("/Patient", delay_seconds=3)
    client = make_client([server.base_url], connect_timeout=0.2, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(FhirFetchFailed) as info:
        client.fetch(server.base_url, "Patient/pat-secret-42", None)
    assert time.monotonic() - started < 1.5
    assert "timed out" in str(info.value)


def test_slow_drip_body_fails_at_deadline(server, make_client):
    padding = {"resourceType": "Patient", "id": "p", "text": {"div": "x" * 20_000}}
    server.configure("/Patient", body=padding, drip_interval=0.05, drip_bytes=32)
    client = make_client([server.base_url], connect_timeout=0.2, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(FhirFetchFailed):
        client.fetch(server.base_url, "Patient/p", None)
    assert time.monotonic() - started < 1.5


def test_connection_refused(make_client):
    base = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(FhirFetchFailed):
        make_client([base]).fetch(base, "Patient/1", None)


@pytest.mark.parametrize("status", [500, 503, 404, 401, 201, 204])
def test_error_status_fails(status, server, make_client):
    server.configure("/Patient", fail_status=status)
    with pytest.raises(FhirFetchFailed) as info:
        make_client([server.base_url]).fetch(server.base_url, "Patient/pat-secret-42", TOKEN)
    assert info.value.status == 412
    assert "pat-secret-42" not in str(info.value) and TOKEN not in str(info.value)


def test_unknown_resource_404(server, make_client):
    with pytest.raises(FhirFetchFailed):
        make_client([server.base_url]).fetch(server.base_url, "Patient/nobody", None)


@pytest.mark.parametrize(
    "body",
    ["<html>oops</html>", "", "[1, 2]", '"text"', "null", '{"no": "resourceType"}', b"\xff\xfe\x00garbage", "{" * 100_000],
)
def test_bad_bodies_fail(body, server, make_client):
    server.configure("/Patient", body=body, content_type="application/fhir+json")
    with pytest.raises(FhirFetchFailed):
        make_client([server.base_url]).fetch(server.base_url, "Patient/pat-secret-42", None)


def test_operation_outcome_returned_as_is(server, make_client):
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "incomplete"}]}
    server.configure("/Condition", body=outcome)
    assert make_client([server.base_url]).fetch(server.base_url, "Condition?patient=x", None) == outcome


@pytest.mark.parametrize("send_length", [True, False])
def test_oversize_body_aborted(send_length, server, make_client):
    big = {"resourceType": "Patient", "id": "p", "text": {"div": "x" * 300_000}}
    server.configure("/Patient", body=big, send_length=send_length)
    client = make_client([server.base_url], max_response_bytes=100_000)
    with pytest.raises(FhirFetchFailed) as info:
        client.fetch(server.base_url, "Patient/p", None)
    assert "larger than" in str(info.value)


def test_body_at_limit_accepted(server, make_client):
    body = {"resourceType": "Patient", "id": "p", "text": {"div": "x" * 1000}}
    server.configure("/Patient", body=body, send_length=False)
    size = len(json.dumps(body).encode())
    assert make_client([server.base_url], max_response_bytes=size).fetch(server.base_url, "Patient/p", None) == body


def test_token_and_body_never_logged(server, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client([server.base_url], max_pages=1)
    client.fetch(server.base_url, "Condition?patient=pat-secret-42&_count=2", TOKEN)
    server.configure("/Patient", fail_status=500, body={"resourceType": "OperationOutcome", "text": "pat-secret-42"})
    with pytest.raises(FhirFetchFailed):
        client.fetch(server.base_url, "Patient/pat-secret-42", TOKEN)
    ours = [r.getMessage() for r in caplog.records if r.name == "cds_service.ehr.fhir_client"]
    assert ours  # the failure and the page cap were logged ...
    assert not any(TOKEN in m or "pat-secret-42" in m for m in ours)  # ... without token or patient id
    # urllib3's own DEBUG log contains URLs (patient ids): keep it at INFO or above in production.
    assert TOKEN not in caplog.text
