"""The floor for bench_http.py: a Flask app on the same server stack that does no CDS work.

It reads and parses the JSON body exactly as ``cds_service.server.routes`` does (``request.get_data`` +
``orjson.loads``) and answers ``{"cards": []}``, so the difference to the real service is the cost of
validation, chart extraction, reasoning, card building, audit and logging.

    gunicorn -c python:cds_service.server.gunicorn_conf --pythonpath . bench.minimal_app:app
"""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

app = Flask(__name__)
_NO_CARDS = orjson.dumps({"cards": []})


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="application/json")


@app.post("/cds-services/<service_id>")
def call_service(service_id: str):
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError:
        return _json(b'{"error":"invalid-request"}', 400)
    if not isinstance(body, dict):
        return _json(b'{"error":"invalid-request"}', 400)
    return _json(_NO_CARDS)


@app.get("/health")
def health():
    return _json(b'{"status":"ok"}')


@app.get("/ready")
def ready():
    return _json(b'{"status":"ready"}')
