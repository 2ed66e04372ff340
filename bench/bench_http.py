"""HTTP latency of the service under its production server, against a do-nothing Flask floor.

Starts ``gunicorn -c python:cds_service.server.gunicorn_conf cds_service.server.wsgi:app`` on a free loopback
port (temporary SQLite database, ``CDS_MODE=development`` so no JWT), waits for ``/ready``, and
measures three cases with 1 and 4 concurrent clients (one keep-alive ``requests.Session`` per
thread):

a. order-select shaped like the CDS Hooks sandbox's PAMA tab, every prefetch key ``null``
   (= "no data", so the service makes no outbound FHIR call);
b. the same order with a realistic prefetch of about 300 resources;
c. order-sign with 10 imaging orders and the same prefetch.

The same cases go to ``bench/minimal_app.py`` under the same gunicorn settings, and the ratio of
the p50s is printed. Both servers run side by side and each case is sent to them in alternating
blocks (``--rounds``), so that both see the same state of the machine: on a shared 2-core VM the
speed of the same code drifts by up to 2x from one minute to the next, and measuring one server
after the other made the ratio swing between runs. Loopback only; every loop is bounded; servers
are stopped at the end, also on Ctrl-C.

    .venv/bin/python bench/bench_http.py [--requests 300] [--warmup 30] [--rounds 6] [--concurrency 1,4]
                                         [--workers N] [--chart auto|synthetic|inline] [--only ours|minimal]

Development mode (no JWT) is measured; JWT verification costs about 0.45 ms a request on top
(ES384, measured in-process, see docs/performance.md).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

import orjson
import requests

REPO = Path(__file__).resolve().parents[1]
CPT = "http://www.ama-assn.org/go/cpt"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
PATIENT = "bench-patient-1"
HOOK_INSTANCE_PLACEHOLDER = b"00000000-0000-4000-8000-000000000000"
#: (a) and (b): PET/CT, asymptomatic follow-up of treated breast cancer.
SELECT_ORDER = ("78816", ("254837009", "415076002"))
#: (c): a mix of studies a follow-up clinic orders, reason: personal history of breast cancer.
SIGN_ORDERS = ("74177", "71260", "78306", "72197", "70553", "78816", "73720", "72157", "76856", "71250")

# --------------------------------------------------------------------------- request bodies


def service_request(rid: str, cpt: str, reasons: tuple[str, ...], intent: str = "plan") -> dict:
    return {
        "resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": intent,
        "code": {"coding": [{"system": CPT, "code": cpt}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "reasonCode": [{"coding": [{"system": SNOMED, "code": r}]} for r in reasons],
    }


def hook_request(hook: str, orders: list[dict], prefetch: dict | None, select: bool) -> dict:
    context: dict[str, Any] = {
        "patientId": PATIENT,
        "userId": "Practitioner/COREPRACTITIONER1",
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]},
    }
    if select:
        context["selections"] = [f"ServiceRequest/{orders[0]['id']}"]
    body: dict[str, Any] = {
        "hookInstance": HOOK_INSTANCE_PLACEHOLDER.decode(),
        "hook": hook,
        "fhirServer": "http://127.0.0.1:9/fhir",  # never called: prefetch is complete (values or null)
        "context": context,
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def inline_chart(today: date) -> list[dict]:
    """About 300 resources for a woman treated for breast cancer in 2019, now in follow-up."""
    subject = {"reference": f"Patient/{PATIENT}"}
    out: list[dict] = [{
        "resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1968-04-12",
        "name": [{"family": "Bench", "given": ["Synthetic"]}],
    }]

    def day(years_ago: float, offset: int = 0) -> str:
        return (today - timedelta(days=int(years_ago * 365) + offset)).isoformat()

    def condition(cid, system, code, onset, status="active", category="problem-list-item"):
        out.append({
            "resourceType": "Condition", "id": cid, "subject": subject, "onsetDateTime": onset,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": category}]}],
            "code": {"coding": [{"system": system, "code": code}]},
        })

    condition("c-breast", SNOMED, "254837009", day(5.5), status="remission", category="encounter-diagnosis")
    condition("c-breast-icd", ICD10CM, "C50.911", day(5.5), status="remission", category="encounter-diagnosis")
    condition("c-hx-breast", SNOMED, "415076002", day(4.5))
    for i, code in enumerate(("38341003", "44054006", "55822004", "35489007", "195967001", "239873007")):
        condition(f"c-other-{i}", SNOMED, code, day(8 - i))  # hypertension, T2DM, hyperlipidaemia, depression, asthma, OA

    for i, (code, years) in enumerate((("69031006", 5.4), ("367336001", 5.2), ("108290001", 4.8), ("234262008", 5.4))):
        out.append({  # mastectomy, chemotherapy, radiotherapy, sentinel node biopsy
            "resourceType": "Procedure", "id": f"proc-{i}", "status": "completed", "subject": subject,
            "code": {"coding": [{"system": SNOMED, "code": code}]}, "performedDateTime": day(years),
        })

    labs = (("718-7", "g/dL", 13.1), ("6690-2", "10*3/uL", 6.2), ("777-3", "10*3/uL", 250.0),
            ("2160-0", "mg/dL", 0.8), ("1742-6", "U/L", 22.0), ("1920-8", "U/L", 24.0),
            ("6768-6", "U/L", 80.0), ("2345-7", "mg/dL", 98.0), ("6875-9", "U/mL", 18.0), ("2039-6", "ng/mL", 1.9))
    for visit in range(25):  # quarterly labs for six years
        for code, unit, value in labs:
            out.append({
                "resourceType": "Observation", "id": f"lab-{visit}-{code}", "status": "final", "subject": subject,
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "effectiveDateTime": day(visit * 0.25),
                "valueQuantity": {"value": round(value * (1 + ((visit * 7) % 5 - 2) / 40), 2), "unit": unit,
                                  "system": "http://unitsofmeasure.org", "code": unit},
            })
    for i in range(6):
        out.append({  # mCODE cancer disease status: stable / no evidence of disease
            "resourceType": "Observation", "id": f"status-{i}", "status": "final", "subject": subject,
            "code": {"coding": [{"system": LOINC, "code": "97509-4"}]}, "effectiveDateTime": day(i * 0.75),
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "260415000"}]},
        })
    for i in range(8):  # annual mammograms and a few CTs, with reports
        cpt = "77067" if i % 2 == 0 else "71260"
        out.append({
            "resourceType": "DiagnosticReport", "id": f"dr-{i}", "status": "final", "subject": subject,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
            "code": {"coding": [{"system": CPT, "code": cpt}]}, "effectiveDateTime": day(i * 0.6),
            "conclusion": "No evidence of recurrent disease.",
        })
        out.append({
            "resourceType": "ImagingStudy", "id": f"is-{i}", "status": "available", "subject": subject,
            "started": day(i * 0.6), "procedureCode": [{"coding": [{"system": CPT, "code": cpt}]}],
        })
        out.append({
            "resourceType": "ServiceRequest", "id": f"prior-{i}", "status": "completed", "intent": "order",
            "subject": subject, "code": {"coding": [{"system": CPT, "code": cpt}]}, "authoredOn": day(i * 0.6, 7),
        })
    for i, (code, years) in enumerate((("10324", 4.6), ("84857", 2.0), ("26225", 5.2), ("29046", 6.0), ("6809", 7.0))):
        out.append({  # tamoxifen, anastrozole, ondansetron, lisinopril, metformin
            "resourceType": "MedicationRequest", "id": f"med-{i}", "status": "active" if i != 2 else "completed",
            "intent": "order", "subject": subject, "authoredOn": day(years),
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}]},
        })
    out.append({
        "resourceType": "AllergyIntolerance", "id": "allergy-1", "patient": subject,
        "code": {"coding": [{"system": SNOMED, "code": "91936005"}]},  # penicillin
    })
    return out


def chart_resources(today: date, which: str = "auto") -> tuple[list[dict], str]:
    """bench/synthetic_chart.py's chart (shared by the benches) if it is there, else the inline one.

    The shared chart is a cervical-cancer follow-up (about 300 entries, US Core/mCODE shaped); the
    inline one a breast-cancer follow-up matching the ordered PET/CT. ``which``: auto|synthetic|inline.
    """
    if which != "inline":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        try:
            from synthetic_chart import synthetic_chart_bundle
        except ImportError:
            if which == "synthetic":
                raise
        else:
            bundle = synthetic_chart_bundle(PATIENT)
            return [e["resource"] for e in bundle["entry"]], "bench/synthetic_chart.py"
    return inline_chart(today), "inline (breast cancer)"


def _template_filter(template: str) -> tuple[str, Callable[[dict], bool], bool]:
    """(resource type, predicate, is_read) for one prefetch template: enough FHIR search for a bench."""
    path, _, query = template.partition("?")
    rtype = path.split("/")[0]
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    codes = {c.partition("|")[2] or c for c in params.get("code", "").split(",") if c}
    category = params.get("category")
    status = params.get("status")

    def matches(resource: dict) -> bool:
        if resource.get("resourceType") != rtype:
            return False
        if codes and not any(c.get("code") in codes for c in resource.get("code", {}).get("coding", [])):
            return False
        if category and not any(c.get("code") == category for cat in resource.get("category", []) for c in cat.get("coding", [])):
            return False
        return not status or resource.get("status") == status

    return rtype, matches, "/" in path


def prefetch_from_chart(templates: dict[str, str], resources: list[dict]) -> dict:
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        rtype, matches, is_read = _template_filter(template)
        found = [r for r in resources if matches(r)]
        if is_read:
            prefetch[key] = found[0] if found else None
        else:
            prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                             "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in found]}
    return prefetch


@dataclass
class Case:
    name: str
    path: str
    body: bytes


def build_cases(discovery: dict, today: date, chart: str = "auto") -> tuple[list[Case], str]:
    by_hook = {s["hook"]: s for s in discovery["services"]}
    select, sign = by_hook["order-select"], by_hook["order-sign"]
    resources, origin = chart_resources(today, chart)
    cpt, reasons = SELECT_ORDER
    select_order = service_request("example-request-id", cpt, reasons)
    nulls = {key: None for key in select.get("prefetch", {})}
    chart_select = prefetch_from_chart(select.get("prefetch", {}), resources)
    chart_sign = prefetch_from_chart(sign.get("prefetch", {}), resources)
    sign_orders = [service_request(f"order-{i}", code, ("415076002",), intent="order") for i, code in enumerate(SIGN_ORDERS)]
    cases = [
        Case("a order-select, prefetch null", select["id"], orjson.dumps(hook_request("order-select", [select_order], nulls, True))),
        Case(f"b order-select, {len(resources)} resources", select["id"], orjson.dumps(hook_request("order-select", [select_order], chart_select, True))),
        Case("c order-sign, 10 orders", sign["id"], orjson.dumps(hook_request("order-sign", sign_orders, chart_sign, False))),
    ]
    return cases, origin


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One gunicorn with cds_service.server.gunicorn_conf on loopback, in its own process group."""

    def __init__(self, target: str, workdir: Path, workers: int | None, extra_env: dict[str, str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{target.replace(':', '_')}.log"
        prom = workdir / f"prom-{self.port}"
        prom.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update({"CDS_BIND": f"127.0.0.1:{self.port}", "PROMETHEUS_MULTIPROC_DIR": str(prom), **extra_env})
        if workers:
            env["WEB_CONCURRENCY"] = str(workers)
        command = [sys.executable, "-m", "gunicorn", "-c", "python:cds_service.server.gunicorn_conf", "--pythonpath", str(REPO), target]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; log: {self.log_path}\n{self.log_tail()}")
            try:
                if requests.get(self.base + "/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f} s; log: {self.log_path}\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # the group we created: master + workers
                self.process.wait(timeout=35)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=5)
        self._log.close()


# --------------------------------------------------------------------------- load


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))  # nearest rank
    return sorted_values[rank]


