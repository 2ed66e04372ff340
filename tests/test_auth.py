"""JWT verification (cds_service.security.jwt) against CDS Hooks 2.0 security rules, checklist X2-X7.

Real keys, real signatures and a real JWKS server on 127.0.0.1: nothing is mocked, so what passes
here is what production does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cds_service.security.issuers import TrustedIssuer, load_trusted_issuers
from cds_service.security.jwt import JwtVerifier, MemoryReplayCache
from cds_service.errors import Unauthorized
from tests.jwt_helpers import (  # noqa: F401 - jwks_server, second_jwks_server are fixtures
    JwksServer,
    bearer,
    cds_claims,
    forged_token,
    generate_key,
    hmac_token,
    jwks_of,
    jwks_server,
    mint_token,
    oct_jwk,
    raw_token,
    second_jwks_server,
)

REMOTE_ISS = "https://ehr.example.org"  # keys from a JWKS URL
INLINE_ISS = "https://other-ehr.example.org/fhir"  # keys configured inline
AUDIENCE = "https://cds.example.org/cds-services/onc-imaging-order-select"
REPO = Path(__file__).resolve().parents[1]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def es_key():
    return generate_key("ES384", "ehr-es384")


@pytest.fixture(scope="module")
def rs_key():
    return generate_key("RS384", "other-rs384")


@pytest.fixture
def remote_jwks(jwks_server, es_key):
    """The remote issuer's JWKS server, serving its ES384 key."""
    return jwks_server.serve(es_key)


@pytest.fixture
def verifier(remote_jwks, rs_key):
    issuers = [
        TrustedIssuer(REMOTE_ISS, jwks_url=remote_jwks.url),
        TrustedIssuer(INLINE_ISS, jwks=jwks_of(rs_key, with_alg=False)),
    ]
    return JwtVerifier(issuers, leeway_seconds=30, replay_cache=MemoryReplayCache(), jwks_timeout=1.0)


def refused(verifier: JwtVerifier, header: str | None, audience: str = AUDIENCE) -> Unauthorized:
    """Assert the header is refused, without leaking the token, and return the error."""
    with pytest.raises(Unauthorized) as caught:
        verifier.verify(header, audience)
    error = caught.value
    assert error.status == 401
    assert error.message, "a refusal carries a reason for the log"
    token = (header or "").partition(" ")[2].strip()
    if len(token) > 10:
        signature = token.rsplit(".", 1)[-1]
        for text in (str(error), error.message, repr(error), *error.details):
            assert token not in text
            assert len(signature) < 20 or signature not in text, "not even the signature"
    return error


# --- accepted ------------------------------------------------------------------------------------


def test_accepts_es384_token_with_key_from_jwks_url(verifier, es_key, remote_jwks):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, extra_claims={"tenant": "t1"})

    claims = verifier.verify(bearer(token), AUDIENCE)

    assert claims["iss"] == REMOTE_ISS
    assert claims["aud"] == AUDIENCE
    assert claims["tenant"] == "t1"
    assert remote_jwks.requests == ["/.well-known/jwks.json"]


def test_accepts_rs384_token_with_inline_jwks(verifier, rs_key):
    # The inline key has no "alg" member: its type alone must be enough for RS384.
    token = mint_token(rs_key, iss=INLINE_ISS, aud=AUDIENCE)
    assert verifier.verify(bearer(token), AUDIENCE)["iss"] == INLINE_ISS


def test_accepts_jku_equal_to_configured_url(verifier, es_key, remote_jwks):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, headers={"jku": remote_jwks.url})
    assert verifier.verify(bearer(token), AUDIENCE)["iss"] == REMOTE_ISS


def test_accepts_aud_array_containing_this_service(verifier, es_key):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=["https://elsewhere.example.org/cds-services", AUDIENCE])
    assert AUDIENCE in verifier.verify(bearer(token), AUDIENCE)["aud"]


def test_accepts_token_without_typ_and_lowercase_bearer(verifier, es_key):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, headers={"typ": None})
    assert verifier.verify(f"bearer {token}", AUDIENCE)["iss"] == REMOTE_ISS


