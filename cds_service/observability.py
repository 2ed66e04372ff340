"""JSON logs keyed by ``hookInstance`` and Prometheus metrics, both safe for a service that sees PHI.

Logging: :func:`configure_logging` writes one JSON object per line on stderr. Only the fields in
:data:`LOG_FIELDS` ever leave the process; anything else given in ``extra`` is dropped. The
allow-list is the PHI guard: patient ids, names, prefetch bodies, tokens and ``Authorization``
headers have no field to go into. Put variable data in allow-listed ``extra`` keys and keep the
message itself a constant string::

    log.info("hook call", extra={"hook_instance": hi, "service_id": sid, "hook": hook,
                                 "status": 200, "latency_ms": 3.2, "cards": 1})

Metrics: :class:`Metrics` owns its own ``CollectorRegistry`` (so tests can build many apps in one
process). Under gunicorn with several workers, ``PROMETHEUS_MULTIPROC_DIR`` must be set *before*
``prometheus_client`` is first imported (``cds_service.server.gunicorn_conf`` does it); every worker then
writes its values to per-process files in that directory and :meth:`Metrics.render` merges them, so
``/metrics`` shows the sum over all workers whichever worker answers. The master must call
:func:`mark_process_dead` when a worker exits (gunicorn's ``child_exit`` hook, see
``gunicorn_conf.py``) so that live gauges of dead workers disappear.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from typing import IO, Iterator

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _prom_values
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "LOG_FIELDS",
    "JsonFormatter",
    "configure_logging",
    "Metrics",
    "RATINGS",
    "mark_process_dead",
    "multiprocess_dir_from_env",
]

#: ``extra`` keys that may appear in a log line. Nothing else passed in ``extra`` is written.
LOG_FIELDS: frozenset[str] = frozenset({
    "hook_instance", "service_id", "hook", "status", "latency_ms", "cards", "outcome", "rating",
    "scenario", "knowledge_version", "consult_id", "error", "instance", "method", "path", "iss",
})

#: Loggers of HTTP libraries that print URLs (``GET /Patient/123?...``) at DEBUG: never below WARNING.
_URL_LOGGING_LIBRARIES = ("urllib3", "requests", "werkzeug")

#: Marks the handler installed by :func:`configure_logging`, so a second call replaces nothing.
_HANDLER_FLAG = "_cds_json_handler"


def _utc_timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _stack_frames(tb) -> list[str]:
    """Where an exception went through, without its message or any local value (those may hold PHI)."""
    return [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in traceback.extract_tb(tb)]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then allow-listed ``extra`` keys.

    On an exception, ``error`` is the exception's class name (unless the caller gave ``error``) and
    ``stack`` lists ``file:line function`` frames. The exception message is left out on purpose:
    ``KeyError('pat-123')`` or a FHIR server's error text can carry patient data.
    """

    def __init__(self, fields: frozenset[str] = LOG_FIELDS):
        super().__init__()
        self._fields = fields

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        attrs = record.__dict__
        for key in self._fields:
            if key in attrs:
                entry[key] = attrs[key]
        if record.exc_info and record.exc_info[0] is not None:
            entry.setdefault("error", record.exc_info[0].__name__)
            entry["stack"] = _stack_frames(record.exc_info[2])
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO", *, stream: IO[str] | None = None) -> None:
    """Send every log record to ``stream`` (default stderr) as a JSON line, at ``level``.

    Idempotent: a second call changes the level (and stream, if given) of the one handler it
    installed, and never adds another.
    """
    root = logging.getLogger()
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level: {level!r}")
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)), None)
    if handler is None:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        setattr(handler, _HANDLER_FLAG, True)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    elif stream is not None:
        handler.setStream(stream)
    root.setLevel(numeric)
    for name in _URL_LOGGING_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


# --------------------------------------------------------------------------------------- metrics

#: Values of the ``rating`` label; anything else is counted as ``other``.
RATINGS: tuple[str, ...] = (
    "usually-appropriate", "may-be-appropriate", "usually-not-appropriate", "no-criteria-apply",
    "not-rated",
)
_INDICATORS = frozenset({"info", "warning", "critical"})
_FEEDBACK_OUTCOMES = frozenset({"accepted", "overridden"})
#: Distinct ``service`` label values kept before new ones are folded into ``other``; the web layer
#: should already pass ``unknown`` for ids that are not ours (URL paths are attacker-chosen).
_MAX_SERVICES = 32
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def multiprocess_dir_from_env() -> str | None:
    """The prometheus multiprocess directory from the environment, if any."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Forget the live gauges of an exited worker (call from gunicorn's ``child_exit``)."""
    path = path or multiprocess_dir_from_env()
    if not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