@dataclass
class Result:
    case: str
    clients: int
    p50: float
    p95: float
    p99: float
    rps: float
    errors: int


@dataclass
class Sample:
    """Latencies of one block of requests, and its wall time."""

    latencies: list[float]
    wall: float
    errors: int


def run_block(base: str, case: Case, clients: int, requests_each: int, warmup_each: int) -> Sample:
    url = f"{base}/cds-services/{case.path}"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        with requests.Session() as session:
            def one(record: bool) -> None:
                body = case.body.replace(HOOK_INSTANCE_PLACEHOLDER, str(uuid.uuid4()).encode())
                t0 = time.perf_counter()
                response = session.post(url, data=body, headers=headers, timeout=30)
                elapsed = time.perf_counter() - t0
                if response.status_code != 200:
                    errors[index] += 1
                if record:
                    latencies[index].append(elapsed)

            for _ in range(warmup_each):
                one(False)
            start.wait(timeout=300)
            for _ in range(requests_each):
                one(True)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait(timeout=300)
    t_start = time.perf_counter()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - t_start
    return Sample([v for per in latencies for v in per], wall, sum(errors))


def summarise(case: Case, clients: int, samples: list[Sample]) -> Result:
    ms = sorted(v * 1000 for s in samples for v in s.latencies)
    wall = sum(s.wall for s in samples)
    return Result(case.name, clients, percentile(ms, 50), percentile(ms, 95), percentile(ms, 99),
                  len(ms) / wall if wall > 0 else float("nan"), sum(s.errors for s in samples))


