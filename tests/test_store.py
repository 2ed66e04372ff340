"""The store against SQLite and a real PostgreSQL (``postgres_url`` from tests/pg_harness.py)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cds_service.audit.records import CardRecord, DecisionRecord, instance_name, patient_hash, resolve_audit_key
from cds_service.audit.store import SCHEMA_VERSION, ReplayedToken, Store
from tests.pg_harness import pg_schema_url, throwaway_schema

ROOT = Path(__file__).resolve().parent.parent
RAW_PATIENTS = ("patient-8f3a-SMITH", "Patient/4711-raw", "mrn-000123")
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty database: a SQLite file, or a fresh schema in the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/audit/cds.sqlite3"
        return
    with throwaway_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def open_store(store_url):
    """Factory for Store objects on ``store_url`` (all closed at teardown)."""
    opened: list[Store] = []

    def make(init: bool = True) -> Store:
        store = Store.from_url(store_url)
        opened.append(store)
        if init:
            store.init_schema()
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store) -> Store:
    return open_store()


def decision(store: Store, patient: str = RAW_PATIENTS[0], *, n: int = 0, at: datetime = T0,
             cards: tuple[CardRecord, ...] = (), **changes) -> DecisionRecord:
    values = dict(
        decided_at=at,
        service_id="onc-imaging-order-select",
        hook="order-select",
        hook_instance=f"hook-{n}",
        patient_hash=patient_hash(store.audit_key(), patient),
        order_codes=("http://www.ama-assn.org/go/cpt|71260", "http://loinc.org|24627-2"),
        order_ref=f"ServiceRequest/draft-{n}",
        scenario_id="lung-nsclc-surveillance",
        rating="usually-appropriate",
        pama_rating="appropriate",
        outcome="rated",
        knowledge_version="2025.03.1",
        consult_id=f"urn:uuid:{uuid.UUID(int=n + 1)}",
        latency_ms=12.345,
        cards=cards,
        instance="host-a:123",
    )
    values.update(changes)
    return DecisionRecord(**values)


def export(store: Store, what: str, fmt: str, since: datetime | None = None) -> tuple[int, str, list[dict]]:
    out = io.StringIO()
    count = store.export(what, fmt, out, since=since)
    text = out.getvalue()
    rows = json.loads(text) if fmt == "json" else list(csv.DictReader(io.StringIO(text)))
    return count, text, rows


def feedback(card: str, outcome: str = "accepted", ts: str = "2025-03-01T12:05:00Z", **extra) -> dict:
    entry = {"card": card, "outcome": outcome, "outcomeTimestamp": ts}
    if outcome == "accepted":
        entry["acceptedSuggestions"] = [{"id": f"{card}-s1"}]
    entry.update(extra)
    return entry


def row_count(store: Store, table: str) -> int:
    assert table in {"decisions", "cards", "feedback", "jti_seen", "schema_version", "meta"}
    return store._run(lambda tx: tx.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


# --------------------------------------------------------------------------- decisions and export

def test_decisions_round_trip_and_export_json_and_csv(store):
    card = CardRecord("card-1", "warning", "CT chest is usually appropriate", ("card-1-s1", "card-1-s2"))
    store.record_decision(decision(store, RAW_PATIENTS[0], n=1, cards=(card, CardRecord("card-2", "info", "why"))))
    store.record_decision(decision(
        store, RAW_PATIENTS[1], n=2, at=T0 + timedelta(minutes=1), order_ref=None, scenario_id=None,
        rating=None, pama_rating="no-criteria-apply", outcome="no-criteria-apply", consult_id=None,
    ))
    store.record_decision(decision(store, RAW_PATIENTS[2], n=3, at=(T0 + timedelta(minutes=2)).replace(tzinfo=None)))

    count, text, rows = export(store, "decisions", "json")
    assert count == 3 and len(rows) == 3
    first, second, third = rows
    assert first["decided_at"] == "2025-03-01T12:00:00.000000Z"
    assert first["hook_instance"] == "hook-1"
    assert first["patient_hash"] == patient_hash(store.audit_key(), RAW_PATIENTS[0])
    assert first["order_codes"] == ["http://www.ama-assn.org/go/cpt|71260", "http://loinc.org|24627-2"]
    assert (first["order_ref"], first["scenario_id"], first["rating"], first["pama_rating"], first["outcome"]) == (
        "ServiceRequest/draft-1", "lung-nsclc-surveillance", "usually-appropriate", "appropriate", "rated")
    assert first["knowledge_version"] == "2025.03.1" and first["latency_ms"] == pytest.approx(12.345)
    assert first["consult_id"] == "urn:uuid:00000000-0000-0000-0000-000000000002"
    assert first["instance"] == "host-a:123"
    assert first["cards"] == [
        {"uuid": "card-1", "indicator": "warning", "summary": "CT chest is usually appropriate",
         "suggestion_uuids": ["card-1-s1", "card-1-s2"]},
        {"uuid": "card-2", "indicator": "info", "summary": "why", "suggestion_uuids": []},
    ]
    assert second["order_ref"] is second["scenario_id"] is second["rating"] is second["consult_id"] is None
    assert second["outcome"] == "no-criteria-apply" and second["cards"] == []
    assert third["decided_at"] == "2025-03-01T12:02:00.000000Z"  # naive input taken as UTC

    count, csv_text, csv_rows = export(store, "decisions", "csv")
    assert count == 3
    assert [r["hook_instance"] for r in csv_rows] == ["hook-1", "hook-2", "hook-3"]
    assert json.loads(csv_rows[0]["order_codes"]) == first["order_codes"]
    assert json.loads(csv_rows[0]["cards"]) == first["cards"]
    assert csv_rows[1]["rating"] == "" and csv_rows[1]["pama_rating"] == "no-criteria-apply"
    assert float(csv_rows[0]["latency_ms"]) == pytest.approx(12.345)
    assert csv_rows[0]["patient_hash"] == first["patient_hash"]

    for raw in RAW_PATIENTS:
        assert raw not in text and raw not in csv_text


def test_export_since_and_empty(store):
    assert export(store, "decisions", "json")[1] == "[]\n"
    assert export(store, "feedback", "csv")[0] == 0
    for n in range(4):
        store.record_decision(decision(store, n=n, at=T0 + timedelta(days=n)))
    count, _, rows = export(store, "decisions", "json", since=T0 + timedelta(days=2))
    assert count == 2 and [r["hook_instance"] for r in rows] == ["hook-2", "hook-3"]
    # an aware "since" in another zone means the same instant
    plus2 = timezone(timedelta(hours=2))
    count, _, _ = export(store, "decisions", "csv", since=(T0 + timedelta(days=2)).astimezone(plus2))
    assert count == 2


def test_a_slow_export_does_not_block_writers(store):
    """The export reads in a read-only transaction: hook calls keep being recorded meanwhile."""
    for n in range(3):
        store.record_decision(decision(store, n=n))
    started, release = threading.Event(), threading.Event()

    class SlowOut(io.StringIO):
        def write(self, text):
            started.set()
            assert release.wait(20)
            return super().write(text)

    out = SlowOut()
    exporter = threading.Thread(target=store.export, args=("decisions", "json", out))
    exporter.start()
    try:
        assert started.wait(20)
        t = time.perf_counter()
        store.record_decision(decision(store, n=99))
        store.record_feedback("svc", [feedback("during-export")])
        assert time.perf_counter() - t < 2.0
    finally:
        release.set()
        exporter.join(20)
    assert len(json.loads(out.getvalue())) == 3  # a consistent snapshot from the export's start
    assert export(store, "decisions", "json")[0] == 4


def test_export_rejects_unknown_kind_or_format(store):
    with pytest.raises(ValueError):
        store.export("patients", "csv", io.StringIO())
    with pytest.raises(ValueError):
        store.export("decisions", "xml", io.StringIO())


def test_csv_export_neutralises_spreadsheet_formulas(store):
    store.record_decision(decision(store, order_ref="=HYPERLINK(\"http://x\")", scenario_id="@SUM(A1)"))
    _, _, rows = export(store, "decisions", "csv")
    assert rows[0]["order_ref"].startswith("'=") and rows[0]["scenario_id"] == "'@SUM(A1)"
    _, _, json_rows = export(store, "decisions", "json")
    assert json_rows[0]["order_ref"] == "=HYPERLINK(\"http://x\")"  # JSON keeps the exact value


def test_record_decision_refuses_a_raw_patient_id(store):
    with pytest.raises(ValueError, match="patient_hash"):
        store.record_decision(decision(store, patient_hash=RAW_PATIENTS[0]))
    assert row_count(store, "decisions") == 0


def test_the_decisions_of_one_call_are_stored_together_or_not_at_all(store):
    store.record_decisions([decision(store, n=n, cards=(CardRecord(f"card-{n}", "info", "s"),)) for n in (1, 2, 3)])
    assert row_count(store, "decisions") == 3 and row_count(store, "cards") == 3
    with pytest.raises(ValueError, match="patient_hash"):  # one bad record: none of the call's is written
        store.record_decisions([decision(store, n=4), decision(store, n=5, patient_hash=RAW_PATIENTS[0])])
    assert row_count(store, "decisions") == 3


def test_record_decision_fills_instance_when_empty(store):
    store.record_decision(decision(store, instance=""))
    assert export(store, "decisions", "json")[2][0]["instance"] == instance_name()


# --------------------------------------------------------------------------- feedback

def test_feedback_is_resolved_to_the_decisions_hook_instance(store):
    store.record_decision(decision(store, n=7, cards=(CardRecord("card-a", "warning", "s", ("card-a-s1",)),)))
    entries = [
        feedback("card-a"),
        feedback("card-a", "overridden", "2025-03-01T14:05:00.250+02:00",
                 overrideReason={"reason": {"system": "http://example.org/reasons", "code": "pt-preference",
                                            "display": "Patient preference"},
                                 "userComment": f"spoke with {RAW_PATIENTS[0]} about it"}),
        feedback("card-unknown", "overridden", overrideReason={"userComment": "free text"}),
    ]
    assert store.record_feedback("onc-imaging-order-select", entries) == 3

    count, text, rows = export(store, "feedback", "json")
    assert count == 3
    accepted, overridden, unknown = rows
    assert accepted["card_uuid"] == "card-a" and accepted["hook_instance"] == "hook-7"
    assert accepted["outcome"] == "accepted" and accepted["accepted_suggestions"] == ["card-a-s1"]
    assert accepted["outcome_timestamp"] == "2025-03-01T12:05:00.000000Z"
    assert accepted["service_id"] == "onc-imaging-order-select"
    assert overridden["hook_instance"] == "hook-7"
    assert overridden["outcome_timestamp"] == "2025-03-01T12:05:00.250000Z"
    assert (overridden["override_reason_system"], overridden["override_reason_code"],
            overridden["override_reason_display"]) == ("http://example.org/reasons", "pt-preference", "Patient preference")
    assert overridden["has_user_comment"] is True
    assert overridden["decision_id"] == accepted["decision_id"] is not None
    assert unknown["hook_instance"] is None and unknown["decision_id"] is None
    assert unknown["has_user_comment"] is True and unknown["accepted_suggestions"] == []

    _, csv_text, csv_rows = export(store, "feedback", "csv")
    assert [r["hook_instance"] for r in csv_rows] == ["hook-7", "hook-7", ""]
    assert csv_rows[1]["has_user_comment"] == "true"
    # free-text comments (possible PHI) are never stored
    for raw in (*RAW_PATIENTS, "free text", "spoke with"):
        assert raw not in text and raw not in csv_text


def test_feedback_before_its_decision_is_resolved_at_export(store):
    store.record_feedback("svc", [feedback("late-card")])
    store.record_decision(decision(store, n=9, cards=(CardRecord("late-card", "info", "s"),)))
    assert export(store, "feedback", "json")[2][0]["hook_instance"] == "hook-9"


def test_duplicate_feedback_is_accepted_and_stored_once(store):
    entries = [feedback("card-d"), feedback("card-d", "overridden", overrideReason={"userComment": "x"})]
    assert store.record_feedback("svc", entries) == 2
    assert store.record_feedback("svc", entries) == 0          # a retried POST: no error
    assert store.record_feedback("svc", [entries[0], entries[0]]) == 0
    # same card, same outcome, a later timestamp is a new event
    assert store.record_feedback("svc", [feedback("card-d", ts="2025-03-01T12:06:00Z")]) == 1
    assert export(store, "feedback", "json")[0] == 3


def test_feedback_survives_closing_and_reopening(open_store):
    first = open_store()
    first.record_decision(decision(first, n=1, cards=(CardRecord("card-r", "warning", "s"),)))
    assert first.record_feedback("svc", [feedback("card-r")]) == 1
    first.close()
    again = open_store(init=False)
    _, _, rows = export(again, "feedback", "json")
    assert [(r["card_uuid"], r["hook_instance"]) for r in rows] == [("card-r", "hook-1")]


def test_feedback_survives_the_process_dying_right_after_the_acknowledgement(store_url, open_store):
    """A writer process stores feedback and is killed (os._exit, no close): the row is there."""
    open_store()  # schema
    code = (
        "import os, sys\n"
        "from cds_service.audit.store import Store\n"
        "s = Store.from_url(sys.argv[1])\n"
        "n = s.record_feedback('svc', [{'card': 'crash-card', 'outcome': 'overridden',"
        " 'outcomeTimestamp': '2025-03-01T12:00:00Z', 'overrideReason': {'userComment': 'x'}}])\n"
        "print(n, flush=True)\n"
        "os._exit(0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, store_url], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    reader = open_store(init=False)
    assert [r["card_uuid"] for r in export(reader, "feedback", "json")[2]] == ["crash-card"]


# --------------------------------------------------------------------------- JWT replay cache

def test_remember_jti_new_seen_and_expired(store):
    now = datetime.now(timezone.utc)
    later = now + timedelta(minutes=5)
    assert store.remember_jti("https://ehr.example", "jti-1", later) is True
    assert store.remember_jti("https://ehr.example", "jti-1", later) is False
    assert store.remember_jti("https://other.example", "jti-1", later) is True   # per issuer
    # an entry whose token has expired no longer blocks (and is purged sooner or later)
    assert store.remember_jti("https://ehr.example", "jti-old", now - timedelta(seconds=1)) is True
    assert store.remember_jti("https://ehr.example", "jti-old", later) is True
    assert store.remember_jti("https://ehr.example", "jti-old", later) is False
    store.remember_jti("https://ehr.example", "jti-gone", now - timedelta(minutes=1))
    assert row_count(store, "jti_seen") == 4
    store._next_jti_purge = 0.0  # force the periodic purge on the next call
    assert store.remember_jti("https://ehr.example", "jti-2", later) is True
    assert row_count(store, "jti_seen") == 4  # jti-gone purged, jti-2 added


def test_decisions_and_their_jti_are_one_transaction(store):
    """A call's decisions and its JWT jti commit together; a replayed jti stores nothing."""
    exp = datetime.now(timezone.utc) + timedelta(minutes=5)
    store.record_decisions([decision(store, n=1), decision(store, n=2)], jti=("iss", "call-1", exp))
    assert row_count(store, "decisions") == 2
    assert store.remember_jti("iss", "call-1", exp) is False, "the jti was remembered with the decisions"
    with pytest.raises(ReplayedToken):
        store.record_decisions([decision(store, n=3)], jti=("iss", "call-1", exp))
    assert row_count(store, "decisions") == 2, "the replayed call left no decision behind"
    store.record_decisions([], jti=("iss", "call-2", exp))  # a call with nothing to audit still uses its token
    assert store.remember_jti("iss", "call-2", exp) is False


