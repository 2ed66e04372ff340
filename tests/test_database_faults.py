"""Database faults are 503 with a reason and Retry-After, /ready says so, and recovery needs nobody.

Each fault is made for real against ``python -m cds_service serve`` in its own process: a SQLite
write lock held by another connection, a SQLite file the server cannot write (run as root, the server
drops the capabilities that bypass file modes, so it meets them like an unprivileged user), a full
filesystem (a private tmpfs, root only), and a PostgreSQL server stopped and started again.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from cds_service.audit.store import Store
from tests.conftest import free_port
from tests.fuzz_bodies import valid_feedback_entry
from tests.pg_harness import TemporaryCluster, find_server_bin
from tests.sandbox_requests import SELECT_ID, order_select
from tests.service_process import WITHOUT_FILE_OVERRIDE, start_dev_server

JSON = {"Content-Type": "application/json"}


def _feedback(url: str) -> requests.Response:
    return requests.post(f"{url}/cds-services/{SELECT_ID}/feedback", json={"feedback": [valid_feedback_entry()]},
                         headers=JSON, timeout=20)


def _rated_call(url: str) -> requests.Response:
    # A bone scan for a breast-cancer history is rated, so the call writes a decision.
    return requests.post(f"{url}/cds-services/{SELECT_ID}", json=order_select("78306", ["415076002"]),
                         headers=JSON, timeout=20)


def _assert_unavailable(answer: requests.Response, reason_word: str) -> None:
    assert answer.status_code == 503, answer.text[:300]
    assert answer.json()["error"] == "service-unavailable"
    assert reason_word in answer.json()["message"], answer.json()
    assert int(answer.headers["Retry-After"]) > 0


def _assert_not_ready(url: str, reason_word: str) -> None:
    ready = requests.get(f"{url}/ready", timeout=20)
    assert ready.status_code == 503 and ready.json()["database"] is False, ready.text
    assert reason_word in ready.json()["database_problem"]


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while requests.get(f"{url}/ready", timeout=20).status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover by itself"
        time.sleep(0.3)


@pytest.fixture
def sqlite_service(tmp_path):
    port = free_port()
    server = start_dev_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(url)
    yield url, tmp_path / "service.sqlite3"
    server.stop()


def test_a_write_lock_held_elsewhere_is_503_after_a_short_wait_then_recovers(sqlite_service):
    url, db = sqlite_service
    assert _feedback(url).status_code == 200
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        started = time.monotonic()
        answer = _feedback(url)
        waited = time.monotonic() - started
        _assert_unavailable(answer, "locked")
        assert waited < 5, f"a locked database held the caller {waited:.1f} s"
        _assert_unavailable(_rated_call(url), "locked")
        _assert_not_ready(url, "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _feedback(url).status_code == 200
    assert _rated_call(url).status_code == 200
    _wait_ready(url, timeout=5)


def _unprivileged() -> tuple[str, ...]:
    """How to run the server so that a file's mode binds it (root writes any file otherwise)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot make a file unwritable for the server")
    return WITHOUT_FILE_OVERRIDE


def _chmod_database(db: Path, mode: int) -> None:
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.exists():
            os.chmod(path, mode)


def test_a_database_file_the_server_cannot_write_is_503_and_not_ready_until_fixed(tmp_path):
    prefix = _unprivileged()
    db = tmp_path / "service.sqlite3"
    with Store.from_url(f"sqlite:///{db}") as store:  # schema and audit key exist, as after a first start
        store.init_schema()
        store.audit_key()
    _chmod_database(db, 0o400)  # read-only for its owner, the server's user

    port = free_port()
    server = start_dev_server(tmp_path, port, prefix=prefix)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(server, url)
        _assert_not_ready(url, "read-only")
        _assert_unavailable(_feedback(url), "read-only")
        _assert_unavailable(_rated_call(url), "read-only")
        # The operator gives the file back its mode: the connections opened read-only were
        # discarded, so the next call writes without a restart.
        _chmod_database(db, 0o600)
        assert _feedback(url).status_code == 200
        assert _rated_call(url).status_code == 200
        _wait_ready(url, timeout=5)
    finally:
        server.stop()
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 1
        assert check.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 1


def _wait_health(server, url: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert server.alive(), server.log()
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)


@pytest.fixture
def pg_cluster():
    """A private PostgreSQL cluster this test may stop and start (not the session's shared one)."""
    bindir = find_server_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL binaries in CI (run .ci/postgres.sh)")
        pytest.skip("no PostgreSQL binaries (run .ci/postgres.sh)")
    cluster = TemporaryCluster(bindir)
    try:
        url = cluster.start()
        yield cluster, url
    finally:
        cluster.stop()


def test_postgresql_stopped_is_503_and_the_service_recovers_when_it_is_back(pg_cluster, tmp_path):
    cluster, database_url = pg_cluster
    port = free_port()
    server = start_dev_server(tmp_path, port, CDS_DATABASE_URL=database_url)
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(url)
        assert _feedback(url).status_code == 200 and _rated_call(url).status_code == 200
        cluster.halt()
        _assert_unavailable(_feedback(url), "database")
        _assert_unavailable(_rated_call(url), "database")
        _assert_not_ready(url, "database")
        assert server.alive()
        cluster.resume()
        _wait_ready(url)
        assert _feedback(url).status_code == 200
        assert _rated_call(url).status_code == 200
    finally:
        server.stop()


@pytest.fixture
def small_filesystem():
    """A 4 MiB tmpfs of our own, so that filling it fills no one else's disk (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a private small filesystem needs root (mount -t tmpfs)")
    mountpoint = Path(tempfile.mkdtemp(prefix="cds-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_503_and_writes_resume_once_space_is_freed(small_filesystem, tmp_path):
    port = free_port()
    server = start_dev_server(tmp_path, port, CDS_DATABASE_URL=f"sqlite:///{small_filesystem / 'service.sqlite3'}")
    url = f"http://127.0.0.1:{port}"
    many = [valid_feedback_entry() for _ in range(500)]  # more pages than the WAL holds already
    try:
        server.wait_ready(url)
        assert _feedback(url).status_code == 200
        filler = _fill(small_filesystem)
        answer = requests.post(f"{url}/cds-services/{SELECT_ID}/feedback", json={"feedback": many}, timeout=20)
        _assert_unavailable(answer, "full")
        filler.unlink()
        answer = requests.post(f"{url}/cds-services/{SELECT_ID}/feedback", json={"feedback": many}, timeout=20)
        assert answer.status_code == 200 and answer.json() == {"stored": 500}
        _wait_ready(url, timeout=5)
    finally:
        server.stop()
