"""Knowledge at scale: does the cost of a hook call grow with the size of the knowledge base?

A site that licenses the ACR criteria adds well over a thousand scenario variants. This script
writes N synthetic but plausible variants that never match the benchmark charts (deterministic:
the same N gives the same files), loads them through ``CDS_KNOWLEDGE_EXTRA_DIRS`` and measures,
side by side in alternating rounds (``bench/bench_http.py``'s machinery):

* the three request shapes of bench_http (a: sandbox-shaped order-select, b: 301-resource
  order-select, c: 10-order order-sign) against the base knowledge, with N = 1,000 and 10,000
  extra variants, and against the minimal Flask app; answers must be identical to the base's;
* the FHIR fallback: case (b) with no prefetch, from a loopback FHIR server that answers every
  query in 20 ms (``--fhir-delay-ms``; bench/canned_fhir_server.py), beside case (b) prefetched;
* start-up: loading the knowledge with N extra variants, with a cold and a warm validation cache,
  and the time from starting gunicorn to ``/ready`` with a warm cache.

    .venv/bin/python bench/bench_knowledge_scale.py [--variants 1000,10000] [--requests 120] [--rounds 4]

The generated variants are benchmark data only: each is named ``bench-variant-N``, reuses the
base knowledge's own value sets, studies and sources, and is gated on a combination of findings
the benchmark charts do not have (a cancer site they do not have, or a breast-cancer variant
that needs a recent symptom they do not have).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_http import (  # noqa: E402
    Server, build_cases, hook_request, print_results, run_interleaved, service_request, SELECT_ORDER,
    chart_resources,
)

#: Sites the benchmark charts (a treated breast cancer) do not have, and symptoms they do not have.
OTHER_SITES = ("cervical-cancer", "primary-bone-cancer", "soft-tissue-sarcoma", "rectal-cancer")
ABSENT_SYMPTOMS = ("seizure", "jaundice", "leg-oedema", "vaginal-bleeding", "pathological-fracture", "weakness")
TIERS = ("usually-appropriate", "may-be-appropriate", "usually-not-appropriate")


def generate_variants(n: int, out_dir: Path, seed: int = 20261201) -> Path:
    """Write ``n`` scenario files under ``out_dir/scenarios``; returns ``out_dir``."""
    from cds_service.kb.loader import load_knowledge

    base = load_knowledge()
    rng = random.Random(seed)
    valuesets = set(base.valuesets)
    sites = [v for v in OTHER_SITES if v in valuesets]
    symptoms = [v for v in ABSENT_SYMPTOMS if v in valuesets]
    procedures = sorted(base.procedures)
    sources = sorted(s for s in base.sources if s.startswith("acr-"))
    reasons = sorted(base.override_reasons)
    (out_dir / "scenarios").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        symptom = {"condition": rng.choice(symptoms), "within_days": rng.choice((30, 60, 90, 180))}
        if rng.random() < 0.7:
            site = rng.choice(sites)
            when = {"all": [{"condition": site}, symptom]}
        else:
            site = "breast-cancer"
            when = {"all": [{"condition": "breast-cancer"}, symptom, {"not": {"condition": rng.choice(symptoms)}}]}
        rated = rng.sample(procedures, rng.randint(3, 8))
        ratings = [{"procedure": p, "rating": rng.choice(TIERS), "sources": [rng.choice(sources)],
                    "confidence": "verified"} for p in rated]
        ratings[0]["rating"] = "usually-appropriate"
        scenario = {
            "id": f"bench-variant-{i:05d}",
            "title": f"Benchmark variant {i} ({site})",
            "cancer_site": site.replace("-cancer", ""),
            "phase": rng.choice(("suspected-recurrence", "routine-surveillance", "new-symptoms")),
            "priority": rng.randint(10, 200),
            "variant": f"synthetic benchmark variant {i}",
            "sources": [rng.choice(sources)],
            "summary": "Synthetic benchmark variant that never matches the benchmark charts.",
            "when": when,
            "ratings": ratings,
            "preferred": [{"procedure": rated[0]}],
            "low_value_surveillance": False,
            "override_reasons": rng.sample(reasons, min(3, len(reasons))),
        }
        path = out_dir / "scenarios" / f"bench-variant-{i:05d}.json"
        path.write_text(json.dumps({"scenario": scenario}, indent=1))
    return out_dir


def time_loading(extra: Path, cache: Path) -> tuple[float, float]:
    """Seconds to load base + ``extra``: with an empty validation cache, then with a warm one."""
    from cds_service.kb.loader import load_knowledge

    timings = []
    for _ in range(2):
        started = time.perf_counter()
        load_knowledge(None, [extra], cache_dir=cache)
        timings.append(time.perf_counter() - started)
    return timings[0], timings[1]


def worker_recycle_seconds(server: Server) -> float:
    """Seconds from killing a worker of ``server`` (run with one worker) until ``/ready`` answers
    again: what a crashed or recycled worker costs (gunicorn forks it from the loaded master)."""
    import signal

    import requests

    pid = server.process.pid
    workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    started = time.monotonic()
    os.kill(int(workers[0]), signal.SIGKILL)
    deadline = started + 60
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children and children != workers and requests.get(server.base + "/ready", timeout=1).status_code == 200:
                return time.monotonic() - started
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.01)
    return float("nan")


def answers(base_url: str, cases) -> list[str]:
    """The answers to each case with the uuids removed (they differ on every call)."""
    import re

    import requests

    out = []
    for case in cases:
        text = requests.post(f"{base_url}/cds-services/{case.path}", data=case.body,
                             headers={"Content-Type": "application/json"}, timeout=60).text
        out.append(re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", text))
    return out


def fallback_case(fhir_url: str):
    """Case (b) without prefetch: the service fetches the chart from ``fhir_url``."""
    from bench.bench_http import Case
    import orjson

    cpt, reasons = SELECT_ORDER
    body = hook_request("order-select", [service_request("example-request-id", cpt, reasons)], None, True)
    body["fhirServer"] = fhir_url
    return Case("d order-select, FHIR fallback", "onc-imaging-order-select", orjson.dumps(body))


def run_scale(n: int, workdir: Path, args) -> None:
    extra = generate_variants(n, workdir / f"variants-{n}")
    cold, warm = time_loading(extra, workdir / f"cache-{n}")
    print(f"\n=== {n} extra variants: knowledge load {cold:.2f} s with an empty cache, {warm:.2f} s warm")
    env = {"CDS_MODE": "development", "CDS_LOG_LEVEL": "WARNING", "CDS_KNOWLEDGE_CACHE_DIR": str(workdir / f"cache-{n}")}
    servers = {
        "base": Server("cds_service.server.wsgi:app", workdir, args.workers,
                       {**env, "CDS_DATABASE_URL": f"sqlite:///{workdir}/base-{n}.sqlite3"}),
        f"+{n}": Server("cds_service.server.wsgi:app", workdir, args.workers,
                        {**env, "CDS_DATABASE_URL": f"sqlite:///{workdir}/scaled-{n}.sqlite3",
                         "CDS_KNOWLEDGE_EXTRA_DIRS": str(extra)}),
        "minimal": Server("bench.minimal_app:app", workdir, args.workers, {}),
    }
    started = time.monotonic()
    try:
        servers[f"+{n}"].wait_ready()
        print(f"gunicorn with {n} extra variants ready {time.monotonic() - started:.2f} s after start (warm cache)")
        single = Server("cds_service.server.wsgi:app", workdir, 1,
                        {**env, "CDS_DATABASE_URL": f"sqlite:///{workdir}/single-{n}.sqlite3",
                         "CDS_KNOWLEDGE_EXTRA_DIRS": str(extra)})
        try:
            single.wait_ready()
            print(f"a killed worker is replaced and ready again in {worker_recycle_seconds(single):.2f} s")
        finally:
            single.stop()
        for server in servers.values():
            server.wait_ready()
        from cds_service.hooks.services import discovery_document

        cases, _ = build_cases(discovery_document(), date.today(), args.chart)
        same = answers(servers["base"].base, cases) == answers(servers[f"+{n}"].base, cases)
        print(f"answers identical to the base knowledge: {same}")
        results = run_interleaved({label: s.base for label, s in servers.items()}, cases, args)
    finally:
        for server in servers.values():
            server.stop()
    for label in results:
        print_results(label, results[label])
    print(f"\np50 ratios: +{n} / base, and ours / minimal")
    for b, s, m in zip(results["base"], results[f"+{n}"], results["minimal"]):
        print(f"{b.case:<38} {b.clients:>3}   +{n}/base {s.p50 / b.p50:>5.2f}x   base/minimal {b.p50 / m.p50:>5.2f}x"
              f"   +{n}/minimal {s.p50 / m.p50:>5.2f}x")


def run_fallback(workdir: Path, args) -> None:
    """Case (b) with no prefetch, the chart fetched from a FHIR server answering every query in
    ``--fhir-delay-ms`` (bench/canned_fhir_server.py), alternating with case (b) prefetched: the
    difference is what fetching costs us beyond the wait for the FHIR server."""
    from bench.canned_fhir_server import CannedFhirServer
    from cds_service.devtools.fixture_fhir_server import FixtureFhirServer
    from cds_service.hooks.services import discovery_document

    resources, origin = chart_resources(date.today(), args.chart)
    prefetched = build_cases(discovery_document(), date.today(), args.chart)[0][1]
    with FixtureFhirServer(resources) as fixture, CannedFhirServer(fixture.base_url, args.fhir_delay_ms / 1000) as fhir:
        server = Server("cds_service.server.wsgi:app", workdir, args.workers,
                        {"CDS_MODE": "development", "CDS_LOG_LEVEL": "WARNING",
                         "CDS_DATABASE_URL": f"sqlite:///{workdir}/fallback.sqlite3"})
        try:
            server.wait_ready()
            results = run_interleaved({"ours": server.base}, [fallback_case(fhir.base_url), prefetched], args)
        finally:
            server.stop()
    print(f"\n=== FHIR fallback, FHIR server answering each query in {args.fhir_delay_ms} ms, chart {origin}")
    print_results("ours", results["ours"])
    fetched, given = results["ours"]
    print(f"fallback p50 {fetched.p50:.2f} ms = prefetched p50 {given.p50:.2f} ms + {fetched.p50 - given.p50:.2f} ms "
          f"(one wave of queries would add ~{args.fhir_delay_ms} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="1000,10000", help="comma-separated numbers of extra variants")
    parser.add_argument("--requests", type=int, default=120, help="timed requests per case and server")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chart", choices=("auto", "synthetic", "inline"), default="auto")
    parser.add_argument("--fhir-delay-ms", type=int, default=20)
    parser.add_argument("--skip-fallback", action="store_true")
    args = parser.parse_args(argv)
    args.concurrency = [1]
    counts = [int(v) for v in args.variants.split(",") if v.strip()]
    if not all(0 < n <= 20_000 for n in counts) or not 0 < args.requests <= 10_000:
        parser.error("variants 1..20000, requests 1..10000")
    with tempfile.TemporaryDirectory(prefix="cds-kb-scale-") as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("CDS_LOG_LEVEL", "WARNING")
        for n in counts:
            run_scale(n, workdir, args)
        if not args.skip_fallback:
            run_fallback(workdir, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
