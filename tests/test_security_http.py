"""CDS Hooks JWT security end to end: a real ES384 key, its JWKS on loopback, the service over HTTP."""

from __future__ import annotations

import json

import pytest

from cds_service.config import Settings
from tests.conftest import free_port
from tests.jwt_helpers import bearer, generate_key, jwks_server, mint_token  # noqa: F401  (fixture)
from tests.sandbox_requests import SELECT_ID, order_select

ISSUER = "https://ehr.example.org"


@pytest.fixture
def secured(tmp_path, jwks_server, make_live_server):
    key = generate_key("ES384", kid="ehr-key-1")
    jwks_server.serve(key)
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks_url": jwks_server.url}]}))
    port = free_port()
    settings = Settings(
        mode="production",
        public_base_url=f"http://127.0.0.1:{port}",
        trusted_issuers_file=str(issuers),
        cors_origins=("https://ehr.example.org",),
        database_url=f"sqlite:///{tmp_path}/secured.sqlite3",
        log_level="WARNING",
    )
    server = make_live_server(settings, port=port)
    return server, key


def test_valid_es384_token_is_accepted_on_every_endpoint(secured):
    server, key = secured
    discovery = server.get("/cds-services", headers={"Authorization": bearer(mint_token(key, iss=ISSUER, aud=f"{server.url}/cds-services"))})
    assert discovery.status_code == 200
    path = f"/cds-services/{SELECT_ID}"
    call = server.post(path, json=order_select(None), headers={"Authorization": bearer(mint_token(key, iss=ISSUER, aud=server.url + path))})
    assert call.status_code == 200


@pytest.mark.parametrize("problem", ["missing", "wrong-audience", "unknown-issuer", "expired", "other-key", "hs384"])
def test_bad_tokens_get_401_without_detail(secured, problem):
    server, key = secured
    path = f"/cds-services/{SELECT_ID}"
    aud = server.url + path
    tokens = {
        "missing": None,
        "wrong-audience": mint_token(key, iss=ISSUER, aud=f"{server.url}/cds-services/other"),
        "unknown-issuer": mint_token(key, iss="https://evil.example.com", aud=aud),
        "expired": mint_token(key, iss=ISSUER, aud=aud, issued_at=1_000_000_000, lifetime=300),
        "other-key": mint_token(generate_key("ES384", kid="ehr-key-1"), iss=ISSUER, aud=aud),
        "hs384": __import__("tests.jwt_helpers", fromlist=["hmac_token"]).hmac_token(
            b"secret", {"alg": "HS384", "typ": "JWT", "kid": "ehr-key-1"},
            {"iss": ISSUER, "aud": aud, "exp": 4_000_000_000, "iat": 1_700_000_000, "jti": "x"}),
    }
    headers = {"Authorization": bearer(tokens[problem])} if tokens[problem] else {}
    response = server.post(path, json=order_select(None), headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_replayed_token_is_refused(secured):
    server, key = secured
    path = f"/cds-services/{SELECT_ID}"
    token = mint_token(key, iss=ISSUER, aud=server.url + path)
    assert server.post(path, json=order_select(None), headers={"Authorization": bearer(token)}).status_code == 200
    assert server.post(path, json=order_select(None), headers={"Authorization": bearer(token)}).status_code == 401


def _decision_count(tmp_path) -> int:
    import sqlite3

    with sqlite3.connect(tmp_path / "secured.sqlite3") as conn:
        return conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]


def test_replayed_rated_call_is_refused_and_leaves_no_second_decision(secured, tmp_path):
    """The jti is written in the decision's own transaction: the replay is refused as a whole."""
    server, key = secured
    path = f"/cds-services/{SELECT_ID}"
    body = order_select("78306", [("http://snomed.info/sct", "415076002")])
    token = mint_token(key, iss=ISSUER, aud=server.url + path)
    first = server.post(path, json=body, headers={"Authorization": bearer(token)})
    assert first.status_code == 200 and first.json()["cards"], "the bone scan is rated and warned about"
    assert _decision_count(tmp_path) == 1
    again = server.post(path, json=body, headers={"Authorization": bearer(token)})
    assert again.status_code == 401
    assert _decision_count(tmp_path) == 1


def test_a_token_is_used_up_even_by_a_call_that_fails(secured):
    server, key = secured
    path = f"/cds-services/{SELECT_ID}"
    token = mint_token(key, iss=ISSUER, aud=server.url + path)
    bad = order_select(None)
    bad["context"] = {"patientId": "pat-onc-1"}  # no userId, no draftOrders: 400
    assert server.post(path, json=bad, headers={"Authorization": bearer(token)}).status_code == 400
    assert server.post(path, json=order_select(None), headers={"Authorization": bearer(token)}).status_code == 401


def test_feedback_needs_a_token_for_the_feedback_url(secured):
    server, key = secured
    path = f"/cds-services/{SELECT_ID}/feedback"
    feedback = {"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T07:43:28Z"}]}
    assert server.post(path, json=feedback).status_code == 401
    token = mint_token(key, iss=ISSUER, aud=server.url + path)
    assert server.post(path, json=feedback, headers={"Authorization": bearer(token)}).status_code == 200


def test_preflight_needs_no_token(secured):
    server, _ = secured
    response = server.session.options(
        f"{server.url}/cds-services/{SELECT_ID}",
        headers={"Origin": "https://ehr.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"


def test_production_refuses_to_start_without_trusted_issuers(tmp_path):
    from cds_service.server.app import create_app

    with pytest.raises(ValueError, match="TRUSTED_ISSUERS"):
        create_app(Settings(mode="production", database_url=f"sqlite:///{tmp_path}/x.sqlite3"))
    with pytest.raises(ValueError, match="CORS"):
        Settings(mode="production", trusted_issuers_file="x.json", cors_origins=("*",)).validate()


def test_development_mode_announces_itself_loudly(tmp_path, capfd):
    from cds_service.server.app import create_app

    create_app(Settings(mode="development", database_url=f"sqlite:///{tmp_path}/x.sqlite3")).extensions["cds"].store.close()
    assert "DEVELOPMENT MODE: JWT verification is OFF" in capfd.readouterr().err