def test_clock_skew_within_leeway_is_tolerated(verifier, es_key):
    expired_just_now = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, issued_at=time.time() - 310, lifetime=300)
    issued_just_ahead = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, issued_at=time.time() + 10)

    assert verifier.verify(bearer(expired_just_now), AUDIENCE)
    assert verifier.verify(bearer(issued_just_ahead), AUDIENCE)


def test_jwks_is_downloaded_once_for_many_calls(verifier, es_key, remote_jwks):
    for _ in range(5):
        verifier.verify(bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)), AUDIENCE)
    assert remote_jwks.hits == 1


def test_tenant_allow_list(remote_jwks, es_key):
    issuer = TrustedIssuer(REMOTE_ISS, jwks_url=remote_jwks.url, tenants=("labs",))
    verifier = JwtVerifier([issuer], replay_cache=MemoryReplayCache())

    labs = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, extra_claims={"tenant": "labs"})
    assert verifier.verify(bearer(labs), AUDIENCE)["tenant"] == "labs"
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, extra_claims={"tenant": "other"})))
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)))


def test_from_file_end_to_end(tmp_path, remote_jwks, es_key):
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": REMOTE_ISS, "jwks_url": remote_jwks.url}]}))
    verifier = JwtVerifier.from_file(path, leeway_seconds=5, replay_cache=MemoryReplayCache())

    assert verifier.verify(bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)), AUDIENCE)["iss"] == REMOTE_ISS


# --- refused: algorithm, header, signature -------------------------------------------------------


def test_refuses_alg_none(verifier, es_key):
    claims = cds_claims(iss=REMOTE_ISS, aud=AUDIENCE)
    refused(verifier, bearer(raw_token({"alg": "none", "typ": "JWT", "kid": es_key.kid}, claims)))
    refused(verifier, bearer(raw_token({"alg": "None", "typ": "JWT", "kid": es_key.kid}, claims)))


def test_refuses_hs384_signed_with_the_public_key_as_secret(verifier, rs_key):
    """The classic key-confusion attack: HMAC keyed with the issuer's public RSA key (PEM)."""
    header = {"alg": "HS384", "typ": "JWT", "kid": rs_key.kid}
    token = hmac_token(rs_key.public_pem(), header, cds_claims(iss=INLINE_ISS, aud=AUDIENCE))
    refused(verifier, bearer(token))


def test_refuses_hs384_even_when_the_jwks_holds_a_matching_secret(remote_jwks, es_key):
    secret = b"s" * 48
    remote_jwks.serve(es_key, extra=[oct_jwk(secret, "shared")])
    verifier = JwtVerifier([TrustedIssuer(REMOTE_ISS, jwks_url=remote_jwks.url)], replay_cache=MemoryReplayCache())
    header = {"alg": "HS384", "typ": "JWT", "kid": "shared"}

    refused(verifier, bearer(hmac_token(secret, header, cds_claims(iss=REMOTE_ISS, aud=AUDIENCE))))


@pytest.mark.parametrize("alg", ["RS256", "RS512", "PS384"])
def test_refuses_other_rsa_algorithms_with_a_trusted_rsa_key(verifier, rs_key, alg):
    refused(verifier, bearer(mint_token(rs_key, iss=INLINE_ISS, aud=AUDIENCE, alg=alg)))


def test_refuses_es256_even_with_its_key_in_the_jwks(remote_jwks, es_key):
    p256 = generate_key("ES256", "p256")
    remote_jwks.serve(es_key, p256)
    verifier = JwtVerifier([TrustedIssuer(REMOTE_ISS, jwks_url=remote_jwks.url)], replay_cache=MemoryReplayCache())

    refused(verifier, bearer(mint_token(p256, iss=REMOTE_ISS, aud=AUDIENCE)))
    # …and a P-256 key cannot be used for a token that claims ES384 either.
    header = {"alg": "ES384", "typ": "JWT", "kid": p256.kid}
    refused(verifier, bearer(forged_token(p256, header, cds_claims(iss=REMOTE_ISS, aud=AUDIENCE))))


