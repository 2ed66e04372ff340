"""Benchmark: microseconds per ``assess_order`` over a realistic chart (a script, never a test).

    .venv/bin/python bench/bench_reasoning.py [--runs 2000] [--facts 300] [--miniature]

Uses the shipped knowledge (``load_knowledge()``) when it loads, else the miniature knowledge of
tests/test_reasoning.py. The chart is one patient with treated cervical cancer, pelvic pain and a
rising SCC antigen among a few hundred unrelated facts (labs, encounter diagnoses, medications,
prior imaging), which is about what a 12-month prefetch holds for an oncology patient.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cds_service.chart.facts import ChartFacts, ClinicalFact, Code, FactKind  # noqa: E402
from cds_service.kb.model import CPT, ICD10CM, LOINC, SNOMED  # noqa: E402
from cds_service.reasoning.engine import assess_order  # noqa: E402
from tests.reasoning_kb import TODAY, days_ago, draft_order  # noqa: E402

ORDERS = {
    "MRI abdomen+pelvis": (("cpt", "74183"), ("cpt", "72197")),
    "MRI pelvis (72197)": (("cpt", "72197"),),
    "CT abdomen/pelvis": (("cpt", "74177"),),
    "US pelvis": (("cpt", "76856"),),
    "FDG-PET/CT": (("cpt", "78815"),),
    "not in catalogue": (("cpt", "99213"),),
}


def _fact(kind: FactKind, system: str, code: str, ago: int | None, n: int, **fields) -> ClinicalFact:
    return ClinicalFact(kind=kind, codes=(Code(system, code),), source=f"{kind.value}/{n}",
                        date=None if ago is None else days_ago(ago), **fields)


def realistic_chart(size: int, seed: int = 7) -> ChartFacts:
    rng = random.Random(seed)
    facts: list[ClinicalFact] = [
        _fact(FactKind.CONDITION, ICD10CM, "C53.9", 800, 1, status="remission"),
        _fact(FactKind.CONDITION, SNOMED, "363354003", 800, 2, status="remission"),
        _fact(FactKind.CONDITION, ICD10CM, "Z85.41", 400, 3, status="active"),
        _fact(FactKind.PROCEDURE, SNOMED, "703423002", 700, 4, status="completed"),
        _fact(FactKind.CONDITION, ICD10CM, "R10.2", 20, 5, status="active"),
        _fact(FactKind.CONDITION, ICD10CM, "R60.0", 15, 6, status="active"),
        _fact(FactKind.IMAGING, CPT, "72197", 190, 7, status="available"),
        _fact(FactKind.IMAGING, CPT, "74177", 380, 8, status="available"),
        _fact(FactKind.ALLERGY, SNOMED, "91936005", None, 9, status="active"),  # penicillin
    ]
    for i, (ago, value) in enumerate([(330, 1.1), (240, 1.2), (150, 1.6), (40, 2.9)]):
        facts.append(_fact(FactKind.OBSERVATION, LOINC, "9679-2", ago, 100 + i, value=value, unit="ng/mL", status="final"))
    labs = ["718-7", "6690-2", "777-3", "2160-0", "98979-8", "2951-2", "2823-3", "1742-6", "1920-8", "2345-7"]
    diagnoses = ["I10", "E11.9", "E78.5", "K21.9", "F41.1", "M54.50", "J45.909", "N39.0", "R53.83", "Z79.899"]
    medications = ["197361", "860975", "617314", "310965", "198211"]
    n = 200
    while len(facts) < size:
        n += 1
        roll = rng.random()
        ago = rng.randint(1, 1500)
        if roll < 0.6:
            code = rng.choice(labs)
            value = rng.uniform(40, 110) if code == "98979-8" else rng.uniform(1, 150)
            facts.append(_fact(FactKind.OBSERVATION, LOINC, code, ago, n, value=value, unit="u", status="final"))
        elif roll < 0.85:
            facts.append(_fact(FactKind.CONDITION, ICD10CM, rng.choice(diagnoses), ago, n, status="active"))
        elif roll < 0.95:
            facts.append(_fact(FactKind.MEDICATION, "http://www.nlm.nih.gov/research/umls/rxnorm",
                               rng.choice(medications), ago, n, status="active"))
        else:
            facts.append(_fact(FactKind.IMAGING, CPT, rng.choice(["71046", "73030", "70450"]), ago, n, status="available"))
    rng.shuffle(facts)
    return ChartFacts(facts=tuple(facts), today=TODAY)


def load(miniature: bool):
    if not miniature:
        try:
            from cds_service.kb.loader import load_knowledge

            return load_knowledge(), "shipped knowledge"
        except Exception as error:  # noqa: BLE001 - a benchmark falls back, it does not fail
            print(f"(shipped knowledge unavailable: {error!r}; using the test miniature)")
    from tests.test_reasoning import KB

    return KB, "test miniature knowledge"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--facts", type=int, default=300)
    parser.add_argument("--miniature", action="store_true", help="use the tests' miniature knowledge")
    args = parser.parse_args()

    knowledge, label = load(args.miniature)
    facts = realistic_chart(args.facts)
    print(f"{label}: {len(knowledge.scenarios)} scenarios, {len(knowledge.valuesets)} value sets, "
          f"{len(knowledge.contraindications)} contraindications; chart of {len(facts.facts)} facts")
    print(f"{'order':<22} {'outcome':<18} {'scenario':<34} {'median µs':>10} {'p95 µs':>10}")
    for name, codes in ORDERS.items():
        order = draft_order(*codes)
        result = assess_order(order, facts, knowledge)
        for _ in range(50):  # warm-up
            assess_order(order, facts, knowledge)
        samples = []
        for _ in range(args.runs):
            start = time.perf_counter_ns()
            assess_order(order, facts, knowledge)
            samples.append((time.perf_counter_ns() - start) / 1000)
        scenario = result.scenario.id if result.scenario else "-"
        print(f"{name:<22} {result.outcome.value:<18} {scenario:<34} "
              f"{statistics.median(samples):>10.1f} {percentile(samples, 0.95):>10.1f}")


if __name__ == "__main__":
    main()
