"""Shared fixtures: the app, a real HTTP server on loopback, and schema-checking clients.

Every CDS Hooks response any test receives — through the Flask test client or over real HTTP — is
validated against the JSON Schemas in ``cds_service/hooks/schemas`` and checked for ``null`` and empty
optional fields, so the contract is enforced by the whole suite, not by one test.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from cds_service.server.app import create_app
from cds_service.config import Settings
from cds_service.hooks.schemas import problems

pytest_plugins = ["tests.pg_harness"]


def assert_cds_document(path: str, method: str, status: int, body) -> None:
    """Schema-check a CDS Hooks answer (discovery or service response)."""
    if status != 200 or not path.startswith("/cds-services"):
        return
    if method == "GET" and path.rstrip("/") == "/cds-services":
        found = problems("discovery", body)
    elif method == "POST" and not path.endswith("/feedback"):
        found = problems("response", body)
        _assert_no_empty_values(body, "response")
    else:
        return
    assert not found, f"{method} {path} answered outside the CDS Hooks schema: {found}"


def _assert_no_empty_values(value, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}"
            assert item is not None, f"{here} is null"
            if here != "response.cards":
                assert item not in ([], {}, ""), f"{here} is empty"
            _assert_no_empty_values(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _assert_no_empty_values(item, f"{where}[{index}]")


class SchemaCheckingClient(FlaskClient):
    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        request = response.request
        if response.is_json:
            assert_cds_document(request.path, request.method, response.status_code, response.get_json())
        return response


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(mode="development", database_url=f"sqlite:///{tmp_path}/cds.sqlite3", log_level="WARNING")


@pytest.fixture
def app(settings):
    app = create_app(settings)
    app.test_client_class = SchemaCheckingClient
    yield app
    app.extensions["cds"].store.close()


@pytest.fixture
def client(app):
    return app.test_client()


class LiveServer:
    """The app behind a real threaded HTTP server on 127.0.0.1, plus a schema-checking session."""

    def __init__(self, app, port: int = 0):
        self.app = app
        self._server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.session = requests.Session()
        self.session.hooks["response"].append(self._check)

    def _check(self, response, *args, **kwargs):
        path = requests.utils.urlparse(response.url).path
        if response.headers.get("Content-Type", "").startswith("application/json"):
            assert_cds_document(path, response.request.method, response.status_code, response.json())

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._thread.join(timeout=5)
        self.session.close()

    def post(self, path: str, json=None, **kwargs):
        return self.session.post(self.url + path, json=json, timeout=10, **kwargs)

    def get(self, path: str, **kwargs):
        return self.session.get(self.url + path, timeout=10, **kwargs)


@pytest.fixture
def live_server(app):
    server = LiveServer(app).start()
    yield server
    server.stop()


def free_port() -> int:
    """A loopback port that is free now (for servers whose public URL must be known up front)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def make_live_server(tmp_path):
    """Start extra servers with their own settings (JWT, allow-lists, PostgreSQL …)."""
    started = []

    def start(settings: Settings | None = None, *, port: int = 0, **overrides) -> LiveServer:
        base = settings or Settings(
            mode="development", database_url=f"sqlite:///{tmp_path}/live-{len(started)}.sqlite3", log_level="WARNING"
        )
        app = create_app(replace(base, **overrides) if overrides else base)
        server = LiveServer(app, port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.app.extensions["cds"].store.close()
