"""The compiled knowledge (kb.compiled) changes the cost of a call, never its answer.

Every fixture case is assessed twice: as the service does it (scenario index and gates, one
evaluator shared by the orders of a call) and by brute force (every scenario tried in priority
order, a fresh evaluator per order). The answers must be identical, with the shipped knowledge and
with a few hundred synthetic extra variants loaded on top (bench/bench_knowledge_scale.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from bench.bench_knowledge_scale import generate_variants
from cds_service.chart.extract import extract_chart_facts, order_reason_facts
from cds_service.chart.orders import read_draft_orders
from cds_service.kb.compiled import intern_criterion
from cds_service.kb.loader import load_knowledge
from cds_service.reasoning.engine import assess_order, assess_orders

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"


def _cases() -> list[Path]:
    return sorted(FIXTURES.glob("cases/*.json")) + sorted(FIXTURES.glob("*/cases/*.json"))


def _chart_and_orders(case_path: Path, knowledge):
    case = json.loads(case_path.read_text())
    today = date.fromisoformat(case["as_of"])
    prefetch = None
    if case.get("chart"):
        prefetch = {"chart": json.loads((case_path.parent.parent / case["chart"]).read_text())}
    context = case["request"]["context"]
    orders, _ = read_draft_orders(context.get("draftOrders"), context.get("selections"))
    orders = [o for o in orders if o.codes and knowledge.procedures_for(o.codes)]
    return extract_chart_facts(prefetch, None, today, is_relevant=knowledge.knows_code), orders


def _brute_force(orders, chart, knowledge):
    return [assess_order(o, replace(chart, facts=chart.facts + order_reason_facts(o, chart.today)), knowledge,
                         use_index=False) for o in orders]


@pytest.fixture(scope="module")
def shipped():
    return load_knowledge()


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    return load_knowledge(None, [generate_variants(300, tmp_path_factory.mktemp("variants"))])


def test_there_are_cases_to_compare():
    assert len(_cases()) >= 40


@pytest.mark.parametrize("which", ["shipped", "scaled"])
def test_indexed_answers_equal_brute_force_on_every_fixture(which, request):
    knowledge = request.getfixturevalue(which)
    compared = rated = 0
    for case_path in _cases():
        chart, orders = _chart_and_orders(case_path, knowledge)
        if not orders:
            continue
        fast, slow = assess_orders(orders, chart, knowledge), _brute_force(orders, chart, knowledge)
        assert fast == slow, case_path.name
        compared += len(orders)
        rated += sum(1 for a in fast if a.scenario is not None)
    assert compared >= 40 and rated >= 30


def test_gates_leave_out_the_scenarios_a_chart_cannot_open(scaled):
    compiled = scaled.compiled
    breast_only = compiled.plausible(frozenset({"breast-cancer", "breast-cancer-history", "chemotherapy"}))
    ids = {compiled.by_priority[rank].id for rank in breast_only}
    assert "breast-distant-surveillance-asymptomatic" in ids
    assert "cervix-suspected-recurrence" not in ids
    variants = [rank for rank in range(len(compiled.by_priority)) if compiled.by_priority[rank].id.startswith("bench-")]
    assert len(variants) == 300 and not breast_only.intersection(variants), "no synthetic variant can hold here"


def test_equal_criteria_are_one_object():
    table: dict = {}
    first = intern_criterion({"all": [{"condition": "pelvic-pain", "within_days": 90}, {"ref": "x"}]}, table)
    second = intern_criterion({"all": [{"within_days": 90, "condition": "pelvic-pain"}, {"ref": "x"}]}, table)
    assert first is second and first["all"][0] is intern_criterion({"condition": "pelvic-pain", "within_days": 90}, table)
    assert intern_criterion({"condition": "pelvic-pain"}, table) is not first["all"][0]
