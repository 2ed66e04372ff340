"""A small read-only FHIR R4 server on loopback that serves fixture resources.

Used by the tests (real HTTP, no mocking), by ``replay`` and for sandbox demos: the public CDS
Hooks sandbox can be pointed at it with ``?fhirServiceUrl=http%3A%2F%2F127.0.0.1%3A8081``
(it needs ``/metadata``, ``GET /Patient``, ``/Patient/{id}``, searches and ``POST /{type}/_search``,
all with CORS headers; see sandbox-pama-contract.md section 1.4).

Interactions:

* ``GET /metadata`` → CapabilityStatement (``fhirVersion`` 4.0.1);
* ``GET /{type}/{id}`` → the resource, or 404 with an OperationOutcome;
* ``GET /{type}?…`` and ``POST /{type}/_search`` (form-encoded) → a ``searchset`` Bundle.
  Supported parameters: see :mod:`cds_service.devtools.fhir_search`;
* ``OPTIONS`` → 204 with CORS headers; every answer carries ``Access-Control-Allow-Origin: *``.

Every request is recorded (:attr:`FixtureFhirServer.requests`: method, path, query, parsed
parameters, headers including ``Authorization``, body) for tests to assert on. Per path prefix,
:meth:`FixtureFhirServer.configure` can delay answers, answer a failure status, replace the body
(non-JSON, oversize, a crafted Bundle), add headers (``Location`` for a redirect), omit
``Content-Length`` or drip the body slowly.

Python API::

    with FixtureFhirServer(resources) as server:
        server.base_url            # "http://127.0.0.1:<ephemeral port>"
        server.requests            # list of RecordedRequest

CLI: ``python -m cds_service.devtools.fixture_fhir_server --port 8081 fhir_fixtures/``
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs, quote, urlsplit

from cds_service.devtools.fhir_search import (PATIENT_ELEMENTS, TOKEN_ELEMENTS, flatten, included, int_param,
                                              load_resources, operation_outcome, page_url, reference_matches,
                                              searchset, token_matches)

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json; charset=utf-8"
MAX_REQUEST_BODY = 1024 * 1024
DEFAULT_PAGE_SIZE = 100
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, Accept, Prefer",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Max-Age": "600",
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str                                # without the query string, e.g. "/Condition/_search"
    query: str                               # raw query string ("" if none)
    params: dict[str, list[str]]             # query parameters, plus form parameters of a POST
    headers: dict[str, str]
    body: bytes = b""

    @property
    def target(self) -> str:
        return self.path + ("?" + self.query if self.query else "")

    def header(self, name: str) -> str | None:
        """Header value by case-insensitive name."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@dataclass
class Behaviour:
    """How to answer requests under a path prefix (for failure tests)."""

    delay_seconds: float = 0.0               # sleep before answering
    fail_status: int | None = None           # answer this status (an OperationOutcome unless ``body`` is set)
    body: bytes | str | Mapping | list | None = None   # replaces the answer's body (status 200 unless fail_status)
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    send_length: bool = True                 # False: no Content-Length, connection closed after the body
    drip_interval: float = 0.0               # > 0: send the body in ``drip_bytes`` pieces with pauses
    drip_bytes: int = 16


