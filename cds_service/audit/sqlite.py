"""SQLite backend (the embedded default): WAL mode, ``synchronous=NORMAL`` except durable commits."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cds_service.audit.backend import Backend

_SQLITE_BUSY_TIMEOUT_S = 10.0


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
