"""Work amplification: small invalid bodies against one gunicorn worker — time and worker memory each.

Starts ``gunicorn -c python:cds_service.server.gunicorn_conf cds_service.server.wsgi:app`` with one worker on a
free loopback port (temporary SQLite database; ``CDS_MODE=development``, so that bodies reach
validation without a JWT, as they would after a valid one in production), then sends, one at a
time, the bodies of issue 13:

* feedback with 100,000 and 300,000 empty entries (``{"feedback": [{}, {}, ...]}``);
* an order-select whose ``context.selections`` holds 300,000 invalid items;
* bodies nested deep: a whole hook body, an element of a draft order, a feedback ``card``.

For each: HTTP status, seconds, the ratio to a valid order-select in the same run (the baseline),
the worker's peak resident memory during the call (``VmHWM``, reset before each call through
``/proc/<pid>/clear_refs``) minus its resident memory before it, and its ``VmRSS`` afterwards
(memory the worker keeps). Each body goes to a fresh worker (the previous one is killed and the
master forks a new one from its preloaded app), so no case inherits another's memory or work. The issue's bound: growth < 100 MB and time < 1 s for any body under the
8 MiB limit. Loopback only; every request has a timeout; the server is stopped at the end.

    .venv/bin/python bench/bench_amplification.py [--skip-largest] [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
SELECT = "onc-imaging-order-select"
SIGN = "onc-imaging-order-sign"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def order_select(selections=None, note=None) -> dict:
    from cds_service.hooks.services import PREFETCH_TEMPLATES

    order = {
        "resourceType": "ServiceRequest", "id": "bench-order", "status": "draft", "intent": "plan",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "78306"}]},
        "subject": {"reference": "Patient/bench-patient"},
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "415076002"}]}],
    }
    if note is not None:
        order["note"] = note
    return {
        "hookInstance": str(uuid.uuid4()), "hook": "order-select",
        "context": {"patientId": "bench-patient", "userId": "Practitioner/bench",
                    "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": order}]},
                    "selections": selections if selections is not None else ["ServiceRequest/bench-order"]},
        "prefetch": {key: None for key in PREFETCH_TEMPLATES},
    }


def order_sign(orders: int) -> dict:
    """An order-sign of ``orders`` copies of the rated bone-scan order (distinct ids)."""
    body = order_select()
    body["hook"] = "order-sign"
    del body["context"]["selections"]
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    body["context"]["draftOrders"]["entry"] = [{"resource": {**order, "id": f"bench-order-{n}"}} for n in range(orders)]
    return body


def compact(body) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def deep_text(depth: int, kind: str) -> str:
    opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
    return opening * depth + "1" + closing * depth


def with_member(body: dict, path: tuple, raw_json: str) -> bytes:
    marker = f"@@{uuid.uuid4().hex}@@"
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return json.dumps(body).replace(json.dumps(marker), raw_json).encode()


def cases(skip_largest: bool) -> list[tuple[str, str, bytes]]:
    """(label, path, body)."""
    feedback = f"/cds-services/{SELECT}/feedback"
    hook = f"/cds-services/{SELECT}"
    found = [
        ("feedback, 100,000 empty entries", feedback, compact({"feedback": [{}] * 100_000})),
        ("feedback, 300,000 empty entries", feedback, compact({"feedback": [{}] * 300_000})),
        ("order-select, 300,000 invalid selections", hook, compact(order_select(selections=[0] * 300_000))),
        ("hook body nested 1,000 deep", hook, deep_text(1000, "dict").encode()),
        ("hook body nested 100,000 deep", hook, deep_text(100_000, "list").encode()),
        ("draft order element nested 900 deep", hook,
         with_member(order_select(), ("context", "draftOrders", "entry", 0, "resource", "note"), deep_text(900, "list"))),
        ("feedback card nested 1,000 deep", feedback,
         with_member({"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-11-21T08:13:37Z"}]},
                     ("feedback", 0, "card"), deep_text(1000, "list"))),
    ]
    # Bodies at the bounds of cds_service/hooks/limits.py (the largest ones that reach the schema
    # check or the answer), and the order-sign of issue 13 (5,000 orders: a 35.7 MB answer before).
    found += [
        ("feedback, 500 empty entries (the bound)", feedback, compact({"feedback": [{}] * 500})),
        ("order-sign, 5,000 draft orders", f"/cds-services/{SIGN}", compact(order_sign(5000))),
        ("order-sign, 100 draft orders (the bound)", f"/cds-services/{SIGN}", compact(order_sign(100))),
    ]
    if skip_largest:
        found = [case for case in found if "300,000" not in case[0]]
    return found


def worker_pid(master: int, not_this: int | None = None) -> int:
    for _ in range(300):
        children = [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
        children = [pid for pid in children if pid != not_this]
        if children:
            return children[0]
        time.sleep(0.1)
    raise RuntimeError("gunicorn has no worker")


def fresh_worker(session, url: str, master: int, old: int, valid: bytes) -> int:
    """Replace the worker (SIGKILL: it may still be busy with the last body) and warm the new one.

    Each case then starts from the same memory, and a case that timed out does not keep working
    under the next one. The master forks the new worker from its preloaded app in about a second.
    """
    os.kill(old, signal.SIGKILL)
    pid = worker_pid(master, not_this=old)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if session.get(f"{url}/ready", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            session.close()
        time.sleep(0.1)
    for _ in range(3):
        session.post(f"{url}/cds-services/{SELECT}", data=valid, headers={"Content-Type": "application/json"}, timeout=10)
    return pid


def memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(rest.split()[0])
    return values


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS


def start_gunicorn(tmp: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"CDS_MODE": "development", "CDS_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1",
                "CDS_DATABASE_URL": f"sqlite:///{tmp / 'audit.sqlite3'}", "CDS_LOG_LEVEL": "WARNING",
                # One long request must not get the worker killed mid-measurement.
                "GUNICORN_CMD_ARGS": "--timeout 300"})
    log = open(tmp / "gunicorn.log", "w")
    return subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:cds_service.server.gunicorn_conf",
                             "cds_service.server.wsgi:app"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        try:
            if requests.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn was not ready in time")


def measure(session, url: str, pid: int, path: str, body: bytes, timeout: float) -> dict:
    before = memory_kib(pid)
    reset_peak(pid)
    started = time.perf_counter()
    try:
        answer = session.post(url + path, data=body, headers={"Content-Type": "application/json"}, timeout=timeout)
        status = str(answer.status_code)
    except requests.RequestException as error:
        status = type(error).__name__
    seconds = time.perf_counter() - started
    try:
        after = memory_kib(pid)
    except FileNotFoundError:
        return {"status": status + " (worker died)", "seconds": seconds, "growth_mb": float("nan"), "rss_mb": float("nan")}
    return {"status": status, "seconds": seconds, "growth_mb": (after["VmHWM"] - before["VmRSS"]) / 1024,
            "rss_mb": after["VmRSS"] / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-largest", action="store_true", help="leave out the 300,000-item bodies (~5 GB today)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each answer")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="cds-amplification-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_gunicorn(Path(tmp), port)
        try:
            wait_ready(url, process)
            session = requests.Session()
            pid = worker_pid(process.pid)
            valid = json.dumps(order_select()).encode()
            for _ in range(5):  # warm the worker's first-request paths
                measure(session, url, pid, f"/cds-services/{SELECT}", valid, args.timeout)
            runs = [measure(session, url, pid, f"/cds-services/{SELECT}", valid, args.timeout) for _ in range(5)]
            baseline = sorted(run["seconds"] for run in runs)[2]
            print(f"worker pid {pid}; VmRSS at rest {memory_kib(pid)['VmRSS'] / 1024:.0f} MB; "
                  f"baseline: valid order-select p50 {baseline * 1000:.1f} ms (status {runs[0]['status']})\n")
            print(f"{'body':44} {'KiB':>7} {'status':>18} {'seconds':>8} {'x valid':>9} {'peak +MB':>9} {'RSS after MB':>13}")
            for label, path, body in cases(args.skip_largest):
                if process.poll() is not None:
                    print(f"{label:44} gunicorn is gone")
                    break
                pid = fresh_worker(session, url, process.pid, pid, valid)
                run = measure(session, url, pid, path, body, args.timeout)
                print(f"{label:44} {len(body) / 1024:7.0f} {run['status']:>18} {run['seconds']:8.2f} "
                      f"{run['seconds'] / baseline:9.0f} {run['growth_mb']:9.0f} {run['rss_mb']:13.0f}", flush=True)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
