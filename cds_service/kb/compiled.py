"""The knowledge compiled for reasoning, once at load: the cost of a call must not grow with it.

A site may load over a thousand scenario variants; a call should only look at those that could
apply. Built once per :class:`~cds_service.kb.model.Knowledge`:

* **identical criteria are one object** (:func:`intern_criterion`, applied by the loader), so the
  evaluator's memo, keyed by criterion identity, evaluates each distinct criterion once per call;
* **operators are resolved** for every criterion of the knowledge (no per-call checks, no cap);
* **scenarios in priority order** (highest first, ties in load order), each with the studies it
  names, and an index from study to the scenarios naming it;
* **gates**: for each scenario, value sets of which at least one must hold a chart fact for its
  ``when`` to hold (a necessary condition, derived from the criterion tree); an index from value
  set to the scenarios it gates tells a call which scenarios are worth evaluating;
* **order dependence**: the value sets a criterion reads through operators that also see the
  draft order's own reasons (``condition``, ``procedure``), so that an order-sign can share the
  results of every criterion its orders' reasons cannot change.

All of it is derived from the knowledge alone; nothing here sees a patient.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from cds_service.kb.grammar import OPERATOR_NAMES, VALUESET_OPERATORS, Criterion

#: Operators that also read the draft order's reasons (docs/knowledge.md, "Order reasons").
ORDER_REASON_OPERATORS = ("condition", "procedure", "order_reason")
#: In :meth:`CompiledKnowledge.reason_valuesets`: the criterion depends on any reason the order has.
ANY_REASON = "*"


def intern_criterion(criterion: Any, table: dict[str, Any]) -> Any:
    """The shared object for this criterion (children first), so equal criteria are identical."""
    if not isinstance(criterion, Mapping):
        return criterion
    rebuilt: dict[str, Any] = {}
    for key, value in criterion.items():
        if key in ("all", "any") and isinstance(value, list):
            value = [intern_criterion(child, table) for child in value]
        elif key == "not":
            value = intern_criterion(value, table)
        rebuilt[key] = value
    key = json.dumps(rebuilt, sort_keys=True, default=id)
    return table.setdefault(key, rebuilt)


def operator_of(criterion: Criterion) -> str | None:
    """The criterion's one operator, or None when it has none or several (a malformed criterion)."""
    found = [key for key in criterion if key in OPERATOR_NAMES] if isinstance(criterion, Mapping) else []
    return found[0] if len(found) == 1 else None