def test_remember_jti_is_shared_between_instances(open_store):
    a, b = open_store(), open_store()
    exp = datetime.now(timezone.utc) + timedelta(minutes=5)
    assert a.remember_jti("iss", "shared", exp) is True
    assert b.remember_jti("iss", "shared", exp) is False


# --------------------------------------------------------------------------- audit key

def test_audit_key_stable_across_reopen_and_shared(open_store):
    a = open_store()
    key = a.audit_key()
    assert isinstance(key, bytes) and len(key) == 32
    assert a.audit_key() == key
    b = open_store()
    assert b.audit_key() == key
    a.close()
    assert open_store(init=False).audit_key() == key
    assert patient_hash(b.audit_key(), "p") == patient_hash(key, "p")


def test_audit_key_created_once_under_concurrency(open_store):
    stores = [open_store() for _ in range(6)]
    keys: list[bytes] = []
    barrier = threading.Barrier(len(stores))

    def get(s: Store) -> None:
        barrier.wait()
        keys.append(s.audit_key())

    threads = [threading.Thread(target=get, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 6 and len(set(keys)) == 1
    assert row_count(stores[0], "meta") == 1


# --------------------------------------------------------------------------- concurrency and schema

def test_concurrent_writers_lose_nothing(store):
    threads_n, per_thread = 8, 25
    errors: list[BaseException] = []
    new_jti: list[bool] = []
    barrier = threading.Barrier(threads_n)
    exp = datetime.now(timezone.utc) + timedelta(minutes=5)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                n = t * 1000 + i
                store.record_decision(decision(store, f"patient-{n}", n=n, cards=(CardRecord(f"c-{n}", "info", "s"),)))
                store.record_feedback("svc", [feedback(f"c-{n}")])
                new_jti.append(store.remember_jti("iss", "contended", exp))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    total = threads_n * per_thread
    assert row_count(store, "decisions") == total
    assert row_count(store, "cards") == total
    count, _, rows = export(store, "feedback", "json")
    assert count == total
    assert all(r["hook_instance"] == "hook-" + r["card_uuid"][2:] for r in rows)
    assert new_jti.count(True) == 1  # exactly one thread saw the jti first


def test_init_schema_is_idempotent(open_store):
    store = open_store()
    store.init_schema()
    store.init_schema()
    assert store.schema_version() == SCHEMA_VERSION
    assert row_count(store, "schema_version") == SCHEMA_VERSION
    store.record_decision(decision(store))
    store.init_schema()  # data kept
    assert row_count(store, "decisions") == 1


def test_init_schema_concurrent_on_an_empty_database(open_store):
    stores = [open_store(init=False) for _ in range(6)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def init(s: Store) -> None:
        try:
            barrier.wait()
            s.init_schema()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=init, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert stores[0].schema_version() == SCHEMA_VERSION
    assert row_count(stores[0], "schema_version") == SCHEMA_VERSION


def test_several_processes_starting_at_once_share_schema_and_key(store_url, open_store):
    """Instances (processes) starting together on a new database: one schema, one audit key."""
    code = (
        "import sys\n"
        "from cds_service.audit.store import Store\n"
        "s = Store.from_url(sys.argv[1])\n"
        "s.init_schema()\n"
        "print(s.audit_key().hex(), flush=True)\n"
        "s.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    keys = {out.strip() for out, _ in outputs}
    assert len(keys) == 1
    store = open_store(init=False)
    assert store.audit_key().hex() in keys
    assert row_count(store, "schema_version") == SCHEMA_VERSION


def test_ping_and_close(open_store):
    store = open_store()
    assert store.ping() is True
    store.close()
    assert store.ping() is False
    with pytest.raises(RuntimeError):
        store.record_feedback("svc", [feedback("x")])


# --------------------------------------------------------------------------- backend specifics

@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgres_connection_lost_while_idle_is_retried(postgres_url, open_store):
    import psycopg

    store = open_store()
    assert store.ping()
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # kill the pooled connections
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'onc-imaging-cds' AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed
    store.record_decision(decision(store))  # retried on a fresh connection
    assert row_count(store, "decisions") == 1


def test_postgres_ping_false_when_server_unreachable():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    store = Store.from_url(f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2")
    assert store.ping() is False
    store.close()


def test_sqlite_file_wal_mode_and_permissions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store.from_url("sqlite:///var/sub/cds.db")  # relative to the working directory
    store.init_schema()
    store.record_feedback("svc", [feedback("c")])
    path = tmp_path / "var" / "sub" / "cds.db"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # holds the audit key
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    absolute = Store.from_url(f"sqlite:///{path}")  # sqlite:////abs/path
    assert absolute.ping() and export(absolute, "feedback", "json")[0] == 1
    absolute.close()


@pytest.mark.parametrize("url", [
    "", "   ", "mysql://u@h/db", "sqlite://relative.db", "sqlite:///", "sqlite:///:memory:",
    "sqlite:///dir/", "postgresql://u@h:notaport/db", "http://example.org/db", "cds.sqlite3",
    "postgresql+psycopg://u:secret@h/db",
])
def test_bad_url_raises_value_error(url):
    with pytest.raises(ValueError) as info:
        Store.from_url(url)
    assert "sqlite:///" in str(info.value)  # says what is expected
    assert "secret" not in str(info.value)


def test_repr_hides_the_password():
    store = Store.from_url("postgresql://cds:s3cret@db.example:5432/cds")
    assert "s3cret" not in repr(store) and "***" in repr(store)
    assert "s3cret" not in store.url


# --------------------------------------------------------------------------- audit/records.py

def test_patient_hash_is_hmac_sha256():
    key = b"k" * 32
    assert patient_hash(key, "123") == hmac.new(key, b"123", hashlib.sha256).hexdigest()
    assert patient_hash(key, "123") != patient_hash(b"j" * 32, "123")
    assert len(patient_hash(key, "123")) == 64
    with pytest.raises(ValueError):
        patient_hash(b"", "123")


def test_instance_name_and_key_resolution(store):
    assert instance_name() == f"{__import__('socket').gethostname()}:{os.getpid()}"
    assert resolve_audit_key("configured-key", store) == b"configured-key"
    assert resolve_audit_key("", store) == store.audit_key()


# --------------------------------------------------------------------------- the PostgreSQL harness

@pytest.mark.parametrize("value, expected", [
    ("true", True), ("1", True), ("YES", True), ("on", True), ("", False), ("0", False), ("false", False),
])
def test_harness_reads_ci_flag(value, expected):
    from tests.pg_harness import ci_enabled

    assert ci_enabled({"CI": value}) is expected
    assert ci_enabled({}) is False


def test_harness_skips_locally_but_fails_under_ci(monkeypatch):
    from tests import pg_harness

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        pg_harness._unavailable("no binaries")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        pg_harness._unavailable("no binaries")


def test_harness_schema_url_keeps_existing_options():
    url = pg_schema_url("postgresql://u@h:5432/db?sslmode=disable&options=-c%20work_mem%3D4MB", "t_abc")
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    assert params["sslmode"] == "disable"
    assert params["options"] == "-c work_mem=4MB -c search_path=t_abc"
    with pytest.raises(ValueError):
        pg_schema_url("postgresql://u@h/db", "x; DROP TABLE y")