def test_refuses_alg_that_does_not_fit_the_selected_key(remote_jwks, es_key, rs_key):
    """kid selects an RSA key while the header says ES384 (and the other way round)."""
    remote_jwks.serve(es_key, rs_key)
    verifier = JwtVerifier([TrustedIssuer(REMOTE_ISS, jwks_url=remote_jwks.url)], replay_cache=MemoryReplayCache())

    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, headers={"kid": rs_key.kid})))
    refused(verifier, bearer(mint_token(rs_key, iss=REMOTE_ISS, aud=AUDIENCE, headers={"kid": es_key.kid})))


def test_refuses_rsa_keys_shorter_than_2048_bits():
    weak = generate_key("RS384", "weak", rsa_bits=1024)
    verifier = JwtVerifier([TrustedIssuer(INLINE_ISS, jwks=jwks_of(weak))], replay_cache=MemoryReplayCache())
    header = {"alg": "RS384", "typ": "JWT", "kid": weak.kid}  # forged: PyJWT warns when signing with it
    refused(verifier, bearer(forged_token(weak, header, cds_claims(iss=INLINE_ISS, aud=AUDIENCE))))


def test_refuses_missing_kid(verifier, es_key):
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, headers={"kid": None})))


@pytest.mark.parametrize("iss", [REMOTE_ISS, INLINE_ISS])
def test_refuses_unknown_kid(verifier, es_key, rs_key, iss):
    key = es_key if iss == REMOTE_ISS else rs_key
    refused(verifier, bearer(mint_token(key, iss=iss, aud=AUDIENCE, headers={"kid": "not-in-the-jwks"})))


def test_refuses_key_of_another_trusted_issuer(verifier, rs_key):
    """Keys belong to their issuer: INLINE_ISS's key does not sign for REMOTE_ISS."""
    refused(verifier, bearer(mint_token(rs_key, iss=REMOTE_ISS, aud=AUDIENCE)))


def test_unknown_kids_do_not_turn_into_jwks_downloads(verifier, es_key, remote_jwks):
    for index in range(5):
        refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, headers={"kid": f"random-{index}"})))
    assert remote_jwks.hits <= 2


@pytest.mark.parametrize("typ", ["JOSE", "at+jwt", 1])
def test_refuses_typ_other_than_jwt(verifier, es_key, typ):
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, headers={"typ": typ})))


@pytest.mark.parametrize("extension", [{"crit": ["exp"], "exp": 1}, {"crit": ["b64"], "b64": True}])
def test_refuses_critical_header_extensions(verifier, es_key, extension):
    header = {"alg": "ES384", "typ": "JWT", "kid": es_key.kid, **extension}
    refused(verifier, bearer(forged_token(es_key, header, cds_claims(iss=REMOTE_ISS, aud=AUDIENCE))))


def test_refuses_tampered_signature(verifier, es_key):
    head, payload, signature = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE).split(".")
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
    refused(verifier, bearer(f"{head}.{payload}.{flipped}"))


def test_refuses_tampered_payload(verifier, es_key):
    genuine = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)
    other = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, extra_claims={"tenant": "admin"})
    head, _, signature = genuine.split(".")
    refused(verifier, bearer(f"{head}.{other.split('.')[1]}.{signature}"))


def test_refuses_token_signed_by_an_untrusted_key_with_a_trusted_kid(verifier, es_key):
    impostor = generate_key("ES384", es_key.kid)
    refused(verifier, bearer(mint_token(impostor, iss=REMOTE_ISS, aud=AUDIENCE)))


# --- refused: issuer and jku allow-list (no network before the allow-list) ------------------------


def test_refuses_untrusted_issuer_without_fetching_its_jku(verifier, es_key, remote_jwks, second_jwks_server):
    second_jwks_server.serve(es_key)
    token = mint_token(es_key, iss="https://evil.example.org", aud=AUDIENCE, headers={"jku": second_jwks_server.url})

    refused(verifier, bearer(token))

    assert second_jwks_server.requests == []
    assert remote_jwks.requests == []


def test_refuses_foreign_jku_for_a_trusted_issuer_without_fetching_it(verifier, remote_jwks, second_jwks_server):
    """The attacker's own key, served from the attacker's jku, claiming a trusted iss."""
    attacker = generate_key("ES384", "attacker")
    second_jwks_server.serve(attacker)
    token = mint_token(attacker, iss=REMOTE_ISS, aud=AUDIENCE, headers={"jku": second_jwks_server.url})

    refused(verifier, bearer(token))

    assert second_jwks_server.requests == []
    assert remote_jwks.requests == []


