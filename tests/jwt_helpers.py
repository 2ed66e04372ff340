"""Real CDS Hooks JWTs for tests: signing keys, token minting and a JWKS server on loopback.

Everything here uses real cryptography and real HTTP, so tests exercise the same code paths as
production. Typical use::

    from tests.jwt_helpers import JwksServer, generate_key, mint_token, bearer, jwks_server  # fixture

    def test_call(jwks_server):
        key = generate_key("ES384")
        jwks_server.serve(key)
        issuer = TrustedIssuer("https://ehr.example.org", jwks_url=jwks_server.url)
        token = mint_token(key, iss=issuer.iss, aud="http://127.0.0.1:8080/cds-services/x")
        client.post(..., headers={"Authorization": bearer(token)})

``jwks_server`` and ``second_jwks_server`` are pytest fixtures; import them into a test module
(or list this module in ``pytest_plugins``) to use them. Outside pytest, use
``with JwksServer() as server: ...``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

JWKS_PATH = "/.well-known/jwks.json"

_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


# --- keys and tokens -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A private key with the ``kid`` and ``alg`` a CDS Client would sign with."""

    kid: str
    alg: str
    private_key: Any

    @property
    def public_key(self) -> Any:
        return self.private_key.public_key()

    def public_jwk(self, *, with_alg: bool = True) -> dict:
        """The public half as a JWK (``kid``, ``use: sig`` and, unless ``with_alg=False``, ``alg``)."""
        algorithm = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        jwk = algorithm.to_jwk(self.public_key, as_dict=True)
        jwk.update(kid=self.kid, use="sig")
        if with_alg:
            jwk["alg"] = self.alg
        return jwk

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_key(alg: str = "ES384", kid: str | None = None, *, rsa_bits: int = 2048) -> SigningKey:
    """A fresh key pair for ``alg`` (ES256/ES384/ES512 or RS256/RS384/RS512/PS*)."""
    kid = kid or f"{alg.lower()}-{uuid.uuid4()}"
    if alg in _CURVES:
        return SigningKey(kid, alg, ec.generate_private_key(_CURVES[alg]()))
    if alg.startswith(("RS", "PS")):
        return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits))
    raise ValueError(f"no key generator for {alg}")


def jwks_of(*keys: SigningKey, with_alg: bool = True) -> dict:
    """A JWKS document ``{"keys": [...]}`` with the public halves of ``keys``."""
    return {"keys": [key.public_jwk(with_alg=with_alg) for key in keys]}


def cds_claims(
    *,
    iss: str,
    aud: str | list[str],
    lifetime: int = 300,
    issued_at: float | None = None,
    jti: str | None = None,
    **extra: Any,
) -> dict:
    """The claims a CDS Hooks 2.0 client sends: iss, aud, exp, iat, jti (+ e.g. ``tenant``).

    ``issued_at`` defaults to now; ``exp`` is ``issued_at + lifetime`` (the sandbox uses 300 s).
    """
    iat = int(time.time() if issued_at is None else issued_at)
    claims = {"iss": iss, "aud": aud, "exp": iat + lifetime, "iat": iat, "jti": jti or str(uuid.uuid4())}
    claims.update(extra)
    return claims


def mint_token(
    key: SigningKey,
    *,
    iss: str,
    aud: str | list[str],
    lifetime: int = 300,
    issued_at: float | None = None,
    jti: str | None = None,
    extra_claims: dict | None = None,
    omit: Iterable[str] = (),
    headers: dict | None = None,
    alg: str | None = None,
) -> str:
    """A signed CDS Hooks JWT.

    The header is ``{"alg": key.alg, "typ": "JWT", "kid": key.kid}``, updated with ``headers``; a
    header value of ``None`` removes that member (e.g. ``headers={"kid": None}``). ``omit`` drops
    claims, ``extra_claims`` adds or overrides them. ``alg`` signs with another algorithm than the
    key's default (e.g. RS256 with an RS384 key).
    """
    claims = cds_claims(iss=iss, aud=aud, lifetime=lifetime, issued_at=issued_at, jti=jti)
    claims.update(extra_claims or {})
    for name in omit:
        claims.pop(name, None)
    header = {"typ": "JWT", "kid": key.kid, **(headers or {})}
    # PyJWT drops a falsy "typ" itself (and would add its default if "typ" were absent).
    header = {name: value for name, value in header.items() if value is not None or name == "typ"}
    return jwt.encode(claims, key.private_key, algorithm=alg or key.alg, headers=header, sort_headers=False)


