"""Persistence: decision audit log, card feedback, JWT replay cache and the audit hash key.

One small module over two backends, no ORM:

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (parent directory created;
  the file is created mode 0600 because it holds the audit hash key);
* ``postgresql://user@host:port/db`` (``postgres://`` accepted too).

SQL is written once with ``?`` placeholders; :class:`Tx` turns them into ``%s`` for psycopg.
Dialect differences are confined to the column types in :data:`COLUMN_TYPES` and to
:class:`SqliteBackend` / :class:`PostgresBackend` (connect, begin/commit, locking).

Threading: the store keeps a small pool of idle connections. Each operation borrows one for
the length of one transaction and gives it back, so any number of threads (Werkzeug's
thread-per-request server, gunicorn ``gthread``) can share one :class:`Store`, and the number
of open connections follows concurrency rather than the number of threads ever seen. A
PostgreSQL connection that broke while idle in the pool (server restart, idle timeout) is
discarded and the operation retried once on a fresh connection.

Durability (``python bench/store_bench.py``; development VM, ext4 on virtio, fsync ~0.15 ms;
medians per call, SQLite 3.40 / PostgreSQL 15 on loopback):

====================================  ===========  ================
call                                  SQLite WAL   PostgreSQL
====================================  ===========  ================
record_decision (2 cards), as shipped    ~60 µs    ~450-700 µs
... if every commit were fsynced        ~200 µs    (as shipped)
... if no commit were fsynced            ~60 µs    ~450-510 µs
record_feedback (1 entry, fsynced)      ~150 µs    ~400-600 µs
... if not fsynced                       ~28 µs    ~370-390 µs
remember_jti                             ~21 µs    ~290-330 µs
====================================  ===========  ================

* SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit does not fsync, so a power cut
  may lose the last decisions (a process crash loses nothing; the database is never
  corrupted). Feedback is the acknowledgement of what the clinician did, so
  :meth:`Store.record_feedback` switches its connection to ``synchronous=FULL`` for that one
  commit (the WAL is fsynced before ``COMMIT`` returns; the fsync also covers all earlier
  NORMAL commits). The audit key and schema migrations are written the same way. FULL on
  every commit would triple the cost of ``record_decision`` here, and cost a whole fsync
  (1-10 ms on ordinary cloud block storage) on the request path of every hook call, for
  records whose loss on power failure is tolerable; feedback is rare, so FULL there is cheap.
* PostgreSQL: cost is round trips, not fsync. Commits are durable under the server's default
  ``synchronous_commit=on``; feedback, the audit key and migrations additionally
  ``SET LOCAL synchronous_commit = on`` so that a server configured with ``off`` still
  acknowledges feedback only once it is on disk.

Timestamps are UTC: ISO-8601 text with microseconds (fixed width, so text order is time order)
in SQLite, ``timestamptz`` in PostgreSQL. Naive datetimes passed in are taken as UTC.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO
from urllib.parse import urlsplit, urlunsplit

from cds_service.audit import rollup
from cds_service.audit.backend import Backend, DatabaseUnavailable, Tx, utc
from cds_service.audit.export import check_export_request, write_export
from cds_service.audit.postgres import PostgresBackend
from cds_service.audit.records import CardRecord, DecisionRecord, instance_name
from cds_service.audit.schema import COLUMN_TYPES, MIGRATIONS, SCHEMA_VERSION
from cds_service.audit.sqlite import SqliteBackend

__all__ = ["Store", "CardRecord", "DecisionRecord", "DatabaseUnavailable", "ReplayedToken", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

_PATIENT_HASH = re.compile(r"^[0-9a-f]{64}$")
_AUDIT_KEY_NAME = "audit_key"
_PROBE_NAME = "write_probe"  # rewritten by every readiness check
_JTI_PURGE_INTERVAL_S = 60.0
_MAX_IDLE_CONNECTIONS = 8
_URL_HELP = "expected sqlite:///path/to.db (relative), sqlite:////abs/path.db or postgresql://user@host:port/db"


# --------------------------------------------------------------------------- helpers


def _parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        return None


class ReplayedToken(Exception):
    """A JWT ``jti`` recorded with a call's decisions had been seen before (the call is refused)."""


def _insert_jti(tx: Tx, entry: tuple[str, str, datetime], purge: bool) -> bool:
    """Remember ``(iss, jti)`` until ``expires_at``; False when it is already remembered."""
    iss, jti, expires_at = entry
    now = datetime.now(timezone.utc)
    if purge:
        tx.execute("DELETE FROM jti_seen WHERE expires_at < ?", (tx.ts(now),))
    cur = tx.execute(
        "INSERT INTO jti_seen (iss, jti, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (iss, jti) DO UPDATE SET expires_at = excluded.expires_at "
        "WHERE jti_seen.expires_at < ?",
        (iss, jti, tx.ts(expires_at), tx.ts(now)),
    )
    return cur.rowcount == 1


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------- backends


