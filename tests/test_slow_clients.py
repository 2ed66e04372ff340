"""Slow clients against the documented production server: gunicorn behind nginx (deploy/run-production.sh).

A slow client opens a connection and trickles its request header, or a complete header and then its
body, a byte at a time. gunicorn's gthread worker gives each such connection one of its threads
until the request is complete, with no read timeout, so a handful of them stop the server
(issue 13: four did it to 2 workers x 2 threads). The production front reads requests itself, with
deadlines, and hands gunicorn only complete ones.

Both tests run the same attack — 64 connections trickling headers and 16 trickling bodies, reopened
whenever the server drops them — while a clinician's order-select is sent every half second with a
real JWT, in production mode:

* through nginx, every call must answer 200 in under 2 s;
* straight at gunicorn's socket (the control: the attack is real), calls are stalled.

nginx is installed by ``.ci/nginx.sh``; without it the tests are skipped, except in CI.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port
from tests.jwt_helpers import bearer, generate_key, jwks_of, mint_token
from tests.sandbox_requests import SELECT_ID, order_select, pama_ratings
from tests.service_process import REPO, ServiceProcess, clean_env

ISSUER = "https://ehr.example.org"
BONE_SCAN, BREAST_HISTORY = "78306", "415076002"
SLOW_HEADERS, SLOW_BODIES = 64, 16
LATENCY_LIMIT = 2.0


def _nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


@dataclass
class Front:
    url: str
    socket_path: str
    key: object
    server: ServiceProcess

    def valid_call(self) -> tuple[dict, dict]:
        """An order-select body and the headers of a fresh, correctly signed JWT for it."""
        token = mint_token(self.key, iss=ISSUER, aud=f"{self.url}/cds-services/{SELECT_ID}")
        return order_select(BONE_SCAN, [BREAST_HISTORY]), {"Authorization": bearer(token)}


@pytest.fixture(scope="module")
def front():
    nginx = _nginx()
    if nginx is None:
        message = "nginx is not installed (bash .ci/nginx.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must run the production-front tests")
        pytest.skip(message)
    # Under /tmp and world-traversable: nginx workers run as nobody when the tests run as root.
    runtime = Path(tempfile.mkdtemp(prefix="cds-front-", dir="/tmp"))
    runtime.chmod(0o755)
    key = generate_key("ES384")  # CDS Hooks 2.0: ES384 or RS384
    issuers = runtime / "trusted-issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks": jwks_of(key)}]}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        CDS_MODE="production", CDS_PUBLIC_BASE_URL=url, CDS_TRUSTED_ISSUERS_FILE=str(issuers),
        CDS_CORS_ORIGINS="https://ehr.example.org", CDS_DATABASE_URL=f"sqlite:///{runtime / 'audit.sqlite3'}",
        CDS_LOG_LEVEL="WARNING", WEB_CONCURRENCY="2", CDS_PROXY_LISTEN=f"127.0.0.1:{port}",
        CDS_RUNTIME_DIR=str(runtime), PYTHON=sys.executable, NGINX=nginx,
    )
    server = ServiceProcess(["bash", str(REPO / "deploy" / "run-production.sh")], env, runtime, runtime / "server.log")
    try:
        server.wait_ready(url)
        yield Front(url, str(runtime / "gunicorn.sock"), key, server)
    finally:
        server.stop()
        shutil.rmtree(runtime, ignore_errors=True)


# --- the attack ----------------------------------------------------------------------------------


@dataclass
class SlowLoris:
    """One thread keeping ``headers`` + ``bodies`` trickling connections open against ``connect()``."""

    connect: object
    headers: int = SLOW_HEADERS
    bodies: int = SLOW_BODIES
    tick: float = 0.25
    opened: int = 0
    dropped_by_server: int = 0
    _sockets: list = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _open(self, slow_body: bool) -> socket.socket | None:
        try:
            sock = self.connect()
            if slow_body:
                sock.sendall(f"POST /cds-services/{SELECT_ID} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n{".encode())
            else:
                sock.sendall(f"POST /cds-services/{SELECT_ID} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
        except OSError:
            return None
        sock.setblocking(False)
        self.opened += 1
        return sock

    def _trickle(self, index: int) -> None:
        sock, slow_body = self._sockets[index]
        try:
            if sock is None:
                raise ConnectionError
            sock.send(b" " if slow_body else b"a")
            try:  # the server answered (408) or closed: reopen, as an attacker would
                if sock.recv(4096) == b"":
                    raise ConnectionError
                raise ConnectionError
            except BlockingIOError:
                return
        except OSError:
            if sock is not None:
                self.dropped_by_server += 1
                sock.close()
            self._sockets[index] = (self._open(slow_body), slow_body)

    def _run(self) -> None:
        while not self._stop.is_set():
            for index in range(len(self._sockets)):
                self._trickle(index)
            self._stop.wait(self.tick)

    def __enter__(self) -> "SlowLoris":
        self._sockets = [(self._open(False), False) for _ in range(self.headers)]
        self._sockets += [(self._open(True), True) for _ in range(self.bodies)]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(1.0)  # every connection has sent bytes and sits in the server
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock, _ in self._sockets:
            if sock is not None:
                sock.close()


def _tcp(port: int):
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=1)


def _unix(path: str):
    def connect():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(1)
        sock.connect(path)
        return sock
    return connect


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("127.0.0.1", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = _unix(self._path)()
        self.sock.settimeout(self.timeout)


def _call_over_unix(path: str, body: dict, headers: dict, timeout: float) -> tuple[int, dict]:
    connection = _UnixConnection(path, timeout)
    try:
        connection.request("POST", f"/cds-services/{SELECT_ID}", body=json.dumps(body),
                           headers={"Content-Type": "application/json", **headers})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def _timed_calls(call, seconds: float, timeout: float) -> list[tuple[float, str]]:
    """Valid calls, one every 0.5 s for ``seconds``: (latency, outcome) each, outcome "200" or the error."""
    results = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            status, answer = call(timeout)
            outcome = str(status)
            if status == 200 and pama_ratings(answer) != [["not-appropriate", "usually-not-appropriate"]]:
                outcome = "200 without the rating"
        except (OSError, requests.RequestException) as error:
            outcome = type(error).__name__
        results.append((time.monotonic() - started, outcome))
        time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    return results


def _report(label: str, attack: SlowLoris, results: list[tuple[float, str]]) -> None:
    latencies = ", ".join(f"{latency:.2f}s/{outcome}" for latency, outcome in results)
    print(f"\n{label}: {attack.headers} slow-header + {attack.bodies} slow-body connections "
          f"(opened {attack.opened}, dropped by the server {attack.dropped_by_server}); calls: {latencies}")


# --- the tests -----------------------------------------------------------------------------------


def test_valid_calls_answer_within_two_seconds_behind_the_proxy_during_a_slow_client_attack(front):
    port = int(front.url.rsplit(":", 1)[1])

    def call(timeout):
        body, headers = front.valid_call()
        answer = requests.post(f"{front.url}/cds-services/{SELECT_ID}", json=body, headers=headers, timeout=timeout)
        return answer.status_code, answer.json()

    # Longer than nginx's 5 s header deadline, so the attack's reconnections are part of it.
    with SlowLoris(_tcp(port)) as attack:
        results = _timed_calls(call, seconds=7.0, timeout=LATENCY_LIMIT + 1)
        still_attacking = attack.opened
    _report("behind nginx", attack, results)
    assert front.server.alive()
    assert still_attacking >= SLOW_HEADERS + SLOW_BODIES
    assert [outcome for _, outcome in results] == ["200"] * len(results)
    assert max(latency for latency, _ in results) < LATENCY_LIMIT


def test_the_same_attack_stalls_gunicorn_without_the_proxy(front):
    """The control: the attack above, sent straight to gunicorn's socket, does stop valid calls."""

    def call(timeout):
        body, headers = front.valid_call()
        return _call_over_unix(front.socket_path, body, headers, timeout)

    before = _timed_calls(call, seconds=0.1, timeout=5)
    assert before[0][1] == "200", "gunicorn answers directly before the attack"
    with SlowLoris(_unix(front.socket_path)) as attack:
        results = _timed_calls(call, seconds=6.0, timeout=LATENCY_LIMIT)
    _report("bare gunicorn (2 workers x 2 threads)", attack, results)
    stalled = [outcome for latency, outcome in results if outcome != "200" or latency >= LATENCY_LIMIT]
    assert stalled, "the slow clients did not stall bare gunicorn: the attack would prove nothing"
    # And it recovers once the slow clients are gone.
    after = _timed_calls(call, seconds=0.1, timeout=10)
    assert after[0][1] == "200"
