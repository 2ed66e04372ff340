"""PostgreSQL backend (several instances share one database): psycopg 3, autocommit connections."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from cds_service.audit.backend import Backend

_PG_CONNECT_TIMEOUT_S = 5
#: A statement waiting longer than this for a row or table lock fails (and the call answers 503).
_PG_LOCK_TIMEOUT = "2s"


_PG_SCHEMA_LOCK = 0x0C05_A0D1  # pg_advisory_xact_lock key serialising init_schema


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, url: str):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.url = url
        self._psycopg = psycopg
        self.disconnect_errors = (psycopg.OperationalError, psycopg.InterfaceError)
        params = conninfo_to_dict(url)
        self.connect_kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self.connect_kwargs["connect_timeout"] = _PG_CONNECT_TIMEOUT_S
        if "application_name" not in params:
            self.connect_kwargs["application_name"] = "onc-imaging-cds"

    def connect(self) -> Any:
        conn = self._psycopg.connect(self.url, autocommit=True, **self.connect_kwargs)
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(f"SET lock_timeout = '{_PG_LOCK_TIMEOUT}'")
        except BaseException:
            conn.close()
            raise
        return conn

    def fault_reason(self, error: BaseException) -> str | None:
        errors = self._psycopg.errors
        if isinstance(error, (errors.ReadOnlySqlTransaction, errors.AdminShutdown, errors.CannotConnectNow)):
            return "database is read-only or shutting down"
        if isinstance(error, (errors.DiskFull, errors.InsufficientResources, errors.OutOfMemory)):
            return "database or disk is full"
        if isinstance(error, (errors.LockNotAvailable, errors.QueryCanceled, errors.DeadlockDetected)):
            return "database is locked by another connection"
        if isinstance(error, (self._psycopg.OperationalError, self._psycopg.InterfaceError)):
            return "database unavailable"
        return None

    @contextmanager
    def transaction(self, conn: Any, *, durable: bool, schema_lock: bool, readonly: bool) -> Iterator[None]:
        with conn.transaction():
            if readonly:
                conn.execute("SET TRANSACTION READ ONLY")
            if durable:
                conn.execute("SET LOCAL synchronous_commit = on")
            if schema_lock:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            yield

    def reusable(self, conn: Any) -> bool:
        from psycopg.pq import TransactionStatus

        return not conn.closed and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE

    def broken(self, conn: Any) -> bool:
        return conn.closed or conn.broken
