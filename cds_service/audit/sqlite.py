"""SQLite backend (the embedded default): WAL mode, ``synchronous=NORMAL`` except durable commits."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cds_service.audit.backend import Backend

#: How long a write waits for another connection's lock before the call answers 503. Writes here
#: take microseconds to milliseconds: waiting longer only holds the EHR's request (issue 13).
_SQLITE_BUSY_TIMEOUT_S = 2.0

#: SQLite primary result codes that describe the database's state, not a bug (sqlite.org/rescode.html).
_FAULTS = {
    "SQLITE_BUSY": "database is locked by another connection",
    "SQLITE_LOCKED": "database is locked by another connection",
    "SQLITE_READONLY": "database is read-only",
    "SQLITE_FULL": "database or disk is full",
    "SQLITE_CANTOPEN": "database file cannot be opened",
    "SQLITE_IOERR": "disk I/O error on the database",
    "SQLITE_PERM": "no permission to write the database",
    "SQLITE_NOTADB": "database file is damaged",
    "SQLITE_CORRUPT": "database file is damaged",
}


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path):
        self.path = path

    def connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The file holds the audit hash key: owner-only (SQLite gives -wal/-shm the same mode).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(
            str(self.path), timeout=_SQLITE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            self._ensure_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the database to WAL (persistent; a no-op once done).

        The switch needs an exclusive lock and SQLite answers SQLITE_BUSY at once, without the
        busy handler, when another connection is switching at the same moment (several
        instances starting on a new file), so retry until the busy timeout.
        """
        deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch {self.path} to WAL mode (got {mode!r})")

    def fault_reason(self, error: BaseException) -> str | None:
        if isinstance(error, OSError):  # creating the file (directory not writable, disk full)
            return f"database file cannot be created ({error.strerror or type(error).__name__})"
        if not isinstance(error, sqlite3.DatabaseError):
            return None
        name = getattr(error, "sqlite_errorname", "") or ""
        primary = name.split("_")[:2]
        reason = _FAULTS.get(name) or _FAULTS.get("_".join(primary))
        if reason is None and isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            reason = _FAULTS["SQLITE_BUSY"]  # e.g. the WAL switch giving up
        return reason

    def reusable(self, conn: sqlite3.Connection) -> bool:
        return not conn.in_transaction  # a failed COMMIT may leave one open: do not pool it

    @contextmanager
    def transaction(self, conn: sqlite3.Connection, *, durable: bool, schema_lock: bool,
                    readonly: bool) -> Iterator[None]:
        if durable:
            conn.execute("PRAGMA synchronous=FULL")
        try:
            # IMMEDIATE takes the write lock up front (waiting up to the busy timeout) instead of
            # failing with SQLITE_BUSY when a read transaction later tries to write. Readers
            # (export, ping) take no lock: in WAL mode they never block writers.
            conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if conn.in_transaction:  # some errors (e.g. SQLITE_FULL) already rolled back
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if durable:
                conn.execute("PRAGMA synchronous=NORMAL")