class FixtureFhirServer:
    """Read-only FHIR R4 server over fixture resources, on a background thread."""

    def __init__(
        self,
        resources: Iterable[Mapping] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        public_base_url: str | None = None,
        behaviours: Mapping[str, Behaviour] | None = None,
    ):
        self.host = host
        self.port = port
        self._public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._lock = threading.Lock()
        self._resources: dict[tuple[str, str], dict] = {}
        self._requests: list[RecordedRequest] = []
        self._behaviours: dict[str, Behaviour] = dict(behaviours or {})
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.add(resources)

    # -- data --------------------------------------------------------------------------------

    def add(self, resources: Iterable[Mapping] | Mapping) -> None:
        """Add resources or Bundles (flattened); a resource with the same type and id is replaced."""
        if isinstance(resources, Mapping):
            resources = [resources]
        with self._lock:
            for resource in flatten(resources):
                resource_type = resource["resourceType"]
                if not isinstance(resource.get("id"), str):
                    count = sum(1 for t, _ in self._resources if t == resource_type)
                    resource["id"] = f"{resource_type.lower()}-{count + 1}"
                self._resources[(resource_type, resource["id"])] = resource

    @property
    def resources(self) -> list[dict]:
        with self._lock:
            return list(self._resources.values())

    # -- behaviours and request log ----------------------------------------------------------

    def configure(self, path_prefix: str, **settings: Any) -> Behaviour:
        """Set how requests whose path starts with ``path_prefix`` are answered (see :class:`Behaviour`)."""
        behaviour = Behaviour(**settings)
        with self._lock:
            self._behaviours[path_prefix] = behaviour
        return behaviour

    def clear_behaviours(self) -> None:
        with self._lock:
            self._behaviours.clear()

    def behaviour_for(self, path: str) -> Behaviour | None:
        with self._lock:
            matches = [p for p in self._behaviours if path.startswith(p)]
            return self._behaviours[max(matches, key=len)] if matches else None

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._public_base_url:
            return self._public_base_url
        if self._httpd is None:
            raise RuntimeError("server not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "FixtureFhirServer":
        if self._httpd is not None:
            return self
        handler = type("BoundHandler", (_Handler,), {"fixture": self})
        server_class = _IPv6Server if ":" in self.host else _Server
        self._httpd = server_class((self.host, self.port), handler)
        self.port = self._httpd.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fixture-fhir-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "FixtureFhirServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when the server stops."""
        self._stopping.wait(seconds)

    # -- FHIR interactions -------------------------------------------------------------------

    def capability_statement(self) -> dict:
        with self._lock:
            known = {t for t, _ in self._resources}
        types = sorted(known | {"Patient", "Condition", "Observation"})
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-01-01",
            "kind": "instance",
            "software": {"name": "onc-imaging-cds fixture FHIR server"},
            "implementation": {"description": "Read-only fixture data", "url": self.base_url},
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json", "json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": t,
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                {"name": name, "type": "reference" if name in ("patient", "subject") else "token"}
                                for name in ("_id", "patient", "subject", *TOKEN_ELEMENTS)
                            ],
                        }
                        for t in types
                    ],
                }
            ],
        }

    def read(self, resource_type: str, resource_id: str) -> dict | None:
        with self._lock:
            return self._resources.get((resource_type, resource_id))

    def search(self, resource_type: str, params: Mapping[str, list[str]]) -> dict:
        def values(name: str) -> list[str]:
            return [v for raw in params.get(name, []) for v in raw.split(",") if v]

        with self._lock:
            matches = [r for (t, _), r in self._resources.items() if t == resource_type]
        ids = values("_id")
        if ids:
            matches = [r for r in matches if r.get("id") in ids]
        for name in PATIENT_ELEMENTS:
            wanted = values(name)
            if wanted:
                if resource_type == "Patient":
                    bare = [w.rsplit("/", 1)[-1] for w in wanted]
                    matches = [r for r in matches if r.get("id") in bare]
                else:
                    matches = [r for r in matches if any(reference_matches(r.get(e), wanted) for e in PATIENT_ELEMENTS)]
        for name, element in TOKEN_ELEMENTS.items():
            wanted = values(name)
            if wanted:
                matches = [r for r in matches if token_matches(r.get(element), wanted)]

        total = len(matches)
        count = int_param(params, "_count", DEFAULT_PAGE_SIZE, minimum=0)
        offset = int_param(params, "_offset", 0, minimum=0)
        page = matches[offset : offset + count]
        kept = {k: v for k, v in params.items() if k not in ("_offset",)}
        base = f"{self.base_url}/{resource_type}"
        links = [{"relation": "self", "url": page_url(base, kept, offset)}]
        if count and offset + count < total:
            links.append({"relation": "next", "url": page_url(base, kept, offset + count)})
        return searchset(self.base_url, page, included(page, params, self.read), total, links)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The service sends all its prefetch queries at once; the default backlog of 5 would drop the
    # rest and make them wait for TCP's retry, as no real FHIR server does.
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away (timeouts in tests): not an error of the fixture
        super().handle_error(request, client_address)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out in separate writes; without TCP_NODELAY a kept-alive client waits
    # for the delayed ACK (~40 ms) on every answer.
    disable_nagle_algorithm = True
    fixture: FixtureFhirServer  # set on the bound subclass
    protocol_version = "HTTP/1.1"
    server_version = "FixtureFHIR/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.command, self.path.split("?", 1)[0])

    # -- dispatch ----------------------------------------------------------------------------

    def do_OPTIONS(self) -> None:
        self._record(b"")
        self._send(204, b"", None)

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_REQUEST_BODY:
            self._record(b"")
            self._send_json(413, operation_outcome("too-costly", "request body too large"))
            return
        self._handle(self.rfile.read(int(length)))

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def _not_allowed(self) -> None:
        self._record(b"")
        self.close_connection = True
        self._send_json(405, operation_outcome("not-supported", "this fixture server is read-only"))

    def _record(self, body: bytes) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        params = parse_qs(parts.query, keep_blank_values=True)
        content_type = self.headers.get("Content-Type", "")
        if self.command == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            for key, vals in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
                params.setdefault(key, []).extend(vals)
        self.fixture._record(
            RecordedRequest(
                method=self.command,
                path=parts.path,
                query=parts.query,
                params=params,
                headers=dict(self.headers.items()),
                body=body,
            )
        )
        return parts.path, params

    def _handle(self, body: bytes) -> None:
        path, params = self._record(body)
        behaviour = self.fixture.behaviour_for(path)
        if behaviour is not None:
            if behaviour.delay_seconds:
                self.fixture.sleep(behaviour.delay_seconds)
            if behaviour.fail_status is not None or behaviour.body is not None:
                self._send_override(behaviour)
                return
        status, document = self._answer(path, params)
        self._send_json(status, document, behaviour)

    def _answer(self, path: str, params: dict[str, list[str]]) -> tuple[int, dict]:
        segments = [s for s in path.split("/") if s]
        fixture = self.fixture
        if self.command == "GET" and segments == ["metadata"]:
            return 200, fixture.capability_statement()
        if not segments or not segments[0][:1].isupper():
            return 404, operation_outcome("not-found", "unknown path")
        resource_type = segments[0]
        if self.command == "POST":
            if len(segments) == 2 and segments[1] == "_search":
                return 200, fixture.search(resource_type, params)
            return 405, operation_outcome("not-supported", "this fixture server is read-only")
        if len(segments) == 1:
            return 200, fixture.search(resource_type, params)
        if len(segments) == 2:
            resource = fixture.read(resource_type, segments[1])
            if resource is None:
                return 404, operation_outcome("not-found", f"{resource_type}/{segments[1]} is not known")
            return 200, resource
        return 404, operation_outcome("not-supported", "unsupported interaction")

    # -- responses ---------------------------------------------------------------------------

    def _send_override(self, behaviour: Behaviour) -> None:
        status = behaviour.fail_status or 200
        body = behaviour.body
        content_type = behaviour.content_type
        if body is None:
            body = operation_outcome("exception", f"simulated failure {status}")
        if isinstance(body, (Mapping, list)):
            payload = json.dumps(body).encode("utf-8")
            content_type = content_type or FHIR_JSON
        elif isinstance(body, str):
            payload = body.encode("utf-8")
            content_type = content_type or "text/plain; charset=utf-8"
        else:
            payload = bytes(body)
            content_type = content_type or "application/octet-stream"
        self._send(status, payload, content_type, behaviour)

    def _send_json(self, status: int, document: dict, behaviour: Behaviour | None = None) -> None:
        self._send(status, json.dumps(document).encode("utf-8"), FHIR_JSON, behaviour)

    def _send(self, status: int, payload: bytes, content_type: str | None, behaviour: Behaviour | None = None) -> None:
        self.send_response(status)
        for name, value in CORS_HEADERS.items():
            self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        send_length = behaviour.send_length if behaviour else True
        if send_length:
            self.send_header("Content-Length", str(len(payload)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        for name, value in (behaviour.headers if behaviour else {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD" or not payload:
            return
        if behaviour and behaviour.drip_interval > 0:
            step = max(1, behaviour.drip_bytes)
            for start in range(0, len(payload), step):
                self.wfile.write(payload[start : start + step])
                self.wfile.flush()
                self.fixture.sleep(behaviour.drip_interval)
                if self.fixture._stopping.is_set():
                    self.close_connection = True
                    return
        else:
            self.wfile.write(payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cds_service.devtools.fixture_fhir_server",
        description="Serve FHIR fixture resources/Bundles read-only over HTTP (loopback by default).",
    )
    parser.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="JSON resources or Bundles; directories are read recursively")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (default 8081; 0 = any free port)")
    parser.add_argument(
        "--public-base-url",
        default=None,
        help="base URL used in fullUrl and link[next] when the server is reached through a proxy or tunnel",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request (method and path)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        resources = load_resources(args.paths)
    except ValueError as exc:
        parser.error(str(exc))
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("binding %s: the fixture server has no authentication; expose only test data", args.host)
    server = FixtureFhirServer(resources, host=args.host, port=args.port, public_base_url=args.public_base_url)
    server.start()
    patients = sorted(r["id"] for r in server.resources if r["resourceType"] == "Patient")
    log.info("serving %d resources at %s (patients: %s)", len(resources), server.base_url, ", ".join(patients) or "none")
    log.info("sandbox: ?fhirServiceUrl=%s", quote(server.base_url, safe=""))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
