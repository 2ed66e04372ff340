"""Scale-out: two service processes on loopback share one real PostgreSQL.

The service is stateless apart from its database, so whatever instance answered, every decision and
every feedback record must be found in the shared database.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
import requests

from cds_service.audit.store import Store
from tests.conftest import free_port
from tests.pg_harness import throwaway_schema
from tests.sandbox_requests import SELECT_ID, order_select

BREAST_HISTORY = "415076002"
BONE_SCAN = "78306"


def _start_instance(database_url: str, tmp_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "CDS_DATABASE_URL": database_url, "CDS_MODE": "development", "CDS_LOG_LEVEL": "WARNING"}
    log = open(tmp_path / f"instance-{port}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"instance exited early: {(tmp_path / f'instance-{port}.log').read_text()}")
        try:
            if requests.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    pytest.fail("instance did not become ready within 60 s")


@pytest.fixture
def shared_database(postgres_url):
    with throwaway_schema(postgres_url, "scaleout") as url:
        yield url


def test_two_instances_share_decisions_and_feedback(shared_database, tmp_path):
    instances = [_start_instance(shared_database, tmp_path) for _ in range(2)]
    try:
        hook_instances = []
        for _, url in instances:
            for _ in range(3):
                body = order_select(BONE_SCAN, [BREAST_HISTORY])
                answer = requests.post(f"{url}/cds-services/{SELECT_ID}", json=body, timeout=10).json()
                hook_instances.append(body["hookInstance"])
            card = answer["cards"][0]
            feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                      "overrideReason": {"reason": {"system": "x", "code": "patient-informed-choice"}},
                                      "outcomeTimestamp": "2026-11-21T09:00:00Z"}]}
            assert requests.post(f"{url}/cds-services/{SELECT_ID}/feedback", json=feedback, timeout=10).json() == {"stored": 1}
    finally:
        for process, _ in instances:
            process.terminate()
            process.wait(timeout=10)

    store = Store.from_url(shared_database)
    decisions, feedback = io.StringIO(), io.StringIO()
    assert store.export("decisions", "json", decisions) == 6
    assert store.export("feedback", "json", feedback) == 2
    store.close()
    decided = json.loads(decisions.getvalue())
    assert {d["hook_instance"] for d in decided} == set(hook_instances)
    assert len({d["instance"] for d in decided}) == 2, "both instances' decisions are in the shared database"
    assert {d["pama_rating"] for d in decided} == {"not-appropriate"}
    resolved = json.loads(feedback.getvalue())
    assert all(f["hook_instance"] in hook_instances for f in resolved)
