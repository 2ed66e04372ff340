"""``run_export`` (``python -m cds_service export ...``) on a populated SQLite database."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from cds_service.audit.records import CardRecord, DecisionRecord, patient_hash
from cds_service.audit.export_cli import run_export
from cds_service.audit.store import Store

RAW_PATIENT = "Patient/raw-id-0042"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def db_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/cds.sqlite3"
    store = Store.from_url(url)
    store.init_schema()
    key = store.audit_key()
    for n in range(3):
        store.record_decision(DecisionRecord(
            decided_at=T0 + timedelta(days=n), service_id="onc-imaging-order-select", hook="order-select",
            hook_instance=f"hook-{n}", patient_hash=patient_hash(key, RAW_PATIENT),
            order_codes=("http://www.ama-assn.org/go/cpt|71260",), order_ref=f"ServiceRequest/{n}",
            scenario_id="lung-nsclc-surveillance", rating="may-be-appropriate", pama_rating="appropriate",
            outcome="rated", knowledge_version="2025.03.1", consult_id=None, latency_ms=3.0,
            cards=(CardRecord(f"card-{n}", "warning", "Consider CT chest", (f"card-{n}-s",)),), instance="h:1",
        ))
    store.record_feedback("onc-imaging-order-select", [
        {"card": "card-1", "outcome": "accepted", "acceptedSuggestions": [{"id": "card-1-s"}],
         "outcomeTimestamp": "2025-03-02T12:01:00Z"},
    ])
    store.close()
    return url


def test_decisions_as_json_to_a_file(db_url, tmp_path, capsys):
    out = tmp_path / "exports" / "decisions.json"
    assert run_export(["decisions", "--format", "json", "--output", str(out), "--database-url", db_url]) == 0
    rows = json.loads(out.read_text())
    assert [r["hook_instance"] for r in rows] == ["hook-0", "hook-1", "hook-2"]
    assert rows[0]["cards"][0]["uuid"] == "card-0"
    assert RAW_PATIENT not in out.read_text()
    assert "3 decisions rows" in capsys.readouterr().err
    assert [p.name for p in out.parent.iterdir()] == ["decisions.json"]  # no temporary file left


def test_csv_to_stdout_by_default_with_since(db_url, capsys):
    assert run_export(["export", "decisions", "--since", "2025-03-02", "--database-url", db_url]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["hook_instance"] for r in rows] == ["hook-1", "hook-2"]
    assert RAW_PATIENT not in json.dumps(rows)


def test_feedback_uses_the_configured_database_url(db_url, monkeypatch, capsys):
    monkeypatch.setenv("CDS_DATABASE_URL", db_url)
    assert run_export(["feedback", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["card_uuid"], r["hook_instance"], r["outcome"]) for r in rows] == [("card-1", "hook-1", "accepted")]


def test_since_with_time_and_offset(db_url, capsys):
    assert run_export(["decisions", "--since", "2025-03-03T13:30:00+02:00", "--database-url", db_url]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["hook_instance"] for r in rows] == ["hook-2"]  # 11:30Z on 3 March: only hook-2 (12:00Z)


@pytest.mark.parametrize("argv", [
    [], ["patients"], ["decisions", "--format", "xml"], ["decisions", "--since", "yesterday"],
    ["decisions", "--database-url", "mysql://u@h/db"],
])
def test_usage_errors_exit_2(argv, db_url, capsys):
    assert run_export(argv) == 2
    assert capsys.readouterr().err


def test_missing_database_exit_1_and_not_created(tmp_path, capsys):
    missing = tmp_path / "nope.sqlite3"
    assert run_export(["decisions", "--database-url", f"sqlite:///{missing}"]) == 1
    assert not missing.exists()
    assert "no database" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert run_export(["--help"]) == 0
    assert "decisions" in capsys.readouterr().out