def run_interleaved(bases: dict[str, str], cases: list[Case], args) -> dict[str, list[Result]]:
    """Every case and client count, in ``args.rounds`` blocks per server, alternating which goes first."""
    results: dict[str, list[Result]] = {label: [] for label in bases}
    labels = list(bases)
    for case in cases:
        for clients in args.concurrency:
            samples: dict[str, list[Sample]] = {label: [] for label in labels}
            per_round = max(1, args.requests // args.rounds)
            for round_ in range(args.rounds):
                order = labels if round_ % 2 == 0 else labels[::-1]
                for label in order:
                    warmup = args.warmup if round_ == 0 else max(1, args.warmup // 10)
                    samples[label].append(run_block(bases[label], case, clients, per_round, warmup))
            for label in labels:
                results[label].append(summarise(case, clients, samples[label]))
    return results


def print_results(title: str, results: list[Result]) -> None:
    print(f"\n{title}")
    print(f"{'case':<38} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}")
    for r in results:
        print(f"{r.case:<38} {r.clients:>7} {r.p50:>8.2f} {r.p95:>8.2f} {r.p99:>8.2f} {r.rps:>8.1f} {r.errors:>6}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per client and case")
    parser.add_argument("--warmup", type=int, default=30, help="untimed requests per client before timing")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated client counts")
    parser.add_argument("--workers", type=int, default=None, help="WEB_CONCURRENCY (default: gunicorn_conf's)")
    parser.add_argument("--chart", choices=("auto", "synthetic", "inline"), default="auto",
                        help="prefetch chart for cases b and c (auto: bench/synthetic_chart.py if present)")
    parser.add_argument("--only", choices=("ours", "minimal"), help="run one server only")
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks per server, case and client count")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not (0 < args.requests <= 100_000 and 0 <= args.warmup <= 10_000 and 0 < args.rounds <= 100
            and all(0 < c <= 64 for c in args.concurrency)):
        parser.error("requests 1..100000, warmup 0..10000, rounds 1..100, concurrency 1..64")

    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmp:
        workdir = Path(tmp)
        ours_env = {"CDS_MODE": "development", "CDS_DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
                    "CDS_LOG_LEVEL": "INFO"}
        targets = {"ours": ("cds_service.server.wsgi:app", ours_env), "minimal": ("bench.minimal_app:app", {})}
        if args.only:
            targets = {args.only: targets[args.only]}
        servers = {label: Server(target, workdir, args.workers, env) for label, (target, env) in targets.items()}
        try:
            for server in servers.values():
                server.wait_ready()
            sys.path.insert(0, str(REPO))
            from cds_service.hooks.services import discovery_document

            cases, origin = build_cases(discovery_document(), date.today(), args.chart)
            print(f"chart for case b/c: {origin}; bodies: " + ", ".join(f"{len(c.body) / 1024:.0f} KiB" for c in cases))
            print(f"{args.rounds} alternating rounds of {max(1, args.requests // args.rounds)} requests per client")
            results = run_interleaved({label: server.base for label, server in servers.items()}, cases, args)
        except KeyboardInterrupt:
            print("\ninterrupted; servers stopped", file=sys.stderr)
            return 130
        finally:
            for server in servers.values():
                server.stop()
        for label, server in servers.items():
            print_results(f"{label}  ({targets[label][0]}, log {server.log_path})", results[label])
    if set(results) != {"ours", "minimal"}:
        return 0
    print("\np50 ratio ours / minimal")
    for o, m in zip(results["ours"], results["minimal"]):
        print(f"{o.case:<38} {o.clients:>7} {o.p50 / m.p50 if m.p50 else float('nan'):>8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