@pytest.mark.parametrize(
    "jku",
    [
        "{url}/",  # same server, different string
        "{url}?x=1",
        "http://localhost:{port}/.well-known/jwks.json",
    ],
)
def test_jku_must_equal_the_configured_url_exactly(verifier, es_key, remote_jwks, jku):
    port = remote_jwks.url.split(":")[2].split("/")[0]
    jku = jku.format(url=remote_jwks.url, port=port)
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, headers={"jku": jku})
    refused(verifier, bearer(token))
    assert remote_jwks.requests == []


def test_refuses_any_jku_for_an_issuer_with_inline_keys(verifier, rs_key, second_jwks_server):
    token = mint_token(rs_key, iss=INLINE_ISS, aud=AUDIENCE, headers={"jku": second_jwks_server.url})
    refused(verifier, bearer(token))
    assert second_jwks_server.requests == []


# --- refused: claims -----------------------------------------------------------------------------


def test_refuses_wrong_audience(verifier, es_key):
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud="https://cds.example.org/cds-services/other")))
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE + "/")))
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=["https://elsewhere.example.org"])))


def test_wrong_audience_is_refused_before_any_jwks_download(verifier, es_key, remote_jwks):
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud="sand_man")))
    assert remote_jwks.requests == []


def test_refuses_expired_token(verifier, es_key):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, issued_at=time.time() - 400, lifetime=300)
    refused(verifier, bearer(token))


def test_refuses_iat_in_the_future(verifier, es_key):
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, issued_at=time.time() + 120)))


def test_refuses_lifetime_over_an_hour(verifier, es_key):
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, lifetime=24 * 3600)))


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "iat", "jti"])
def test_refuses_missing_required_claim(verifier, es_key, claim):
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, omit=[claim])))


@pytest.mark.parametrize(
    "claims",
    [{"exp": "9999999999"}, {"iat": True}, {"jti": 12345}, {"jti": ""}, {"jti": "x" * 1000}, {"aud": [1, 2]}],
    ids=["exp-string", "iat-bool", "jti-number", "jti-empty", "jti-huge", "aud-numbers"],
)
def test_refuses_ill_typed_claims(verifier, es_key, claims):
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, extra_claims=claims)))


def test_sub_is_not_required(verifier, es_key):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)
    assert "sub" not in verifier.verify(bearer(token), AUDIENCE)


def test_refuses_replayed_jti(verifier, es_key):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)
    verifier.verify(bearer(token), AUDIENCE)

    refused(verifier, bearer(token))
    # A fresh token reusing the jti is a replay too.
    jti = verifier.verify(bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, jti="fixed")), AUDIENCE)["jti"]
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, jti=jti)))


def test_jti_is_remembered_for_as_long_as_the_token_is_accepted(remote_jwks, es_key):
    """The ReplayCache contract: expires_at covers exp plus the leeway the verifier grants."""
    calls = []

    class RecordingCache:
        def remember_jti(self, iss, jti, expires_at):
            calls.append((iss, jti, expires_at))
            return True

    issuer = TrustedIssuer(REMOTE_ISS, jwks_url=remote_jwks.url)
    verifier = JwtVerifier([issuer], leeway_seconds=30, replay_cache=RecordingCache())
    claims = verifier.verify(bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, jti="j-1")), AUDIENCE)

    ((iss, jti, expires_at),) = calls
    assert (iss, jti) == (REMOTE_ISS, "j-1")
    assert expires_at.tzinfo is not None
    assert expires_at >= datetime.fromtimestamp(claims["exp"], timezone.utc) + timedelta(seconds=30)


def test_concurrent_replays_let_exactly_one_call_through(verifier, es_key):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)
    verifier.verify(bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)), AUDIENCE)  # warm the JWKS cache
    outcomes: list[bool] = []
    start = threading.Barrier(8)

    def call() -> None:
        start.wait()
        try:
            verifier.verify(bearer(token), AUDIENCE)
            outcomes.append(True)
        except Unauthorized:
            outcomes.append(False)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]


