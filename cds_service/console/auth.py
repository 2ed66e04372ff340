"""Who may see the console: local accounts (argon2id hashes), sessions, CSRF tokens, sign-in limits.

Passwords are hashed with argon2-cffi's ``PasswordHasher`` (argon2id, a random salt per hash, the
library's current parameters; a hash made with older parameters is replaced at the next sign-in).
A session is a random token in an HTTP-only cookie; the database holds only its digest, the
account name, its CSRF token and its expiry (:mod:`cds_service.audit.accounts`).

Sign-in attempts are limited per account and per client address by counting recent failures in the
database, so the limit holds across workers and instances. A limited account is refused even
with the right password until its window has passed: the answer must not tell a guesser when a
guess was right.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cds_service.audit import accounts
from cds_service.audit.accounts import Session
from cds_service.audit.store import Store

ROLES = ("viewer", "admin")
SESSION_LIFETIME = timedelta(hours=8)
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20
MIN_PASSWORD_LENGTH = 12
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# Verifying against this when the account does not exist costs as long as a real check, so the
# answer time does not reveal which account names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A refused account change (bad name, role or password), with the reason."""


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: a session token and CSRF token, or why not."""

    token: str | None = None
    csrf_token: str | None = None
    refused: str | None = None      # "wrong" (name or password) | "limited" (too many failures)


def check_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise AccountError("a user name is 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    return username


def add_user(store: Store, username: str, password: str, role: str) -> bool:
    """Create (or reset) an account; True when it is new. Its open sessions end on a reset."""
    check_username(username)
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    return accounts.put_account(store, username, _hasher.hash(password), role)


def remove_user(store: Store, username: str) -> bool:
    return accounts.delete_account(store, username)


def list_users(store: Store) -> list[accounts.Account]:
    return accounts.accounts(store)


def sign_in(store: Store, username: str, password: str, address: str) -> SignIn:
    subjects = (f"user:{username}", f"addr:{address}")
    failures = accounts.count_failures(store, subjects, FAILURE_WINDOW)
    if (failures[subjects[0]] >= MAX_FAILURES_PER_ACCOUNT
            or failures[subjects[1]] >= MAX_FAILURES_PER_ADDRESS):
        return SignIn(refused="limited")
    found = accounts.account(store, username) if _USERNAME.match(username or "") else None
    if not _verify(found.password_hash if found else _DUMMY_HASH, password) or found is None:
        accounts.add_failure(store, subjects, keep=FAILURE_WINDOW * 4)
        return SignIn(refused="wrong")
    if _hasher.check_needs_rehash(found.password_hash):
        accounts.put_account(store, found.username, _hasher.hash(password), found.role)
    accounts.clear_failures(store, subjects[0])
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    accounts.open_session(store, token, found.username, csrf, SESSION_LIFETIME)
    return SignIn(token=token, csrf_token=csrf)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password or "")
    except (VerificationError, InvalidHashError):
        return False


def current_session(store: Store, token: str | None) -> Session | None:
    if not token or len(token) > 200:
        return None
    return accounts.session(store, token)


def sign_out(store: Store, token: str | None) -> None:
    if token:
        accounts.close_session(store, token)


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and secrets.compare_digest(session.csrf_token, submitted)
