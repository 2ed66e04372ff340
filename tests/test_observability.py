"""JSON logs keep PHI out (allow-listed fields only); metrics render and aggregate across processes."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cds_service.observability import LOG_FIELDS, Metrics, configure_logging, mark_process_dead

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def log_stream():
    """configure_logging into a buffer; the root logger's handlers and level are restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    for handler in list(root.handlers):
        if getattr(handler, "_cds_json_handler", False):
            root.removeHandler(handler)
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Exposition text → {(sample name, labels): value}, independent of label order."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_log_lines_are_json_with_allow_listed_fields_only(log_stream):
    logging.getLogger("cds_service.test").info(
        "hook answered",
        extra={
            "hook_instance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "service_id": "onc-imaging-order-select",
            "hook": "order-select", "status": 200, "latency_ms": 3.25, "cards": 1, "rating": "may-be-appropriate",
            # Must never reach the log:
            "patient_id": "pat-onc-1", "access_token": "eyJhbGciOiJFUzM4NCJ9.secret", "authorization": "Bearer abc",
            "prefetch": {"patient": {"resourceType": "Patient", "name": [{"family": "Doe"}]}},
        },
    )
    [entry] = _lines(log_stream)
    assert entry["msg"] == "hook answered"
    assert entry["level"] == "INFO" and entry["logger"] == "cds_service.test"
    assert entry["ts"].endswith("Z")
    assert entry["hook_instance"] == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    assert entry["status"] == 200 and entry["latency_ms"] == 3.25 and entry["cards"] == 1
    assert set(entry) <= {"ts", "level", "logger", "msg"} | LOG_FIELDS
    raw = log_stream.getvalue()
    for secret in ("pat-onc-1", "eyJhbGciOiJFUzM4NCJ9", "Bearer abc", "Doe", "patient_id", "access_token", "prefetch"):
        assert secret not in raw


def test_exceptions_log_type_and_frames_but_not_the_message(log_stream):
    try:
        {}["pat-onc-1"]
    except KeyError:
        logging.getLogger("cds_service.test").exception("unexpected error", extra={"status": 500})
    [entry] = _lines(log_stream)
    assert entry["error"] == "KeyError"
    assert entry["stack"] and all("pat-onc-1" not in frame for frame in entry["stack"])
    assert "pat-onc-1" not in log_stream.getvalue()


def test_configure_logging_is_idempotent(log_stream):
    configure_logging("WARNING")
    configure_logging("INFO")
    flagged = [h for h in logging.getLogger().handlers if getattr(h, "_cds_json_handler", False)]
    assert len(flagged) == 1
    logging.getLogger("cds_service.test").info("once")
    assert len(_lines(log_stream)) == 1


def test_url_logging_libraries_stay_quiet_even_at_debug(log_stream):
    configure_logging("DEBUG")
    logging.getLogger("urllib3.connectionpool").debug('GET /fhir/Patient/pat-onc-1 HTTP/1.1" 200')
    assert "pat-onc-1" not in log_stream.getvalue()


def test_metrics_render_names_and_labels():
    metrics = Metrics(multiprocess_dir="")
    metrics.observe_request("onc-imaging-order-select", "order-select", 200, 0.0042)
    metrics.observe_request("onc-imaging-order-select", "order-select", 412, 0.0011)
    metrics.count_card("onc-imaging-order-select", "warning")
    metrics.count_rating("onc-imaging-order-select", "usually-not-appropriate")
    metrics.count_rating("onc-imaging-order-select", "made-up")
    metrics.count_feedback("onc-imaging-order-select", "overridden")
    metrics.count_fhir_fetch("ok")
    metrics.set_knowledge_version("2026.11.0")
    body, content_type = metrics.render()
    samples = _samples(body.decode())
    assert content_type.startswith("text/plain")
    assert _value(samples, "cds_request_latency_seconds_bucket", hook="order-select", le="0.005", service="onc-imaging-order-select") == 2.0
    assert _value(samples, "cds_request_latency_seconds_bucket", hook="order-select", le="0.001", service="onc-imaging-order-select") == 0.0
    assert _value(samples, "cds_request_latency_seconds_count", hook="order-select", service="onc-imaging-order-select") == 2.0
    assert _value(samples, "cds_requests_total", service="onc-imaging-order-select", status="412") == 1.0
    assert _value(samples, "cds_cards_total", indicator="warning", service="onc-imaging-order-select") == 1.0
    assert _value(samples, "cds_ratings_total", rating="usually-not-appropriate", service="onc-imaging-order-select") == 1.0
    assert _value(samples, "cds_ratings_total", rating="other", service="onc-imaging-order-select") == 1.0
    assert _value(samples, "cds_feedback_total", outcome="overridden", service="onc-imaging-order-select") == 1.0
    assert _value(samples, "cds_fhir_fetch_total", outcome="ok") == 1.0
    assert _value(samples, "cds_knowledge_info", version="2026.11.0") == 1.0


