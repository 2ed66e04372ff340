"""Benchmark: extract_chart_facts over a realistic 300-resource chart. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_chart.py [--runs 500] [--split]

``--split`` spreads the chart over several prefetch keys (one searchset per type) instead of
one Bundle. Times the service's way (only codes the shipped knowledge names become facts) and
reading every resource; for comparison also typed R4B parsing of the same Bundle a few times.
The chart is given as plain dicts, so the figures include converting them to ``FhirObject``s
(over HTTP the body is decoded into them directly).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))          # synthetic_chart
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # cds_service

from synthetic_chart import synthetic_chart_bundle, synthetic_prefetch  # noqa: E402

from cds_service.chart.extract import extract_chart_facts  # noqa: E402
from cds_service.chart.facts import DraftOrder, Code  # noqa: E402
from cds_service.kb.loader import load_knowledge  # noqa: E402
from cds_service.kb.model import normalise_code  # noqa: E402


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--split", action="store_true", help="one prefetch key per resource type")
    parser.add_argument("--typed", type=int, default=5, help="runs of typed R4B Bundle parsing (0 = skip)")
    args = parser.parse_args()

    today = date(2025, 6, 1)
    prefetch = synthetic_prefetch(today=today) if args.split else {"chart": synthetic_chart_bundle(today=today)}
    order = DraftOrder(resource={}, resource_id="example-request-id",
                       codes=(Code("http://www.ama-assn.org/go/cpt", "72197"),),
                       reason_codes=(Code("http://snomed.info/sct", "30473006", "Pain in pelvis"),))
    size = len(json.dumps(prefetch).encode())
    entries = sum(len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1 for v in prefetch.values())

    print(f"prefetch: {entries} resources in {len(prefetch)} key(s), {size / 1024:.0f} KiB as JSON")
    knowledge = load_knowledge()
    def is_study(system: str, code: str) -> bool:  # as decision.py passes it
        return normalise_code(system, code) in knowledge.code_index

    for label, is_relevant in (("codes the knowledge names", knowledge.knows_code), ("every resource", None)):
        result = extract_chart_facts(prefetch, order, today, is_relevant=is_relevant, is_study=is_study)  # warm-up
        samples = []
        for _ in range(args.runs):
            started = time.perf_counter()
            extract_chart_facts(prefetch, order, today, is_relevant=is_relevant, is_study=is_study)
            samples.append((time.perf_counter() - started) * 1000)
        print(f"{label}: facts {len(result.facts)}, skipped {result.skipped_resources}, missing {list(result.missing)}")
        print(f"  extract_chart_facts over {args.runs} runs: median {statistics.median(samples):.3f} ms, "
              f"p95 {_percentile(samples, 0.95):.3f} ms, min {min(samples):.3f} ms, max {max(samples):.3f} ms")

    if args.typed:
        from fhir.resources.R4B.bundle import Bundle
        whole = synthetic_chart_bundle(today=today)
        Bundle.model_validate(whole)  # first validation loads the resource classes
        typed = []
        for _ in range(args.typed):
            started = time.perf_counter()
            Bundle.model_validate(whole)
            typed.append((time.perf_counter() - started) * 1000)
        print(f"for comparison, typed R4B Bundle.model_validate over {args.typed} runs: "
              f"median {statistics.median(typed):.1f} ms")


if __name__ == "__main__":
    main()
