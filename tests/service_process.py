"""The service as a separate process on loopback: start it, wait for ``/ready``, stop it.

Used by the tests that attack the service from outside (slow clients, fuzzing), where the server
must be the real one in its own process: ``python -m cds_service serve``, or gunicorn behind nginx
started by ``deploy/run-production.sh``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any ``CDS_*`` setting of the caller's, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(settings)
    return env


class ServiceProcess:
    """A server process in its own session (so that stopping it stops its children too)."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_ready(self, url: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"server exited early (status {self.process.returncode}):\n{self.log()}")
            try:
                if requests.get(f"{url}/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"server was not ready within {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 40.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Children left behind by a crashed supervisor (its session is ours alone).
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


#: Run a command as root without the capabilities that bypass file permissions: the process then
#: meets a file's mode like an unprivileged user would (root's tests of unwritable files).
WITHOUT_FILE_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner")


def start_dev_server(tmp_path: Path, port: int, *, prefix: tuple[str, ...] = (), **settings: str) -> ServiceProcess:
    """``python -m cds_service serve`` on 127.0.0.1:``port`` with a SQLite database in ``tmp_path``.

    ``prefix``: a command the server runs under (e.g. :data:`WITHOUT_FILE_OVERRIDE`).
    """
    defaults = {"CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'service.sqlite3'}", "CDS_LOG_LEVEL": "WARNING"}
    env = clean_env(**{**defaults, **settings})
    command = [*prefix, sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return ServiceProcess(command, env, tmp_path, tmp_path / "serve.log")
