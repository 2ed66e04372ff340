"""The production entry point: gunicorn with ``cds_service.server.gunicorn_conf`` serving ``cds_service.server.wsgi:app``,
and the garbage collection it moves out of requests.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import weakref

import pytest
import requests

from cds_service.server.garbage import DEFERRED_YOUNG_THRESHOLD, collect_between_requests, collect_due_generations
from tests.conftest import free_port
from tests.sandbox_requests import SELECT_ID, order_select, pama_ratings

BONE_SCAN = "78306"
BREAST_HISTORY = "415076002"


@pytest.fixture
def gunicorn_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"CDS_MODE": "development", "CDS_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1",
                "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'audit.sqlite3'}", "CDS_LOG_LEVEL": "WARNING"})
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:cds_service.server.gunicorn_conf", "cds_service.server.wsgi:app"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited early:\n{log_path.read_text()}")
            try:
                if requests.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn was not ready within 90 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_production_server_answers_hooks_and_serves_metrics(gunicorn_server):
    for _ in range(3):  # more than one request through the same worker and its after-response work
        answer = requests.post(f"{gunicorn_server}/cds-services/{SELECT_ID}",
                               json=order_select(BONE_SCAN, [BREAST_HISTORY]), timeout=10)
        assert answer.status_code == 200
        assert pama_ratings(answer.json()) == [["not-appropriate", "usually-not-appropriate"]]
    metrics = requests.get(f"{gunicorn_server}/metrics", timeout=10).text
    assert 'cds_ratings_total{rating="usually-not-appropriate",service="onc-imaging-order-select"} 3.0' in metrics


def test_decisions_record_the_worker_that_decided_not_the_master(gunicorn_server, tmp_path):
    # The app is built in the master (preload_app) and forked: an instance name taken at build
    # time would name the master's pid in every decision (issue 13).
    answer = requests.post(f"{gunicorn_server}/cds-services/{SELECT_ID}",
                           json=order_select(BONE_SCAN, [BREAST_HISTORY]), timeout=10)
    assert answer.status_code == 200
    import sqlite3

    with sqlite3.connect(tmp_path / "audit.sqlite3") as db:
        instances = {row[0] for row in db.execute("SELECT instance FROM decisions")}
    assert len(instances) == 1
    pid = int(instances.pop().rsplit(":", 1)[1])
    status = dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)
    master = int(status["PPid"])
    assert master != os.getpid(), "the recorded pid is gunicorn's master (our child), not its worker"
    assert "gunicorn" in open(f"/proc/{master}/cmdline").read()


@pytest.fixture
def restore_gc_thresholds():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


class _Node:
    """A weak-referenceable object that can be put in a reference cycle."""

    def __init__(self):
        self.partner = None


def test_cycles_made_during_a_request_are_collected_after_its_response(restore_gc_thresholds):
    made: list[weakref.ref] = []

    def app(environ, start_response):
        first, second = _Node(), _Node()
        first.partner, second.partner = second, first  # a cycle: reference counting cannot free it
        made.append(weakref.ref(first))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = collect_between_requests(app)
    assert gc.get_threshold()[0] == DEFERRED_YOUNG_THRESHOLD

    body = wrapped({}, lambda status, headers: None)
    assert b"".join(body) == b"ok"
    assert made[0]() is not None, "no collection while the response is still being sent"
    body.close()  # what the server does once the last byte is out
    assert made[0]() is None, "the request's cycle is collected after the response"


def test_older_generations_are_collected_at_cpythons_cadence(restore_gc_thresholds):
    gc.set_threshold(DEFERRED_YOUNG_THRESHOLD, 10, 10)
    gc.collect()  # counts start at zero: earlier tests may have left the old generation due
    generations = [collect_due_generations() for _ in range(400)]
    older = [i for i, generation in enumerate(generations) if generation > 0]
    # Between two collections of an older generation, eleven young ones: one more than the
    # threshold of 10. A full collection comes right after the middle one that made it due.
    gaps = {b - a for a, b in zip(older, older[1:]) if generations[b] == 1}
    assert gaps == {12}
    full = [i for i in older if generations[i] == 2]
    assert full, "the old generation is collected too"
    assert all(generations[i - 1] == 1 for i in full)
    assert all(sum(1 for i in older if a < i < b) == 11 for a, b in zip(full, full[1:]))
