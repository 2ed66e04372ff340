"""Storage of the committee console's accounts, sessions and failed sign-ins (no hashing here).

Everything lives in the audit database, so a session opened on one worker or instance is known to
all, and the sign-in rate limit counts failures from every worker. Session tokens are stored only
as their SHA-256 (a leaked table opens no session); passwords only as the hash the console made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cds_service.audit.store import Store


@dataclass(frozen=True)
class Account:
    username: str
    password_hash: str
    role: str
    created_at: datetime


@dataclass(frozen=True)
class Session:
    username: str
    role: str
    csrf_token: str
    expires_at: datetime


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def put_account(store: Store, username: str, password_hash: str, role: str) -> bool:
    """Create the account or replace its password and role; True when it is new."""
    def write(tx) -> bool:
        found = tx.execute("SELECT 1 FROM console_users WHERE username = ?", (username,)).fetchone()
        if found:
            tx.execute("UPDATE console_users SET password_hash = ?, role = ? WHERE username = ?",
                       (password_hash, role, username))
            tx.execute("DELETE FROM console_sessions WHERE username = ?", (username,))
            return False
        tx.execute("INSERT INTO console_users (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
                   (username, password_hash, role, tx.ts(_now())))
        return True

    return store.run(write, durable=True)


def delete_account(store: Store, username: str) -> bool:
    def write(tx) -> bool:
        tx.execute("DELETE FROM console_sessions WHERE username = ?", (username,))
        return tx.execute("DELETE FROM console_users WHERE username = ?", (username,)).rowcount > 0

    return store.run(write, durable=True)


def accounts(store: Store) -> list[Account]:
    def read(tx) -> list[Account]:
        rows = tx.execute("SELECT username, password_hash, role, created_at FROM console_users "
                          "ORDER BY username").fetchall()
        return [Account(r[0], r[1], r[2], tx.from_ts(r[3])) for r in rows]

    return store.run(read, readonly=True)


def account(store: Store, username: str) -> Account | None:
    return next((a for a in accounts(store) if a.username == username), None)


def open_session(store: Store, token: str, username: str, csrf_token: str, lifetime: timedelta) -> None:
    now = _now()

    def write(tx) -> None:
        tx.execute("DELETE FROM console_sessions WHERE expires_at < ?", (tx.ts(now),))
        tx.execute("INSERT INTO console_sessions (token_hash, username, csrf_token, created_at, expires_at) "
                   "VALUES (?, ?, ?, ?, ?)", (token_digest(token), username, csrf_token, tx.ts(now),
                                              tx.ts(now + lifetime)))

    store.run(write)


def session(store: Store, token: str) -> Session | None:
    """The live session of ``token`` (with its account's current role), or None."""
    def read(tx) -> Session | None:
        row = tx.execute(
            "SELECT s.username, u.role, s.csrf_token, s.expires_at FROM console_sessions s "
            "JOIN console_users u ON u.username = s.username WHERE s.token_hash = ? AND s.expires_at > ?",
            (token_digest(token), tx.ts(_now()))).fetchone()
        return Session(row[0], row[1], row[2], tx.from_ts(row[3])) if row else None

    return store.run(read, readonly=True)


def close_session(store: Store, token: str) -> None:
    store.run(lambda tx: tx.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_digest(token),)))


def count_failures(store: Store, subjects: tuple[str, ...], window: timedelta) -> dict[str, int]:
    """Failed sign-ins of each subject (``user:<name>``, ``addr:<ip>``) within the window."""
    since = _now() - window

    def read(tx) -> dict[str, int]:
        return {s: tx.execute("SELECT COUNT(*) FROM console_signin_failures WHERE subject = ? AND failed_at > ?",
                              (s, tx.ts(since))).fetchone()[0] for s in subjects}

    return store.run(read, readonly=True)


def add_failure(store: Store, subjects: tuple[str, ...], keep: timedelta) -> None:
    now = _now()

    def write(tx) -> None:
        tx.execute("DELETE FROM console_signin_failures WHERE failed_at < ?", (tx.ts(now - keep),))
        for subject in subjects:
            tx.execute("INSERT INTO console_signin_failures (subject, failed_at) VALUES (?, ?)",
                       (subject, tx.ts(now)))

    store.run(write)


def clear_failures(store: Store, subject: str) -> None:
    store.run(lambda tx: tx.execute("DELETE FROM console_signin_failures WHERE subject = ?", (subject,)))
