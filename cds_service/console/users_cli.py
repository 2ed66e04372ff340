"""``python -m cds_service console-user add|remove|list``: the console's accounts from a shell.

The password is read from the terminal (twice) or, with ``--password-stdin``, from one line of
standard input (scripts); it never appears on the command line, where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from cds_service.audit.store import Store
from cds_service.config import Settings
from cds_service.console.auth import ROLES, AccountError, add_user, list_users, remove_user


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m cds_service console-user",
                                     description="manage the committee console's accounts")
    parser.add_argument("--database-url", default=None, help="default: CDS_DATABASE_URL")
    commands = parser.add_subparsers(dest="action", required=True)
    add = commands.add_parser("add", help="create an account, or reset its password and role")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    remove = commands.add_parser("remove", help="delete an account (its sessions end)")
    remove.add_argument("username")
    commands.add_parser("list", help="list accounts and roles")
    args = parser.parse_args(argv)

    store = Store.from_url(args.database_url or Settings.from_env().database_url)
    store.init_schema()
    try:
        return _act(store, args)
    except AccountError as error:
        print(f"console-user: {error}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _act(store: Store, args: argparse.Namespace) -> int:
    if args.action == "list":
        for account in list_users(store):
            print(f"{account.username}\t{account.role}\t{account.created_at:%Y-%m-%d %H:%M} UTC")
        return 0
    if args.action == "remove":
        if not remove_user(store, args.username):
            print(f"console-user: no account {args.username!r}", file=sys.stderr)
            return 1
        print(f"removed {args.username}")
        return 0
    password = _read_password(args.password_stdin)
    created = add_user(store, args.username, password, args.role)
    print(f"{'created' if created else 'updated'} {args.username} ({args.role})")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first
