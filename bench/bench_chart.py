"""Benchmark: extract_chart_facts over a realistic 300-resource chart, against parsing its JSON.

    .venv/bin/python bench/bench_chart.py [--runs 500] [--split] [--typed 5]

Prints figures and ratios; asserts nothing. The baseline is the least any service does with the
same chart: parse the prefetch's JSON text into Python (``json.loads``; ``msgspec.json.decode`` as
a second, faster floor). Each run times the baseline and every measured step back to back, so
that all of them see the same state of the machine (on a shared VM the speed of the same code
drifts by up to 2x within minutes), and the ratio of the medians is printed.

``--split`` spreads the chart over several prefetch keys (one searchset per type) instead of
one Bundle. Measured: the service's way (only codes the shipped knowledge names become facts),
reading every resource, and, a few times (``--typed``), typed R4B parsing of the same Bundle.
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
from typing import Callable

import msgspec

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


def _ms(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def _interleaved(steps: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Milliseconds per run of each step, the steps taking turns within every run."""
    for work in steps.values():
        work()  # warm-up
    samples: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(runs):
        for label, work in steps.items():
            samples[label].append(_ms(work))
    return samples


def _ratios(median: float, floors: dict[str, float]) -> str:
    return ", ".join(f"{median / floor:.1f}x {label}" for label, floor in floors.items())


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
    text = json.dumps(prefetch)
    entries = sum(len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1 for v in prefetch.values())
    print(f"prefetch: {entries} resources in {len(prefetch)} key(s), {len(text.encode()) / 1024:.0f} KiB as JSON")
    knowledge = load_knowledge()

    def is_study(system: str, code: str) -> bool:  # as decision.py passes it
        return normalise_code(system, code) in knowledge.code_index

    def extract(is_relevant):
        return lambda: extract_chart_facts(prefetch, order, today, is_relevant=is_relevant, is_study=is_study)

    floors = {"json.loads": lambda: json.loads(text), "msgspec.json.decode": lambda: msgspec.json.decode(text)}
    measured = {"codes the knowledge names": extract(knowledge.knows_code), "every resource": extract(None)}
    samples = _interleaved({**floors, **measured}, args.runs)
    floor_medians = {label: statistics.median(samples[label]) for label in floors}
    print(f"baselines over {args.runs} runs, parsing the same prefetch text: "
          + ", ".join(f"{label} median {median:.3f} ms" for label, median in floor_medians.items()))
    for label, work in measured.items():
        result, runs = work(), samples[label]
        print(f"{label}: facts {len(result.facts)}, skipped {result.skipped_resources}, missing {list(result.missing)}")
        print(f"  extract_chart_facts: median {statistics.median(runs):.3f} ms "
              f"({_ratios(statistics.median(runs), floor_medians)}), p95 {_percentile(runs, 0.95):.3f} ms, "
              f"min {min(runs):.3f} ms, max {max(runs):.3f} ms")

    if args.typed:
        from fhir.resources.R4B.bundle import Bundle
        whole = synthetic_chart_bundle(today=today)
        typed = _interleaved({"json.loads": floors["json.loads"], "typed": lambda: Bundle.model_validate(whole)}, args.typed)
        median, floor = statistics.median(typed["typed"]), statistics.median(typed["json.loads"])
        print(f"for comparison, typed R4B Bundle.model_validate over {args.typed} runs: "
              f"median {median:.1f} ms ({median / floor:.0f}x json.loads of the prefetch)")


if __name__ == "__main__":
    main()
