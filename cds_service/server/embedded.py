"""The embedded HTTP server: ``serve`` (development) and a service on loopback in a thread (replay).

Werkzeug's threaded server reads requests in the thread that answers them and has no header or
body read timeouts, so it is for development and tests only; production runs gunicorn behind a
buffering reverse proxy (docs/deployment.md).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import replace

from werkzeug.serving import make_server

from cds_service.config import Settings
from cds_service.server.app import create_app


def run_development_server(host: str, port: int) -> int:
    """``python -m cds_service serve``: the service with the settings of the environment."""
    settings = Settings.from_env()
    if "CDS_PUBLIC_BASE_URL" not in os.environ:
        settings = replace(settings, public_base_url=f"http://{host}:{port}")
    app = create_app(settings)
    _announce_console(app, settings)
    app.run(host=host, port=port, threaded=True, use_reloader=False)
    return 0


def _announce_console(app, settings: Settings) -> None:
    """Development mode: say where the committee console is and how to make its first account."""
    from cds_service.console.auth import list_users

    if not settings.development:
        return
    where = f"{settings.public_base_url.rstrip('/')}/console/"
    if list_users(app.extensions["cds"].store):
        print(f"Committee console: {where}", file=sys.stderr, flush=True)
        return
    print(f"Committee console: {where} has no account yet. Create the first (an admin) with\n"
          f"    CDS_DATABASE_URL={settings.database_url} python -m cds_service console-user add NAME --role admin\n"
          "(browsers keep Secure cookies over plain HTTP only on localhost; elsewhere serve over HTTPS).",
          file=sys.stderr, flush=True)


class BackgroundService:
    """The service on a real loopback HTTP server (ephemeral port), served from a daemon thread."""

    def __init__(self, settings: Settings, *, name: str = "cds-service"):
        self.app = create_app(settings)
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name=name)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self.app.extensions["cds"].store.close()
