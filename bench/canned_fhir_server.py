"""A FHIR server for benchmarks that answers every query in a fixed time, in its own process.

The FHIR-fallback goal is about *our* side: "with a FHIR server answering in 20 ms". The fixture
FHIR server (``cds_service.devtools.fixture_fhir_server``) searches its resources and writes JSON in
Python on every request, inside the benchmark's own process: 15 concurrent queries over a
300-resource chart cost it 80–110 ms of CPU under one GIL, shared with the load generator, so the
figure measured that server rather than the service.

This one sits in front of a fixture server as a caching proxy in a child process: the first request
for a target (method, path and query) is forwarded and its answer kept, with the fixture's base URL
in it (page links) rewritten to ours; every request, first or not, is answered after
``delay_seconds``. Warm-up requests fill the cache, so timed requests cost a sleep and a socket
write.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


def _serve(listener: socket.socket, upstream: str, delay_seconds: float) -> None:
    own_base = "http://127.0.0.1:%d" % listener.getsockname()[1]
    cache: dict[tuple[str, str, bytes], tuple[int, str, bytes]] = {}
    session = requests.Session()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall between them

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def _answer(self, body: bytes) -> None:
            started = time.monotonic()
            key = (self.command, self.path, body)
            if key not in cache:
                reply = session.request(self.command, upstream + self.path, data=body or None,
                                        headers={"Content-Type": self.headers.get("Content-Type", "")})
                cache[key] = (reply.status_code, reply.headers.get("Content-Type", "application/fhir+json"),
                              reply.content.replace(upstream.encode(), own_base.encode()))
            status, content_type, content = cache[key]
            time.sleep(max(0.0, delay_seconds - (time.monotonic() - started)))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 64

        def server_bind(self) -> None:  # the socket is already bound and listening
            self.server_address = self.socket.getsockname()

        def server_activate(self) -> None:
            pass

    server = Server(listener.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.serve_forever()


class CannedFhirServer:
    """``with CannedFhirServer(fixture.base_url, 0.020) as canned: canned.base_url``."""

    def __init__(self, upstream: str, delay_seconds: float):
        self.upstream = upstream.rstrip("/")
        self.delay_seconds = delay_seconds
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.base_url = "http://127.0.0.1:%d" % self._listener.getsockname()[1]
        self._process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(self._listener, self.upstream, delay_seconds), daemon=True)

    def __enter__(self) -> "CannedFhirServer":
        self._process.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._process.terminate()
        self._process.join(5)
        self._listener.close()
