"""Command line: ``python -m cds_service {serve,replay,export,check-knowledge,fhir-server,console-user}``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m cds_service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service (development server; see docs/deployment.md for production)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)

    commands.add_parser("replay", help="replay FHIR fixtures over HTTP and compare with expectations", add_help=False)
    commands.add_parser("export", help="export decisions or feedback as CSV/JSON", add_help=False)
    check = commands.add_parser("check-knowledge", help="validate the knowledge base (and extra directories)")
    check.add_argument("extra_dirs", nargs="*", help="extra knowledge directories to validate on top of the base")
    check.add_argument("--base", default=None, help="knowledge directory replacing the packaged one")
    commands.add_parser("console-user", help="add, remove or list committee console accounts", add_help=False)
    commands.add_parser("fhir-server", help="serve FHIR fixture files on loopback (tests, demos)", add_help=False)

    if argv and argv[0] in {"replay", "export", "fhir-server", "console-user"}:
        return _delegate(argv[0], argv[1:])
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.host, args.port)
    if args.command == "check-knowledge":
        return _check_knowledge(args.base, args.extra_dirs)
    parser.error(f"unknown command {args.command}")
    return 2


def _serve(host: str, port: int) -> int:
    from cds_service.server.embedded import run_development_server

    return run_development_server(host, port)


def _check_knowledge(base: str | None, extra_dirs: list[str]) -> int:
    from cds_service.config import Settings
    from cds_service.kb.loader import KnowledgeError, load_knowledge

    try:
        # Every file is validated; the validation cache is left warm for the service's next start.
        knowledge = load_knowledge(base, extra_dirs, cache_dir=Settings.from_env().knowledge_cache, trust_cache=False)
    except KnowledgeError as error:
        print(f"knowledge base INVALID:\n{error}", file=sys.stderr)
        return 1
    print(
        f"knowledge base {knowledge.version} OK: {len(knowledge.scenarios)} scenarios, "
        f"{len(knowledge.procedures)} procedures, {len(knowledge.valuesets)} value sets, "
        f"{len(knowledge.sources)} sources"
    )
    return 0


def _delegate(command: str, rest: list[str]) -> int:
    if command == "replay":
        from cds_service.devtools.replay import main as replay_main

        return replay_main(rest)
    if command == "export":
        from cds_service.audit.export_cli import run_export

        return run_export(rest)
    if command == "console-user":
        from cds_service.console.users_cli import main as users_main

        return users_main(rest)
    from cds_service.devtools.fixture_fhir_server import main as fhir_main

    return fhir_main(rest) or 0