def test_forged_tokens_do_not_consume_their_jti(verifier, es_key):
    """A forged token with a victim's jti must not block the genuine token."""
    impostor = generate_key("ES384", es_key.kid)
    refused(verifier, bearer(mint_token(impostor, iss=REMOTE_ISS, aud=AUDIENCE, jti="victim")))
    assert verifier.verify(bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE, jti="victim")), AUDIENCE)


# --- refused: the Authorization header itself ----------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Basic x",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Token abc.def.ghi",
        "Bearer abc",
        "Bearer a.b",
        "Bearer a.b.c.d.e",
        "Bearer e30.e30.",
        "Bearer !!!.???.***",
        "Bearer tökén.ëyJ.sig",
        "Bearer \u212aey.abc.def",
        "Bearer abc.def.ghi\r\nX-Injected: 1",
        "Bearer " + "a" * 9000 + ".b.c",
    ],
    ids=lambda value: repr(value)[:30],
)
def test_refuses_garbage_authorization_headers(verifier, header):
    refused(verifier, header)


def test_refuses_a_valid_token_without_the_bearer_scheme(verifier, es_key):
    token = mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)
    refused(verifier, token)
    refused(verifier, f"Basic {token}")
    refused(verifier, f"Bearer {token} {token}")


def test_tokens_never_reach_the_log(verifier, es_key, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = [
        mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE),
        mint_token(es_key, iss=REMOTE_ISS, aud="wrong"),
        mint_token(es_key, iss="https://evil.example.org", aud=AUDIENCE),
    ]
    for token in tokens:
        try:
            verifier.verify(bearer(token), AUDIENCE)
        except Unauthorized:
            pass
    for token in tokens:
        assert token not in caplog.text
        assert token.split(".")[2] not in caplog.text


# --- JWKS server trouble: fast Unauthorized, never a hang or a crash -------------------------------


def _verifier_for(url: str, timeout: float = 0.5) -> JwtVerifier:
    issuer = TrustedIssuer(REMOTE_ISS, jwks_url=url)
    return JwtVerifier([issuer], replay_cache=MemoryReplayCache(), jwks_timeout=timeout)


def _timed_refusal(verifier: JwtVerifier, key) -> float:
    started = time.monotonic()
    refused(verifier, bearer(mint_token(key, iss=REMOTE_ISS, aud=AUDIENCE)))
    return time.monotonic() - started


def test_jwks_server_down_gives_fast_unauthorized(es_key):
    server = JwksServer().serve(es_key).start()
    url = server.url
    server.stop()  # the port now refuses connections

    assert _timed_refusal(_verifier_for(url), es_key) < 1.0


def test_hung_jwks_server_is_bounded_by_the_timeout_then_backs_off(jwks_server, es_key):
    jwks_server.serve(es_key).delay = 10.0
    verifier = _verifier_for(jwks_server.url, timeout=0.5)

    assert _timed_refusal(verifier, es_key) < 1.5
    # While the server is known to be failing, calls do not wait for the timeout again.
    assert _timed_refusal(verifier, es_key) < 0.2
    assert jwks_server.hits == 1


def test_trickling_jwks_server_is_bounded_in_total(jwks_server, es_key):
    jwks_server.serve(es_key).trickle = 0.05  # every byte arrives well within the socket timeout
    assert _timed_refusal(_verifier_for(jwks_server.url, timeout=0.5), es_key) < 1.5


@pytest.mark.parametrize(
    "status, body",
    [
        (500, b'{"error": "boom"}'),
        (200, b"<html>not json</html>"),
        (200, b"[1, 2, 3]"),
        (200, b'{"keys": []}'),
        (200, b'{"keys": "nope"}'),
        (200, b'{"keys": [{"kty": "EC"}]}'),
        (200, b"[" * 100_000),
        (200, b'{"keys": ["' + b"x" * 300_000 + b'"]}'),
    ],
    ids=["500", "html", "array", "empty", "keys-string", "broken-key", "deep-json", "huge"],
)
def test_broken_jwks_answers_give_unauthorized(jwks_server, es_key, status, body):
    jwks_server.status, jwks_server.body = status, body
    refused(_verifier_for(jwks_server.url), bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)))