class Metrics:
    """The service's Prometheus metrics, with cheap update methods for the request path.

    ``multiprocess_dir`` (default: ``PROMETHEUS_MULTIPROC_DIR``) switches :meth:`render` to the
    multiprocess collector, which merges the files of all worker processes. Values are *written*
    to that directory only if the variable was set before ``prometheus_client`` was imported;
    :attr:`writes_to_multiprocess_dir` says whether that is the case.
    """

    def __init__(self, *, multiprocess_dir: str | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir if multiprocess_dir is not None else multiprocess_dir_from_env()
        self.writes_to_multiprocess_dir = bool(getattr(_prom_values.ValueClass, "_multiprocess", False))
        if self.multiprocess_dir and not self.writes_to_multiprocess_dir and multiprocess_dir is None:
            logging.getLogger(__name__).warning(
                "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported: "
                "this process's metrics will be missing from /metrics")
        self._enabled = True
        reg = self.registry
        self.request_latency = Histogram(
            "cds_request_latency_seconds", "Time to answer a CDS Hooks call, by service and hook.",
            ("service", "hook"), buckets=_LATENCY_BUCKETS, registry=reg)
        self.requests = Counter(
            "cds_requests", "CDS Hooks calls answered, by service and HTTP status.",
            ("service", "status"), registry=reg)
        self.cards = Counter(
            "cds_cards", "Cards returned, by service and card indicator.",
            ("service", "indicator"), registry=reg)
        self.ratings = Counter(
            "cds_ratings", "Orders rated, by service and appropriateness rating.",
            ("service", "rating"), registry=reg)
        self.feedback = Counter(
            "cds_feedback", "Card feedback received, by service and outcome.",
            ("service", "outcome"), registry=reg)
        self.fhir_fetch = Counter(
            "cds_fhir_fetch", "Outbound FHIR fetches made to complete prefetch, by outcome.",
            ("outcome",), registry=reg)
        # livemax: a dead worker's value goes away (mark_process_dead); the preloading master's
        # value, set once when the app is built, stays for the life of the server.
        self.knowledge_info = Gauge(
            "cds_knowledge_info", "Knowledge base version loaded (value is always 1).",
            ("version",), registry=reg, multiprocess_mode="livemax")
        self._knowledge_version: str | None = None
        self._services: set[str] = set()
        # (metric id, label values) -> child; skips prometheus_client's label validation and lock.
        self._children: dict[tuple, object] = {}
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            self._render_registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._render_registry, path=self.multiprocess_dir)
        else:
            self._render_registry = self.registry

    # -- hot path ---------------------------------------------------------------------------

    def _child(self, metric, *labels: str):
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _service(self, service: str) -> str:
        if service in self._services:
            return service
        if len(self._services) >= _MAX_SERVICES:
            return "other"
        self._services.add(service)
        return service

    def observe_request(self, service: str, hook: str, status: int | str, seconds: float) -> None:
        if not self._enabled:
            return
        service = self._service(service)
        self._child(self.request_latency, service, hook or "none").observe(seconds)
        self._child(self.requests, service, str(status)).inc()

    def count_card(self, service: str, indicator: str) -> None:
        if self._enabled:
            self._child(self.cards, self._service(service), indicator if indicator in _INDICATORS else "other").inc()

    def count_rating(self, service: str, rating: str) -> None:
        if self._enabled:
            self._child(self.ratings, self._service(service), rating if rating in RATINGS else "other").inc()

    def count_feedback(self, service: str, outcome: str) -> None:
        if self._enabled:
            self._child(self.feedback, self._service(service), outcome if outcome in _FEEDBACK_OUTCOMES else "other").inc()

    def count_fhir_fetch(self, outcome: str) -> None:
        """``outcome``: a short fixed label such as ``ok``, ``not-allowed``, ``timeout``, ``error``."""
        if self._enabled:
            self._child(self.fhir_fetch, outcome).inc()

    # -- the rest ---------------------------------------------------------------------------

    def set_knowledge_version(self, version: str) -> None:
        """Publish the loaded knowledge version (not affected by :meth:`suspended`)."""
        if self._knowledge_version is not None and self._knowledge_version != version:
            self.knowledge_info.labels(self._knowledge_version).set(0)
        self._knowledge_version = version
        self.knowledge_info.labels(version).set(1)

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Count nothing inside the block: warm-up requests are not traffic."""
        previous, self._enabled = self._enabled, False
        try:
            yield
        finally:
            self._enabled = previous

    def render(self) -> tuple[bytes, str]:
        """Body and content type for ``GET /metrics`` (all workers merged in multiprocess mode)."""
        return generate_latest(self._render_registry), CONTENT_TYPE_LATEST