def test_suspended_metrics_count_nothing():
    metrics = Metrics(multiprocess_dir="")
    with metrics.suspended():
        metrics.observe_request("s", "order-select", 200, 0.001)
        metrics.count_rating("s", "not-rated")
    metrics.count_rating("s", "not-rated")
    text = metrics.render()[0].decode()
    samples = _samples(text)
    assert "cds_request_latency_seconds_count" not in text
    assert _value(samples, "cds_ratings_total", rating="not-rated", service="s") == 1.0


def test_two_apps_in_one_process_do_not_clash():
    Metrics(multiprocess_dir="").count_fhir_fetch("ok")
    Metrics(multiprocess_dir="").count_fhir_fetch("ok")  # own registry each: no "Duplicated timeseries"


_WORKER = textwrap.dedent(
    """
    import os, sys
    from cds_service.observability import Metrics
    m = Metrics()
    assert m.writes_to_multiprocess_dir
    n = int(sys.argv[1])
    for _ in range(n):
        m.observe_request("onc-imaging-order-sign", "order-sign", 200, 0.003)
        m.count_rating("onc-imaging-order-sign", "may-be-appropriate")
    m.set_knowledge_version("2026.11.0")
    print(os.getpid())
    """
)


def test_multiprocess_mode_aggregates_worker_processes(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    pids = [
        int(subprocess.run([sys.executable, "-c", _WORKER, str(count)], env=env, check=True, timeout=60,
                           capture_output=True, text=True).stdout)
        for count in (2, 3)
    ]
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process

    samples = _samples(Metrics(multiprocess_dir=str(tmp_path)).render()[0].decode())
    assert _value(samples, "cds_requests_total", service="onc-imaging-order-sign", status="200") == 5.0
    assert _value(samples, "cds_ratings_total", rating="may-be-appropriate", service="onc-imaging-order-sign") == 5.0
    assert _value(samples, "cds_request_latency_seconds_count", hook="order-sign", service="onc-imaging-order-sign") == 5.0
    assert _value(samples, "cds_knowledge_info", version="2026.11.0") == 1.0

    # gunicorn's child_exit hook: a dead worker's live gauges go, its counters stay.
    for pid in pids:
        mark_process_dead(pid, str(tmp_path))
    samples = _samples(Metrics(multiprocess_dir=str(tmp_path)).render()[0].decode())
    assert _value(samples, "cds_knowledge_info", version="2026.11.0") is None
    assert _value(samples, "cds_requests_total", service="onc-imaging-order-sign", status="200") == 5.0


def test_gunicorn_conf_defaults_and_multiprocess_dir(tmp_path):
    (tmp_path / "counter_99999.db").write_bytes(b"stale")
    env = {k: v for k, v in os.environ.items() if k not in ("CDS_BIND", "GUNICORN_PID", "_CDS_PROMETHEUS_DIR_OWNER")}
    env.update({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "WEB_CONCURRENCY": "3", "PYTHONPATH": str(REPO)})
    probe = (
        "import json, os; from cds_service.server import gunicorn_conf as c; "
        "print(json.dumps([c.bind, c.workers, c.worker_class, c.threads, c.preload_app, c.accesslog, "
        "os.listdir(os.environ['PROMETHEUS_MULTIPROC_DIR'])]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True, timeout=60)
    bind, workers, worker_class, threads, preload, accesslog, files = json.loads(out.stdout)
    assert (bind, workers, worker_class, threads, preload, accesslog) == ("0.0.0.0:8080", 3, "gthread", 2, True, None)
    assert files == []  # files of an earlier run are wiped before the app is loaded