class CompiledKnowledge:
    """Indexes over one knowledge base; see the module docstring."""

    def __init__(self, scenarios: Iterable[Any], definitions: Mapping[str, Criterion],
                 contraindications: Iterable[Any]):
        self._definitions = definitions
        self.by_priority: tuple[Any, ...] = tuple(sorted(scenarios, key=lambda s: -s.priority))
        self.rank = {s.id: position for position, s in enumerate(self.by_priority)}
        self.procedures_of = {s.id: scenario_procedure_ids(s) for s in self.by_priority}
        naming: dict[str, list[int]] = {}
        for position, scenario in enumerate(self.by_priority):
            for procedure_id in self.procedures_of[scenario.id]:
                naming.setdefault(procedure_id, []).append(position)
        self._naming = {pid: tuple(ranks) for pid, ranks in naming.items()}
        self.operators: dict[int, tuple[Criterion, str]] = {}
        self._clauses: dict[int, tuple[frozenset[str], ...]] = {}
        self._reason_valuesets: dict[int, frozenset[str]] = {}
        for scenario in self.by_priority:
            for criterion in _criteria_of(scenario):
                self._resolve_operators(criterion)
        for definition in definitions.values():
            self._resolve_operators(definition)
        for contraindication in contraindications:
            self._resolve_operators(contraindication.when)
        self._gates = [self.gate(s.when) for s in self.by_priority]
        self._index_gates()

    def _index_gates(self) -> None:
        """Index each gated scenario under the value sets of one clause of its gate: the clause
        whose value sets gate the fewest scenarios, so that a chart meets few candidates."""
        use: dict[str, int] = {}
        for gate in self._gates:
            for valueset_id in {v for clause in gate for v in clause}:
                use[valueset_id] = use.get(valueset_id, 0) + 1
        gated_by: dict[str, list[int]] = {}
        ungated: list[int] = []
        for position, gate in enumerate(self._gates):
            if not gate:
                ungated.append(position)
                continue
            rarest = min(gate, key=lambda clause: sum(use[v] for v in clause))
            for valueset_id in rarest:
                gated_by.setdefault(valueset_id, []).append(position)
        self._gated_by = {vid: tuple(ranks) for vid, ranks in gated_by.items()}
        self._ungated = frozenset(ungated)

    # -- scenarios ------------------------------------------------------------------------------

    def naming(self, procedure_ids: Iterable[str]) -> list[int]:
        """Ranks of the scenarios naming any of these studies, highest priority first."""
        ranks: set[int] = set()
        for procedure_id in procedure_ids:
            ranks.update(self._naming.get(procedure_id, ()))
        return sorted(ranks)

    def plausible(self, valuesets_present: frozenset[str]) -> frozenset[int]:
        """Ranks of the scenarios whose ``when`` can hold given the value sets the chart has facts
        in: every clause of their gate meets one of them."""
        found = set(self._ungated)
        gates = self._gates
        for valueset_id in valuesets_present:
            for rank in self._gated_by.get(valueset_id, ()):
                if rank not in found and all(not clause.isdisjoint(valuesets_present) for clause in gates[rank]):
                    found.add(rank)
        return frozenset(found)

    # -- criteria -------------------------------------------------------------------------------

    def gate(self, criterion: Criterion | None) -> tuple[frozenset[str], ...]:
        """Clauses that must all hold for ``criterion`` to hold; a clause is a set of value sets of
        which at least one must hold a chart fact. No clause: nothing is necessary."""
        if criterion is None:
            return ()
        key = id(criterion)
        if key not in self._clauses:
            self._clauses[key] = ()  # a definition cycle (refused by the loader) cannot recurse forever
            self._clauses[key] = self._gate(criterion)
        return self._clauses[key]

    def _gate(self, criterion: Criterion) -> tuple[frozenset[str], ...]:
        operator = operator_of(criterion)
        if operator == "order_reason" and criterion.get("outside", False):
            return ()  # holds on a reason outside the value set: no value set is necessary
        if operator in VALUESET_OPERATORS:
            return (frozenset((criterion[operator],)),)
        if operator == "ref" and criterion["ref"] in self._definitions:
            return self.gate(self._definitions[criterion["ref"]])
        if operator == "all":
            return tuple(dict.fromkeys(clause for child in criterion["all"] for clause in self.gate(child)))
        if operator == "any":
            # Whichever branch holds, its smallest clause does: their union is necessary.
            union: set[str] = set()
            for child in criterion["any"]:
                clauses = self.gate(child)
                if not clauses:
                    return ()
                union |= min(clauses, key=len)
            return (frozenset(union),)
        return ()  # not, imaging: no value set is necessary

    def reason_valuesets(self, criterion: Criterion) -> frozenset[str]:
        """Value sets this criterion (and everything under it) reads through operators that also
        see the draft order's reasons: if none of them holds an order's reason, the order cannot
        change the criterion's result."""
        key = id(criterion)
        found = self._reason_valuesets.get(key)
        if found is None:
            self._reason_valuesets[key] = frozenset()  # cycle guard, as in gate()
            found = frozenset(self._reason_sets(criterion))
            self._reason_valuesets[key] = found
        return found

    def _reason_sets(self, criterion: Criterion) -> set[str]:
        operator = operator_of(criterion)
        if operator in ORDER_REASON_OPERATORS:
            if operator == "condition" and criterion.get("exclude_order_reasons", False):
                return set()
            if operator == "order_reason" and criterion.get("outside", False):
                return {ANY_REASON}
            return {criterion[operator]}
        if operator == "ref" and criterion["ref"] in self._definitions:
            return set(self.reason_valuesets(self._definitions[criterion["ref"]]))
        found: set[str] = set()
        for child in (criterion.get("all") or criterion.get("any") or ()) if operator in ("all", "any") else ():
            found |= self.reason_valuesets(child)
        if operator == "not":
            found |= self.reason_valuesets(criterion["not"])
        return found

    def _resolve_operators(self, criterion: Criterion | None) -> None:
        if not isinstance(criterion, Mapping) or id(criterion) in self.operators:
            return
        operator = operator_of(criterion)
        if operator is None:
            return  # malformed: the evaluator reports it
        self.operators[id(criterion)] = (criterion, operator)  # holds the criterion, so its id stays unique
        for child in criterion.get(operator, ()) if operator in ("all", "any") else ():
            self._resolve_operators(child)
        if operator == "not":
            self._resolve_operators(criterion["not"])


def scenario_procedure_ids(scenario: Any) -> frozenset[str]:
    """Every study the scenario names: rated (under any ``when``), preferred, covered, surveillance, advice."""
    ids = {rating.procedure for rating in scenario.ratings}
    ids.update(scenario.covers)
    ids.update(preference.procedure for preference in scenario.preferred)
    if scenario.surveillance is not None:
        ids.update(scenario.surveillance.procedures)
    for recommendation in scenario.recommendations:
        ids.update(recommendation.applies_to)
    return frozenset(ids)


def _criteria_of(scenario: Any) -> Iterable[Criterion]:
    yield scenario.when
    for rating in scenario.ratings:
        if rating.when is not None:
            yield rating.when
    for preference in scenario.preferred:
        if preference.when is not None:
            yield preference.when
    for recommendation in scenario.recommendations:
        yield recommendation.when
    if scenario.surveillance is not None:
        yield scenario.surveillance.anchor