def raw_token(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A compact JWS assembled by hand, e.g. ``alg: none`` or any header PyJWT would not emit."""
    return f"{_b64(_json(header))}.{_b64(_json(claims))}.{_b64(signature)}"


def hmac_token(secret: bytes, header: dict, claims: dict) -> str:
    """An HS256/HS384/HS512 token (per ``header["alg"]``) signed by hand with ``secret``.

    Made without PyJWT because PyJWT rightly refuses a PEM public key as an HMAC secret, which is
    exactly the key-confusion attack tests need to show is refused.
    """
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[header["alg"]]
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}"
    signature = hmac.new(secret, signing_input.encode("ascii"), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def forged_token(key: SigningKey, header: dict, claims: dict) -> str:
    """A token signed with ``key`` using the hash ``header["alg"]`` names, with no sanity checks.

    For tokens PyJWT refuses to produce, e.g. a P-256 key signing "ES384" (SHA-384 over P-256).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    digest = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}[header["alg"][-3:]]()
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}".encode("ascii")
    if isinstance(key.private_key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.private_key.sign(signing_input, ec.ECDSA(digest)))
        size = (key.private_key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        signature = key.private_key.sign(signing_input, padding.PKCS1v15(), digest)
    return f"{signing_input.decode('ascii')}.{_b64(signature)}"


def oct_jwk(secret: bytes, kid: str) -> dict:
    """A symmetric JWK, to put in a JWKS served over HTTP (the verifier must never use it)."""
    return {"kty": "oct", "k": _b64(secret), "kid": kid, "use": "sig"}


def bearer(token: str) -> str:
    """The ``Authorization`` header value for ``token``."""
    return f"Bearer {token}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


# --- JWKS server on loopback ---------------------------------------------------------------------


class JwksServer:
    """A JWKS endpoint on ``http://127.0.0.1:<port>/.well-known/jwks.json`` that records every request.

    Attributes tests may change at any time:

    ``jwks``
        the document served (set it, or call :meth:`serve`, to rotate keys);
    ``status`` / ``body``
        answer with another status, or with raw bytes instead of ``jwks``;
    ``delay``
        seconds to wait before answering (simulates a hung server; cut short by :meth:`stop`);
    ``trickle``
        seconds between single bytes of the body (simulates a server that is slow, not dead).

    ``requests`` lists the paths requested, in order: use it to assert that a URL was (not) fetched.
    """

    def __init__(self, jwks: dict | None = None):
        self.jwks: dict = jwks if jwks is not None else {"keys": []}
        self.status = 200
        self.body: bytes | None = None
        self.delay = 0.0
        self.trickle = 0.0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # Answering threads may be asleep in a delay; never let them hold up shutdown.
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.handle_error = lambda request, address: None  # a client gave up; not a test failure
        # A short poll interval makes stop() (hence fixture teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="jwks-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def url(self) -> str:
        """The JWKS URL, as written in a trusted-issuers file."""
        return self.base_url + JWKS_PATH

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def serve(self, *keys: SigningKey, extra: Iterable[dict] = ()) -> "JwksServer":
        """Serve the public halves of ``keys`` plus raw JWKs in ``extra``."""
        self.jwks = {"keys": [key.public_jwk() for key in keys] + list(extra)}
        return self

    def start(self) -> "JwksServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; afterwards the port refuses connections (a JWKS server that is down)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> "JwksServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _record(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)


def _handler_for(server: JwksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            server._record(self.path)
            if server.delay and server._stopping.wait(server.delay):
                return
            if self.path != JWKS_PATH:
                status, body = 404, b'{"error": "not found"}'
            else:
                status = server.status
                body = server.body if server.body is not None else json.dumps(server.jwks).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._write(body)

        def _write(self, body: bytes) -> None:
            if not server.trickle:
                self.wfile.write(body)
                return
            for index in range(len(body)):
                if server._stopping.wait(server.trickle):
                    return
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

    return Handler


@pytest.fixture
def jwks_server():
    """A running :class:`JwksServer` (empty key set until the test calls ``serve``)."""
    with JwksServer() as server:
        yield server


@pytest.fixture
def second_jwks_server():
    """Another running :class:`JwksServer`, e.g. a foreign ``jku`` that must never be fetched."""
    with JwksServer() as server:
        yield server