def test_redirects_from_the_jwks_url_are_not_followed(jwks_server, second_jwks_server, es_key):
    """A redirect would let the allow-listed URL hand key selection to another server."""
    second_jwks_server.serve(es_key)
    jwks_server.status, jwks_server.body = 302, b""
    # http.server sends no Location unless asked; a 3xx without one must fail just the same.
    refused(_verifier_for(jwks_server.url), bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)))
    assert second_jwks_server.requests == []


def test_verifier_recovers_when_the_jwks_server_comes_back(jwks_server, es_key, monkeypatch):
    import cds_service.security.jwks as auth

    monkeypatch.setattr(auth, "JWKS_FAILURE_BACKOFF_SECONDS", 0.0)  # don't wait 5 s in a test
    jwks_server.status = 503
    verifier = _verifier_for(jwks_server.url)
    refused(verifier, bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)))

    jwks_server.status = 200
    jwks_server.serve(es_key)
    assert verifier.verify(bearer(mint_token(es_key, iss=REMOTE_ISS, aud=AUDIENCE)), AUDIENCE)


# --- MemoryReplayCache ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_replay_cache_remembers_until_expiry_then_forgets():
    clock = FakeClock()
    cache = MemoryReplayCache(clock=clock)
    expires = clock.now + timedelta(minutes=5)

    assert cache.remember_jti("iss", "a", expires) is True
    assert cache.remember_jti("iss", "a", expires) is False
    assert cache.remember_jti("other-iss", "a", expires) is True  # jti is unique per issuer only
    assert len(cache) == 2

    clock.now = expires + timedelta(seconds=1)
    assert len(cache) == 0  # expired entries are purged
    assert cache.remember_jti("iss", "a", clock.now + timedelta(minutes=5)) is True


def test_replay_cache_is_atomic_across_threads():
    cache = MemoryReplayCache()
    expires = datetime.now(timezone.utc) + timedelta(minutes=5)
    results: list[bool] = []
    start = threading.Barrier(16)

    def remember() -> None:
        start.wait()
        results.append(cache.remember_jti("iss", "same", expires))

    threads = [threading.Thread(target=remember) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1


def test_replay_cache_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="timezone-aware"):
        MemoryReplayCache().remember_jti("iss", "a", datetime.now())


# --- configuration -------------------------------------------------------------------------------


NOT_ON_CURVE = {"kty": "EC", "kid": "k", "crv": "P-384", "x": "AA", "y": "AA"}


def write(tmp_path: Path, document) -> Path:
    path = tmp_path / "issuers.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_load_trusted_issuers_reads_both_kinds(tmp_path, rs_key):
    path = write(
        tmp_path,
        {
            "$comment": "test",
            "issuers": [
                {"iss": REMOTE_ISS, "jwks_url": "https://ehr.example.org/jwks.json", "tenants": ["a", "b"]},
                {"iss": INLINE_ISS, "jwks": jwks_of(rs_key)},
            ],
        },
    )
    remote, inline = load_trusted_issuers(str(path))

    assert remote == TrustedIssuer(REMOTE_ISS, jwks_url="https://ehr.example.org/jwks.json", tenants=("a", "b"))
    assert inline.iss == INLINE_ISS and inline.jwks == jwks_of(rs_key)


def test_sandbox_example_is_a_valid_opt_in_file():
    (sandbox,) = load_trusted_issuers(REPO / "docs/examples/trusted-issuers.sandbox.json")
    assert sandbox.iss == "https://sandbox.cds-hooks.org"
    assert sandbox.jwks_url == "https://sandbox.cds-hooks.org/.well-known/jwks.json"


