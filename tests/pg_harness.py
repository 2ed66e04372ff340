"""PostgreSQL for the tests: the session fixture ``postgres_url``.

Order of preference:

1. ``CDS_TEST_POSTGRES_URL`` (an existing server, e.g. a CI service container);
2. a throw-away cluster: PostgreSQL server binaries found on ``PATH`` or under
   ``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu), ``/usr/pgsql-*/bin`` (RHEL) or
   ``/usr/local/pgsql/bin``; ``initdb`` into a temporary directory (as the ``postgres`` or
   ``nobody`` user when running as root, since initdb refuses root), started on a free loopback
   port with trust authentication, one database created; stopped and removed after the session;
3. otherwise the tests that need it are skipped, unless ``CI`` is true, when they fail:
   CI must never pass silently without PostgreSQL (``.ci/postgres.sh`` installs the binaries).

Enable with ``pytest_plugins = ["tests.pg_harness"]`` in ``tests/conftest.py``, or import the
fixture into a test module: ``from tests.pg_harness import postgres_url  # noqa: F401``.

``pg_schema_url(base_url, schema)`` gives a URL whose connections use their own schema, so each
test can have an empty database without creating databases.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

ENV_URL = "CDS_TEST_POSTGRES_URL"
DATABASE = "cds_test"
_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql*/bin")


def ci_enabled(environ: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(reason: str) -> None:
    """Skip, or fail when running under CI."""
    if ci_enabled():
        pytest.fail(f"PostgreSQL is required in CI (CI is set): {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


def find_server_bin() -> Path | None:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version first)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates: list[Path] = []
    for pattern in _BIN_GLOBS:
        candidates.extend(Path(p) for p in glob.glob(pattern))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", str(path))) or (0,)

    for directory in sorted(candidates, key=version, reverse=True):
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class TemporaryCluster:
    """A private PostgreSQL cluster in a temporary directory."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = _run_as_user()
        self.root = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.started = False
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
               "HOME": str(self.root), "TZ": "UTC"}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], cwd=self.root, env=env, capture_output=True,
            text=True, timeout=timeout, check=False, **kwargs,
        )

    def _check(self, proc: subprocess.CompletedProcess, what: str) -> None:
        if proc.returncode != 0:
            tail = ""
            if self.log.exists():
                tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stdout}{proc.stderr}{tail}")

    def start(self) -> str:
        self._check(self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                              "-E", "UTF8", "--locale=C", "--no-sync"), "initdb")
        for attempt in range(5):  # the free port may be taken between probe and bind
            self.port = _free_port()
            proc = self._pg_ctl_start()
            if proc.returncode == 0:
                self.started = True
                break
            if attempt == 4:
                self._check(proc, "pg_ctl start")
            time.sleep(0.2)
        self._create_database()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                   "-c max_connections=100 -c shared_buffers=32MB")
        return self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def halt(self) -> None:
        """Stop the server (fast shutdown: sessions are cut), keeping its data for :meth:`resume`."""
        self._check(self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60), "pg_ctl stop")

    def resume(self) -> None:
        """Start the halted server again on the same port."""
        self._check(self._pg_ctl_start(), "pg_ctl start")

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True,
                             connect_timeout=10) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of an empty-ish PostgreSQL database for this test session (see module docstring)."""
    url = os.environ.get(ENV_URL, "").strip()
    if url:
        yield url
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed")
    bindir = find_server_bin()
    if bindir is None:
        _unavailable(f"no server binaries (initdb/pg_ctl) on PATH or {', '.join(_BIN_GLOBS)}; "
                     f"set {ENV_URL} or run .ci/postgres.sh")
    cluster = TemporaryCluster(bindir)
    try:
        url = cluster.start()
    except Exception as exc:
        cluster.stop()
        # Binaries exist but the cluster did not start: a real problem, never a silent skip.
        pytest.fail(f"could not start a temporary PostgreSQL cluster from {bindir}: {exc}", pytrace=False)
    try:
        yield url
    finally:
        cluster.stop()


@contextmanager
def throwaway_schema(base_url: str, prefix: str = "t") -> Iterator[str]:
    """A fresh schema on the server at ``base_url``, dropped afterwards; yields its database URL."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(base_url, schema)
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def pg_schema_url(base_url: str, schema: str) -> str:
    """``base_url`` with ``options=-c search_path=<schema>`` added (keeps any existing options)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"unsafe schema name {schema!r}")
    parts = urlsplit(base_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = [v for k, v in query if k == "options"]
    rest = [(k, v) for k, v in query if k != "options"]
    combined = " ".join(options + [f"-c search_path={schema}"])
    return urlunsplit(parts._replace(query=urlencode(rest + [("options", combined)], quote_via=quote)))
