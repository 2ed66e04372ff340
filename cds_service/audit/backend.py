"""What the store needs from a database: connect, one transaction, pooling hints.

SQL is written once with ``?`` placeholders; :class:`Tx` turns them into ``%s`` for psycopg.
Each backend (:mod:`cds_service.audit.sqlite`, :mod:`cds_service.audit.postgres`) implements
:class:`Backend`.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterator, Sequence

class DatabaseUnavailable(Exception):
    """The database cannot do what was asked now (down, locked too long, read-only, full).

    A fault of the surroundings, not of the request: the web layer answers 503 with
    ``reason`` and ``Retry-After``. The connection that met it has been discarded.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


@lru_cache(maxsize=256)
def pg_sql(sql: str) -> str:
    if "%" in sql:
        raise ValueError("SQL text must not contain '%' (psycopg placeholder syntax)")
    return sql.replace("?", "%s")


class Tx:
    """Executes ``?``-style SQL on one connection inside one transaction."""

    __slots__ = ("conn", "backend")

    def __init__(self, conn: Any, backend: "Backend"):
        self.conn = conn
        self.backend = backend

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.backend.name == "postgresql":
            return self.conn.execute(pg_sql(sql), params)
        return self.conn.execute(sql, params)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple]:
        """Rows without loading them all (a server-side cursor on PostgreSQL)."""
        if self.backend.name == "postgresql":
            with self.conn.cursor(name="cds_export") as cur:
                cur.itersize = 500
                cur.execute(pg_sql(sql), params)
                yield from cur
        else:
            yield from self.conn.execute(sql, params)

    def ts(self, value: datetime | None) -> Any:
        """A datetime as the backend stores it."""
        if value is None:
            return None
        value = utc(value)
        return value if self.backend.name == "postgresql" else value.isoformat(timespec="microseconds")

    def from_ts(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return utc(datetime.fromisoformat(value))
        return utc(value)


class Backend:
    name = ""
    disconnect_errors: tuple[type[BaseException], ...] = ()

    def connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def transaction(self, conn: Any, *, durable: bool, schema_lock: bool, readonly: bool) -> Iterator[None]:
        raise NotImplementedError

    def reusable(self, conn: Any) -> bool:
        return True

    def fault_reason(self, error: BaseException) -> str | None:
        """What ``error`` says about the database's state (``None``: not a database fault)."""
        return None

    def broken(self, conn: Any) -> bool:
        return False
