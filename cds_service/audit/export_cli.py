"""``python -m cds_service export {decisions|feedback} [--format csv|json] [--output FILE]
[--since ISO-DATE] [--database-url URL]``: dump the audit log or the card feedback.

The export holds no PHI: patients appear only as keyed hashes, and feedback free text is never
stored. Exit status: 0 on success, 1 when the database cannot be read, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from cds_service.config import Settings
from cds_service.audit.store import Store, redact_url


def _since(value: str) -> datetime:
    """``2024-05-01`` (midnight UTC) or a full ISO-8601 date-time (UTC when no offset given)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date or date-time: {value!r}") from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cds_service export",
        description="Export the decision audit log or card feedback (no PHI: patients are keyed hashes).",
    )
    parser.add_argument("what", choices=("decisions", "feedback"))
    parser.add_argument("--format", dest="fmt", choices=("csv", "json"), default="csv", help="default: csv")
    parser.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
    parser.add_argument("--since", type=_since, default=None,
                        help="only rows decided/received at or after this UTC date or date-time")
    parser.add_argument("--database-url", default=None, help="default: CDS_DATABASE_URL or the built-in default")
    return parser


def run_export(argv: list[str]) -> int:
    """Run the export command; ``argv`` may start with the word ``export``. Returns the exit status."""
    argv = list(argv)
    if argv[:1] == ["export"]:
        argv = argv[1:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return int(exit_.code or 0)

    try:
        url = args.database_url or Settings.from_env().database_url
        store = Store.from_url(url)
    except ValueError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    if store.backend == "sqlite":
        path = Path(url.strip()[len("sqlite:///"):])
        if not path.is_file():  # do not create an empty database by mistyping its name
            print(f"export: no database at {path}", file=sys.stderr)
            return 1

    try:
        if args.output == "-":
            count = store.export(args.what, args.fmt, sys.stdout, since=args.since)
            sys.stdout.flush()
        else:
            count = _export_to_file(store, args, Path(args.output))
    except Exception as exc:  # database errors: report without a traceback or credentials
        print(f"export: reading {redact_url(url)} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    where = "standard output" if args.output == "-" else args.output
    print(f"export: {count} {args.what} rows written to {where}", file=sys.stderr)
    return 0


def _export_to_file(store: Store, args: argparse.Namespace, target: Path) -> int:
    """Write to a temporary file beside ``target`` and rename: never a half-written export."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            count = store.export(args.what, args.fmt, out, since=args.since)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return count