# --------------------------------------------------------------------------- the store

class Store:
    """Audit and feedback storage shared by all threads (and, through the database, instances)."""

    def __init__(self, backend: Backend, url: str):
        self._backend = backend
        self.backend = backend.name
        self.url = redact_url(url)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._audit_key: bytes | None = None
        self._next_jti_purge = 0.0

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @classmethod
    def from_url(cls, url: str) -> "Store":
        """Open (lazily: no connection is made yet) the database named by ``url``."""
        if not isinstance(url, str) or not url.strip():
            raise ValueError(f"database URL is empty; {_URL_HELP}")
        url = url.strip()
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "sqlite":
            if not url.startswith("sqlite:///"):
                raise ValueError(f"bad SQLite URL {redact_url(url)!r}: {_URL_HELP}")
            path = url[len("sqlite:///"):]
            if not path or path == ":memory:" or path.startswith("file:") or path.endswith("/"):
                raise ValueError(f"bad SQLite URL {url!r}: give a database file path; {_URL_HELP}")
            return cls(SqliteBackend(Path(path)), url)
        if scheme in ("postgresql", "postgres"):
            try:
                parts = urlsplit(url)
                if "," not in parts.netloc:
                    parts.port  # noqa: B018 - raises ValueError on a bad port
                from psycopg.conninfo import conninfo_to_dict

                conninfo_to_dict(url)
            except Exception as exc:  # psycopg.ProgrammingError, ValueError
                raise ValueError(f"bad PostgreSQL URL {redact_url(url)!r}: {exc}; {_URL_HELP}") from None
            return cls(PostgresBackend(url), url)
        shown = redact_url(url) if "://" in url else url
        raise ValueError(f"unsupported database URL {shown!r}; {_URL_HELP}")

    # ---------------------------------------------------------------- connections

    def _acquire(self) -> tuple[Any, bool]:
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            if self._pid != os.getpid():
                # Forked (gunicorn worker): the inherited connections belong to the parent's
                # sessions. Forget them without closing, which would end the parent's sessions.
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop(), True
        return self._backend.connect(), False

    def _release(self, conn: Any) -> None:
        keep = False
        try:
            keep = self._backend.reusable(conn)
        except Exception:  # pragma: no cover - defensive
            keep = False
        if keep:
            with self._lock:
                if not self._closed and len(self._idle) < _MAX_IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    return
        self._close_quietly(conn)

    @staticmethod
    def _close_quietly(conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # pragma: no cover - closing a broken connection
            pass

    def _run(self, fn: Callable[[Tx], Any], *, durable: bool = False, schema_lock: bool = False,
             readonly: bool = False, retry: bool = True) -> Any:
        """Run ``fn`` in one transaction on a pooled connection (commit on return).

        Retry: only when a connection taken from the pool turns out to be broken. If it broke
        during COMMIT the first attempt may have been applied: feedback then deduplicates, a
        decision may be stored twice, and a jti may be reported as seen (one token refused).

        A database fault (down, locked past the timeout, read-only, full) raises
        :class:`DatabaseUnavailable`; the connection and the idle pool are discarded, since a
        connection opened during the fault (a SQLite file opened read-only) keeps it after the
        fault clears. The next call opens a fresh connection: recovery needs nothing else.
        """
        for attempt in (1, 2):
            conn, reused = None, False
            try:
                conn, reused = self._acquire()
                with self._backend.transaction(conn, durable=durable, schema_lock=schema_lock,
                                               readonly=readonly):
                    result = fn(Tx(conn, self._backend))
            except BaseException as error:
                if (isinstance(error, self._backend.disconnect_errors) and retry and reused
                        and attempt == 1 and self._backend.broken(conn)):
                    # A pooled connection died while idle: its siblings probably did too.
                    self._discard(conn)
                    log.warning("database connection lost; retrying on a new connection")
                    continue
                reason = self._backend.fault_reason(error)
                if reason is None:
                    if conn is not None:
                        self._release(conn)
                    raise
                self._discard(conn)
                log.warning("database unavailable: %s", reason, extra={"error": type(error).__name__})
                raise DatabaseUnavailable(reason) from error
            self._release(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _discard(self, conn: Any) -> None:
        """Close ``conn`` (may be None) and every idle connection."""
        if conn is not None:
            self._close_quietly(conn)
        with self._lock:
            stale, self._idle = self._idle, []
        for other in stale:
            self._close_quietly(other)

    # ---------------------------------------------------------------- schema

    def init_schema(self) -> None:
        """Create or migrate the tables. Idempotent; concurrent callers serialise on a lock."""

        def migrate(tx: Tx) -> None:
            types = COLUMN_TYPES[self.backend]
            tx.execute(f"CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                       f"applied_at {types['ts']} NOT NULL)")
            current = tx.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                log.warning("database schema version %s is newer than this code's %s", current, SCHEMA_VERSION)
                return
            for version in sorted(v for v in MIGRATIONS if v > current):
                for statement in MIGRATIONS[version]:
                    tx.execute(statement.format(**types))
                tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                           (version, tx.ts(datetime.now(timezone.utc))))
            if 0 < current < 2:  # decisions written before the rollups existed are counted once
                rollup.rebuild(tx)

        self._run(migrate, durable=True, schema_lock=True)

    def run(self, fn: Callable[[Tx], Any], *, readonly: bool = False, durable: bool = False) -> Any:
        """Run ``fn(tx)`` in one transaction (the audit room's other modules: rollups, console data)."""
        return self._run(fn, readonly=readonly, durable=durable, retry=readonly)

    def schema_version(self) -> int:
        return self._run(lambda tx: tx.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0,
                         readonly=True)

    # ---------------------------------------------------------------- decisions and feedback

    def record_decision(self, record: DecisionRecord) -> None:
        """Store one decision (one rated order) and its cards (card uuid -> decision)."""
        self.record_decisions([record])

    def record_decisions(self, records: Sequence[DecisionRecord], *,
                         jti: tuple[str, str, datetime] | None = None) -> None:
        """Store the decisions of one hook call (one per rated order) in one transaction: all or none.

        ``jti``, the ``(iss, jti, expires_at)`` of the call's JWT, is remembered in the same
        transaction; when that token was already used the whole transaction is rolled back and
        :class:`ReplayedToken` is raised, so a replayed call leaves no decision behind.
        """
        rows = []
        for record in records:
            if not isinstance(record, DecisionRecord):
                raise TypeError("record_decisions expects DecisionRecords")
            if not _PATIENT_HASH.match(record.patient_hash or ""):
                # Guard against a raw patient id reaching the audit log.
                raise ValueError("DecisionRecord.patient_hash must be audit.patient_hash(...) (64 hex digits)")
            if record.user_hash is not None and not _PATIENT_HASH.match(record.user_hash):
                raise ValueError("DecisionRecord.user_hash must be audit.user_hash(...) (64 hex digits)")
            rows.append((record, record.instance or instance_name(), json.dumps(list(record.order_codes))))

        purge = jti is not None and self._jti_purge_due()

        def write(tx: Tx) -> None:
            if jti is not None and not _insert_jti(tx, jti, purge):
                raise ReplayedToken("JWT jti already used")
            for record, instance, order_codes in rows:
                row = tx.execute(
                    "INSERT INTO decisions (decided_at, service_id, hook, hook_instance, patient_hash, "
                    "order_codes, order_ref, scenario_id, rating, pama_rating, outcome, knowledge_version, "
                    "consult_id, latency_ms, instance, user_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (tx.ts(record.decided_at), record.service_id, record.hook, record.hook_instance,
                     record.patient_hash, order_codes, record.order_ref, record.scenario_id, record.rating,
                     record.pama_rating, record.outcome, record.knowledge_version, record.consult_id,
                     float(record.latency_ms), instance, record.user_hash),
                ).fetchone()
                for position, card in enumerate(record.cards):
                    # A card uuid already recorded keeps its first decision.
                    tx.execute(
                        "INSERT INTO cards (uuid, decision_id, position, indicator, summary, suggestion_uuids) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO NOTHING",
                        (card.uuid, row[0], position, card.indicator, card.summary,
                         json.dumps(list(card.suggestion_uuids))),
                    )
            rollup.add_decisions(tx, (
                (r.decided_at, r.service_id, r.scenario_id, r.outcome, r.rating, r.knowledge_version,
                 len(r.cards), r.latency_ms) for r, _, _ in rows))

        if rows or jti is not None:
            self._run(write)

    def record_feedback(self, service_id: str, entries: list[dict]) -> int:
        """Store validated CDS Hooks feedback entries durably; returns how many were new.

        Each card uuid is resolved to its decision (and so its ``hookInstance``) when known.
        An entry already stored (same card, outcome and outcomeTimestamp) is skipped without
        error, so a retried POST is harmless. ``overrideReason.userComment`` is free text that
        may name the patient: only its presence is stored, never its text.
        """
        received_at = datetime.now(timezone.utc)
        instance = instance_name()
        rows = []
        for entry in entries:
            override = entry.get("overrideReason") or {}
            reason = override.get("reason") or {}
            accepted = [s.get("id") for s in entry.get("acceptedSuggestions") or ()
                        if isinstance(s, Mapping) and s.get("id")]
            rows.append((
                str(entry["card"]), str(entry["outcome"]), _parse_timestamp(entry.get("outcomeTimestamp")),
                json.dumps(accepted), reason.get("system"), reason.get("code"), reason.get("display"),
                bool(override.get("userComment")),
            ))

        def write(tx: Tx) -> int:
            stored = 0
            for card, outcome, outcome_ts, accepted, r_system, r_code, r_display, comment in rows:
                found = tx.execute(
                    "SELECT c.decision_id, d.hook_instance FROM cards c "
                    "JOIN decisions d ON d.id = c.decision_id WHERE c.uuid = ?", (card,)
                ).fetchone()
                decision_id, hook_instance = found if found else (None, None)
                cur = tx.execute(
                    "INSERT INTO feedback (received_at, service_id, card_uuid, outcome, outcome_timestamp, "
                    "accepted_suggestions, override_reason_system, override_reason_code, "
                    "override_reason_display, has_user_comment, decision_id, hook_instance, instance) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (card_uuid, outcome, outcome_timestamp) DO NOTHING",
                    (tx.ts(received_at), service_id, card, outcome, tx.ts(outcome_ts), accepted,
                     r_system, r_code, r_display, comment, decision_id, hook_instance, instance),
                )
                if cur.rowcount > 0:
                    stored += 1
                    rollup.add_feedback(tx, received_at, service_id, decision_id, outcome, r_code, r_display)
            return stored

        return self._run(write, durable=True)

    # ---------------------------------------------------------------- JWT replay cache

    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """True the first time ``(iss, jti)`` is seen (or after its earlier entry expired)."""
        purge = self._jti_purge_due()
        return self._run(lambda tx: _insert_jti(tx, (iss, jti, expires_at), purge))

    def _jti_purge_due(self) -> bool:
        with self._lock:
            mono = time.monotonic()
            if mono >= self._next_jti_purge:
                self._next_jti_purge = mono + _JTI_PURGE_INTERVAL_S
                return True
        return False

    # ---------------------------------------------------------------- audit key

    def audit_key(self) -> bytes:
        """The key for :func:`cds_service.audit.records.patient_hash`, created once per database."""
        if self._audit_key is not None:
            return self._audit_key

        def read_or_create(tx: Tx) -> str:
            select = "SELECT value FROM meta WHERE name = ?"
            row = tx.execute(select, (_AUDIT_KEY_NAME,)).fetchone()
            if row is None:
                tx.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                           (_AUDIT_KEY_NAME, secrets.token_hex(32)))
                row = tx.execute(select, (_AUDIT_KEY_NAME,)).fetchone()
            return row[0]

        key = bytes.fromhex(self._run(read_or_create, durable=True))
        self._audit_key = key
        return key

    # ---------------------------------------------------------------- export

    def export(self, what: str, fmt: str, out: TextIO, since: datetime | None = None) -> int:
        """Write ``decisions`` or ``feedback`` (oldest first) as ``csv`` or ``json``; rows written.

        See :func:`cds_service.audit.export.write_export` for the formats.
        """
        check_export_request(what, fmt)
        return self._run(lambda tx: write_export(tx, what, fmt, out, since), readonly=True, retry=False)

    # ---------------------------------------------------------------- health and shutdown

    def ping(self) -> bool:
        """True when the database answers ``SELECT 1``."""
        try:
            return self._run(lambda tx: tx.execute("SELECT 1").fetchone()[0] == 1, readonly=True)
        except Exception as exc:
            log.warning("database ping failed: %s", type(exc).__name__)
            return False

    def write_problem(self) -> str | None:
        """Why the database cannot take a write now (``None``: it can), by committing one.

        ``SELECT 1`` succeeds on a read-only, full or write-locked database; readiness must
        fail there, since every hook call writes its decisions. One row in ``meta`` is
        rewritten (one small page, no fsync on SQLite).
        """
        def probe(tx: Tx) -> None:
            tx.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                       "SET value = excluded.value", (_PROBE_NAME, datetime.now(timezone.utc).isoformat()))

        try:
            self._run(probe)
        except DatabaseUnavailable as fault:
            return fault.reason
        except Exception as exc:  # not a known fault: still not ready, say what kind
            log.warning("database write probe failed: %s", type(exc).__name__)
            return f"database write failed ({type(exc).__name__})"
        return None

    def close_idle_connections(self) -> None:
        """Close pooled connections (before forking workers); the store stays usable."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close_quietly(conn)

    def close(self) -> None:
        """Close idle connections; connections in use are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close_quietly(conn)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- export writers


