"""Production gunicorn settings. Run::

    gunicorn -c python:cds_service.server.gunicorn_conf cds_service.server.wsgi:app

Environment: ``CDS_BIND`` (default ``0.0.0.0:8080``), ``WEB_CONCURRENCY`` (worker processes;
default: the CPUs this process may run on; in a container set it to the CPU request/limit, since
CPU quotas are not visible here), ``PROMETHEUS_MULTIPROC_DIR`` (default: a fresh temporary
directory). Any other gunicorn option can be overridden with ``GUNICORN_CMD_ARGS``, e.g.
``GUNICORN_CMD_ARGS="--threads 4"``; command-line options win over this file.

Why these values (docs/deployment.md has the long form): rating is CPU-bound Python that holds
the GIL, so parallelism comes from processes (one per core); the second thread per worker only
soaks up I/O waits (JWKS retrieval, outbound FHIR reads, the database). ``preload_app`` builds the
app (knowledge, model classes) once in the master and ``cds_service.server.wsgi`` warms it up and calls
``gc.freeze()``, so workers start fast and share those pages copy-on-write.
"""

from __future__ import annotations

import glob
import os
import tempfile

from gunicorn import glogging


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _prepare_multiprocess_dir() -> str:
    """Create (or empty) the prometheus multiprocess directory and export it.

    This must run when the config is loaded, not in ``on_starting``: with ``preload_app`` gunicorn
    imports the app (and so ``prometheus_client``, which picks its value class from the
    environment at import) *before* ``on_starting``, and the master writes its preload-time values
    (``cds_knowledge_info``) into this directory. Emptying it later would throw those away;
    emptying it now clears files left by an earlier run, whose pids may be reused (a container's
    gunicorn is often pid 1 every time) and whose values would otherwise be read back in.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="cds-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        return path
    os.makedirs(path, exist_ok=True)
    # A config reload (SIGHUP) re-reads this file in the same master and a re-exec (SIGUSR2)
    # starts a master that inherits GUNICORN_PID: the files then belong to live workers.
    if os.environ.get("_CDS_PROMETHEUS_DIR_OWNER") != str(os.getpid()) and "GUNICORN_PID" not in os.environ:
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
        os.environ["_CDS_PROMETHEUS_DIR_OWNER"] = str(os.getpid())
    return path


PROMETHEUS_DIR = _prepare_multiprocess_dir()

bind = os.environ.get("CDS_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("WEB_CONCURRENCY") or _cpu_count())
worker_class = "gthread"
threads = 2
preload_app = True
timeout = 30
graceful_timeout = 30
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
# The service logs one JSON line per hook call (keyed by hookInstance), so gunicorn's access log
# would only repeat it, in another format, with the full request line.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("CDS_LOG_LEVEL", "info").lower()
# gunicorn >= 25.1 opens a control socket in $HOME/.gunicorn by default: a read-only or shared
# home directory breaks it, and two servers on one host would fight over the path.
control_socket_disable = True
# Workers' temporary heartbeat files: /dev/shm avoids stalls on slow or read-only root disks.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


class JsonGunicornLogger(glogging.Logger):
    """gunicorn's own messages (boot, worker exits, timeouts) as JSON lines, like the service's."""

    def setup(self, cfg):
        super().setup(cfg)
        from cds_service.observability import JsonFormatter

        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())


logger_class = JsonGunicornLogger


def on_starting(server):
    """Master start: sweep files of other pids that appeared since the config was loaded.

    The directory was emptied when this file was loaded (see ``_prepare_multiprocess_dir``); only
    the master's own preload-time files are expected here now.
    """
    if "GUNICORN_PID" in os.environ:  # re-exec (SIGUSR2): the old generation's files are live
        return
    own = f"_{os.getpid()}.db"
    for path in glob.glob(os.path.join(PROMETHEUS_DIR, "*.db")):
        if not path.endswith(own):
            os.remove(path)
    server.log.info("prometheus multiprocess directory ready")


def child_exit(server, worker):
    """A worker exited (recycled by max_requests, timed out or crashed): drop its live gauges."""
    from cds_service.observability import mark_process_dead

    mark_process_dead(worker.pid, PROMETHEUS_DIR)