@pytest.mark.parametrize(
    "document, message",
    [
        ("{not json", r"not valid JSON \(line 1"),
        ([], "expected a JSON object"),
        ({}, "expected a JSON object"),
        ({"issuers": []}, "at least one issuer"),
        ({"issuers": [{"iss": REMOTE_ISS}], "extra": 1}, "unknown top-level field"),
        ({"issuers": ["https://ehr.example.org"]}, r"issuers\[0\]: expected an object"),
        ({"issuers": [{"jwks_url": "https://x.example/jwks"}]}, r"issuers\[0\]: 'iss' is missing"),
        ({"issuers": [{"iss": "", "jwks_url": "https://x.example/jwks"}]}, "non-empty string"),
        ({"issuers": [{"iss": REMOTE_ISS}]}, "exactly one of 'jwks_url' or 'jwks'"),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks_url": "https://x.example/j", "jwks": {"keys": []}}]}, "exactly one"),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks_uri": "https://x.example/j"}]}, r"unknown field\(s\) \['jwks_uri'\]"),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks_url": "file:///etc/passwd"}]}, "absolute http"),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks_url": "https:///no-host"}]}, "absolute http"),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks_url": "/relative/jwks.json"}]}, "absolute http"),
        (
            {"issuers": [{"iss": REMOTE_ISS, "jwks_url": "https://x.example/j", "tenants": "labs"}]},
            "'tenants' must be a list",
        ),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks": {"keys": []}}]}, "at least one key"),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks": [1]}]}, "at least one key"),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks": {"keys": [oct_jwk(b"k" * 48, "k")]}}]}, "symmetric"),
        ({"issuers": [{"iss": REMOTE_ISS, "jwks": {"keys": [{"kty": "EC", "crv": "P-384"}]}}]}, "'kid' is missing"),
        (
            {"issuers": [{"iss": REMOTE_ISS, "jwks": {"keys": [NOT_ON_CURVE]}}]},
            "not a usable public key",
        ),
        (
            {
                "issuers": [
                    {"iss": REMOTE_ISS, "jwks_url": "https://a.example/j"},
                    {"iss": REMOTE_ISS, "jwks_url": "https://b.example/j"},
                ]
            },
            "listed twice",
        ),
    ],
    ids=lambda value: None if not isinstance(value, str) else value[:25],
)
def test_load_trusted_issuers_explains_bad_files(tmp_path, document, message):
    path = write(tmp_path, document)
    with pytest.raises(ValueError, match=message) as caught:
        load_trusted_issuers(path)
    assert str(path) in str(caught.value)


def test_load_trusted_issuers_refuses_private_and_duplicate_keys(tmp_path):
    private = generate_key("ES384", "k")
    from jwt.algorithms import ECAlgorithm

    private_jwk = {**ECAlgorithm.to_jwk(private.private_key, as_dict=True), "kid": "k"}
    with pytest.raises(ValueError, match="private key material"):
        load_trusted_issuers(write(tmp_path, {"issuers": [{"iss": REMOTE_ISS, "jwks": {"keys": [private_jwk]}}]}))

    public = private.public_jwk()
    with pytest.raises(ValueError, match="appears twice"):
        load_trusted_issuers(write(tmp_path, {"issuers": [{"iss": REMOTE_ISS, "jwks": {"keys": [public, public]}}]}))


def test_load_trusted_issuers_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read trusted issuers file"):
        load_trusted_issuers(tmp_path / "absent.json")


def test_verifier_refuses_empty_or_duplicate_issuer_lists():
    with pytest.raises(ValueError, match="at least one"):
        JwtVerifier([], replay_cache=MemoryReplayCache())
    issuer = TrustedIssuer(REMOTE_ISS, jwks_url="https://ehr.example.org/jwks.json")
    with pytest.raises(ValueError, match="listed twice"):
        JwtVerifier([issuer, issuer], replay_cache=MemoryReplayCache())


@pytest.mark.parametrize("header", ["c2stbGl2ZS1hcGkta2V5LTEyMzQ1Njc4OTAtc2VjcmV0LXZhbHVlLXRoYXQtaXMtbG9uZw",
                                    "Basic dXNlcjpzM2NyZXQ=", "ApiKey sk_live_0123456789abcdef", "s3cretpassword"])
def test_a_non_bearer_authorization_value_is_never_in_the_refusal_or_the_log(verifier, header, caplog):
    # The refusal's message is what the web layer logs: it must name no part of the value,
    # which may be a password or an API key sent to the wrong place (issue 13).
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Unauthorized) as refusal:
        verifier.verify(header, AUDIENCE)
    words = {word for word in header.replace("=", " ").split() if len(word) >= 4}
    for word in words | {header}:
        assert word not in refusal.value.message
        assert word not in caplog.text
