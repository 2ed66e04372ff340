"""Knowledge criteria (docs/knowledge.md, "Criteria") evaluated over one request's chart facts.

A criterion is the JSON object the knowledge author wrote: exactly one operator key plus that
operator's options. :func:`evaluate` answers whether it holds and which chart facts made it hold
(:class:`~cds_service.reasoning.assessment.Evidence`, shown on cards).

Speed matters because every scenario, rating, preference, contraindication and recommendation of
the knowledge base is a criterion, evaluated per order. :class:`CriteriaEvaluator` therefore
indexes the request's facts once, by kind and by the value sets their codes belong to, and
memoises sub-criteria, so matching a value set against the chart is one look-up however many
scenarios use it. The evaluator belongs to one request: nothing is kept between requests, and
nothing here does I/O or logs.

The loader validates the knowledge (operators, options, value-set and definition references), so
an unknown operator or reference here is a programming error and raises :class:`ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Callable, Iterable

from cds_service.chart.facts import ChartFacts, ClinicalFact, FactKind, MarkerTrend
from cds_service.kb.compiled import ANY_REASON
from cds_service.kb.model import Criterion, Knowledge, ValueSet
from cds_service.reasoning.assessment import Evidence
from cds_service.reasoning.lab_values import format_value, only_latest, value_test
from cds_service.reasoning.fact_selection import day_of, fact_label as _fact_label, newest_first, reasons_in
from cds_service.reasoning.fact_selection import safety_test, trend_label

__all__ = ["CriterionResult", "CriteriaEvaluator", "evaluate", "OPERATOR_OPTIONS"]


@dataclass(frozen=True)
class CriterionResult:
    """Whether a criterion holds, and the chart facts that make it hold (empty for ``not``)."""

    holds: bool
    evidence: tuple[Evidence, ...] = ()


FALSE = CriterionResult(False)

_WINDOW = frozenset({"within_days", "older_than_days"})

#: Options each operator accepts. The date windows are accepted on every fact operator (the
#: format documents the ones authors need; accepting both everywhere costs nothing and keeps a
#: schema that allows them from turning into a runtime error).
OPERATOR_OPTIONS: dict[str, frozenset[str]] = {
    "all": frozenset(),
    "any": frozenset(),
    "not": frozenset(),
    "ref": frozenset(),
    "condition": _WINDOW | {"clinical_status", "exclude_order_reasons"},
    "procedure": _WINDOW | {"reason_in"},
    "medication": _WINDOW | {"reason_in"},
    "observation": _WINDOW | {"value_below", "value_above", "value_in", "unit", "above_reference_high", "latest"},
    "stage": _WINDOW | {"reason_in"},
    "marker_trend": frozenset({"trend", "window_days", "min_rise_fraction"}),
    "device": _WINDOW | {"safety_in", "safety_not_in"},
    "allergy": _WINDOW,
    "finding": _WINDOW,
    "imaging": _WINDOW,
    "order_reason": frozenset({"outside"}),
}

DEFAULT_TREND = "rising"
DEFAULT_TREND_WINDOW_DAYS = 365
DEFAULT_MIN_RISE_FRACTION = 0.2

#: Statuses that mean "this did not happen / is not true" for each kind of fact. A fact with one
#: of them never satisfies a criterion. ``procedure``, ``device`` and ``allergy`` are the format's
#: rules; ``entered-in-error`` (and ``cancelled`` where the resource has it) is void everywhere.
_VOID_STATUSES: dict[FactKind, frozenset[str]] = {
    FactKind.CONDITION: frozenset({"entered-in-error"}),
    FactKind.ORDER_REASON: frozenset(),
    FactKind.PROCEDURE: frozenset({"not-done", "entered-in-error"}),
    FactKind.MEDICATION: frozenset({"entered-in-error", "cancelled"}),
    FactKind.OBSERVATION: frozenset({"entered-in-error", "cancelled"}),
    FactKind.DEVICE: frozenset({"inactive", "entered-in-error"}),
    FactKind.ALLERGY: frozenset({"resolved", "refuted", "entered-in-error"}),
    FactKind.IMAGING: frozenset({"entered-in-error", "cancelled"}),
    FactKind.FINDING: frozenset({"entered-in-error", "cancelled"}),
    FactKind.STAGE: frozenset({"entered-in-error"}),
}
_VOID_VERIFICATIONS = frozenset({"refuted", "entered-in-error"})

#: Clinical status given to reasons on the draft order: the order is being placed for that
#: problem now, so for a ``clinical_status`` filter it is an active problem.
ORDER_REASON_STATUS = "active"


def evaluate(criterion: Criterion, facts: ChartFacts, knowledge: Knowledge) -> CriterionResult:
    """Evaluate one criterion; see :class:`CriteriaEvaluator` to evaluate many over one chart."""
    return CriteriaEvaluator(facts, knowledge).evaluate(criterion)


#: Criterion object id → (criterion, its operator); bounded because tests make criteria by the
#: thousand, while a knowledge base has a few hundred.
_OPERATORS: dict[int, tuple[Criterion, str]] = {}
_MAX_REMEMBERED_OPERATORS = 4096


class CriteriaEvaluator:
    """Evaluates criteria over the facts of one request; create one per request, never share.

    Caches (facts indexed by kind and by value set, results of sub-criteria) live on
    the instance and die with it, so two requests can never see each other's patient.
    """

    def __init__(self, facts: ChartFacts, knowledge: Knowledge):
        self.facts = facts
        self.knowledge = knowledge
        self.today: date = day_of(facts.today)  # type: ignore[assignment]
        self._shared: CriteriaEvaluator | None = None
        self._order_facts: tuple[ClinicalFact, ...] = ()
        self._order_valuesets: frozenset[str] = frozenset()
        self._present: frozenset[str] | None = None
        self._positions: dict[int, int] = {}
        self._by_kind: dict[FactKind, tuple[ClinicalFact, ...]] | None = None
        self._by_valueset: dict[tuple[str, FactKind], tuple[ClinicalFact, ...]] = {}
        self._results: dict[int, tuple[Criterion, CriterionResult]] = {}
        self._resolving: list[str] = []
        self._handlers: dict[str, Callable[[Criterion], CriterionResult]] = {
            "all": self._all,
            "any": self._any,
            "not": self._not,
            "ref": self._ref,
            "condition": self._condition,
            "procedure": self._procedure,
            "medication": self._medication,
            "observation": self._observation,
            "marker_trend": self._marker_trend,
            "device": self._device,
            "allergy": self._allergy,
            "finding": self._finding,
            "imaging": self._imaging,
            "stage": self._stage,
            "order_reason": self._order_reason,
        }

    def for_order(self, order_facts: tuple[ClinicalFact, ...]) -> "CriteriaEvaluator":
        """The chart plus one draft order's own facts (its reasons). Criteria those cannot change (see
        CompiledKnowledge.reason_valuesets) are answered by this, the call's, evaluator and memo."""
        view = CriteriaEvaluator(replace(self.facts, facts=self.facts.facts + order_facts), self.knowledge)
        view._shared, view._order_facts = self, order_facts
        valuesets_with = self.knowledge.valuesets_with
        view._order_valuesets = frozenset(v for fact in order_facts for code in fact.codes
                                          for v in valuesets_with(code.system, code.code))
        if order_facts:  # criteria about "any reason of the order" depend on it
            view._order_valuesets |= {ANY_REASON}
        return view

    def valuesets_present(self) -> frozenset[str]:
        """Value sets holding at least one (non-void) fact of this chart: what gates scenarios."""
        if self._present is None and self._shared is not None:  # an order's reasons are never void
            self._present = self._shared.valuesets_present() | (self._order_valuesets - {ANY_REASON})
        elif self._present is None:
            self._build_indexes()
            self._present = frozenset(valueset_id for valueset_id, _ in self._by_valueset)
        return self._present

    # -- entry point ---------------------------------------------------------------------------

    def evaluate(self, criterion: Criterion) -> CriterionResult:
        """Whether ``criterion`` holds for this chart, with evidence; memoised per criterion object.

        The memo keeps a reference to the criterion, so its ``id`` cannot be reused while cached.
        """
        shared = self._shared
        if shared is not None and self._order_valuesets.isdisjoint(self.knowledge.compiled.reason_valuesets(criterion)):
            return shared.evaluate(criterion)
        cached = self._results.get(id(criterion))
        if cached is not None and cached[0] is criterion:
            return cached[1]
        operator = self._operator(criterion)
        result = self._handlers[operator](criterion)
        self._results[id(criterion)] = (criterion, result)
        return result

    def holds(self, criterion: Criterion | None) -> bool:
        """``None`` (no ``when``) always holds."""
        return criterion is None or self.evaluate(criterion).holds

    def _operator(self, criterion: Criterion) -> str:
        # The knowledge's criteria were resolved when it was loaded; others (tests, tools) are
        # checked once per process.
        known = self.knowledge.compiled.operators.get(id(criterion)) or _OPERATORS.get(id(criterion))
        if known is not None and known[0] is criterion:
            return known[1]
        operator = CriteriaEvaluator._check_operator(criterion)
        if len(_OPERATORS) < _MAX_REMEMBERED_OPERATORS:
            _OPERATORS[id(criterion)] = (criterion, operator)  # holds the criterion: its id stays unique
        return operator

    @staticmethod
    def _check_operator(criterion: Criterion) -> str:
        if not isinstance(criterion, dict) and not hasattr(criterion, "keys"):
            raise ValueError(f"criterion must be an object, got {type(criterion).__name__}")
        operators = [key for key in criterion if key in OPERATOR_OPTIONS]
        if len(operators) != 1:
            raise ValueError(f"criterion needs exactly one operator, got {sorted(criterion)}")
        operator = operators[0]
        unknown = set(criterion) - {operator} - OPERATOR_OPTIONS[operator]
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for operator {operator!r}")
        return operator

    # -- logic ---------------------------------------------------------------------------------

    def _all(self, criterion: Criterion) -> CriterionResult:
        evidence: list[Evidence] = []
        for child in criterion["all"]:
            result = self.evaluate(child)
            if not result.holds:
                return FALSE
            evidence.extend(result.evidence)
        return CriterionResult(True, tuple(evidence))

    def _any(self, criterion: Criterion) -> CriterionResult:
        """Every holding branch contributes evidence (a card can show pain *and* swelling)."""
        evidence: list[Evidence] = []
        holds = False
        for child in criterion["any"]:
            result = self.evaluate(child)
            if result.holds:
                holds = True
                evidence.extend(result.evidence)
        return CriterionResult(holds, tuple(evidence)) if holds else FALSE

    def _not(self, criterion: Criterion) -> CriterionResult:
        """Absence has no chart fact to show, so ``not`` gives no evidence."""
        return CriterionResult(not self.evaluate(criterion["not"]).holds)

    def _ref(self, criterion: Criterion) -> CriterionResult:
        name = criterion["ref"]
        try:
            definition = self.knowledge.definitions[name]
        except KeyError:
            raise ValueError(f"unknown definition {name!r}") from None
        if name in self._resolving:
            raise ValueError(f"definition cycle: {' -> '.join([*self._resolving, name])}")
        self._resolving.append(name)
        try:
            return self.evaluate(definition)
        finally:
            self._resolving.pop()

    # -- fact operators ------------------------------------------------------------------------

    def _condition(self, criterion: Criterion) -> CriterionResult:
        kinds: tuple[FactKind, ...] = (FactKind.CONDITION,)
        if not criterion.get("exclude_order_reasons", False):
            kinds = (FactKind.CONDITION, FactKind.ORDER_REASON)
        statuses = criterion.get("clinical_status")
        allowed = frozenset(statuses) if statuses is not None else None

        def status_ok(fact: ClinicalFact) -> bool:
            if allowed is None:
                return True
            status = ORDER_REASON_STATUS if fact.kind is FactKind.ORDER_REASON else fact.status
            # An unknown clinical status never satisfies a status filter (as undated facts never
            # satisfy a window): we do not guess that a problem is active.
            return status is not None and status in allowed

        return self._coded(criterion, "condition", kinds, status_ok)

    def _procedure(self, criterion: Criterion) -> CriterionResult:
        # A procedure code given as a reason on the order ("spinal arthrodesis") documents that the
        # patient had it, but not when: it counts as an undated procedure, so it satisfies presence
        # but never a date window (an early-response exclusion cannot fire on it).
        return self._coded(criterion, "procedure", (FactKind.PROCEDURE, FactKind.ORDER_REASON),
                           self._reason_test(criterion), undated_reasons=True)

    def _medication(self, criterion: Criterion) -> CriterionResult:
        return self._coded(criterion, "medication", (FactKind.MEDICATION,), self._reason_test(criterion))

    def _stage(self, criterion: Criterion) -> CriterionResult:
        """Condition.stage summaries; ``reason_in`` names the staged cancer."""
        return self._coded(criterion, "stage", (FactKind.STAGE,), self._reason_test(criterion))

    def _reason_test(self, criterion: Criterion) -> Callable[[ClinicalFact], bool] | None:
        """``reason_in``: what a treatment was for (or a stage is of) is coded in that value set."""
        if "reason_in" not in criterion:
            return None
        reasons = self._valueset(criterion["reason_in"])
        return lambda fact: any(reasons.contains(code) for code in fact.reason_codes)

    def _device(self, criterion: Criterion) -> CriterionResult:
        """``safety_in`` / ``safety_not_in``: what the device's own MR labelling (Device.safety) says."""
        accept, label = safety_test(criterion, self._valueset)
        return self._coded(criterion, "device", (FactKind.DEVICE,), accept, label)

    def _allergy(self, criterion: Criterion) -> CriterionResult:
        return self._coded(criterion, "allergy", (FactKind.ALLERGY,))

    def _finding(self, criterion: Criterion) -> CriterionResult:
        return self._coded(criterion, "finding", (FactKind.FINDING,))

    def _observation(self, criterion: Criterion) -> CriterionResult:
        """Value options: reasoning/lab_values.py (units through UCUM, reference range, ``latest``)."""
        value_in = self._valueset(criterion["value_in"]) if "value_in" in criterion else None
        accept = value_test(criterion, value_in)
        if criterion.get("latest", False):
            results = self.matching_facts(self._valueset(criterion["observation"]), (FactKind.OBSERVATION,))
            accept = only_latest(results, accept)

        def label(title: str, fact: ClinicalFact, day: date | None) -> str:
            shown = format_value(fact.value, fact.unit)
            if not shown and fact.value_codes:
                shown = fact.value_codes[0].display or fact.value_codes[0].code
            return _fact_label(f"{title} {shown}" if shown else title, fact, day)

        return self._coded(criterion, "observation", (FactKind.OBSERVATION,), accept, label)

    def _coded(
        self,
        criterion: Criterion,
        operator: str,
        kinds: tuple[FactKind, ...],
        accept: Callable[[ClinicalFact], bool] | None = None,
        label: Callable[[str, ClinicalFact, date | None], str] = _fact_label,
        undated_reasons: bool = False,
    ) -> CriterionResult:
        """Facts of ``kinds`` coded in the value set, inside the date window, accepted by ``accept``."""
        valueset = self._valueset(criterion[operator])
        within = criterion.get("within_days")
        older = criterion.get("older_than_days")
        evidence: list[Evidence] = []
        for fact in self.matching_facts(valueset, kinds):
            day = None if undated_reasons and fact.kind is FactKind.ORDER_REASON else self._fact_day(fact)
            if self._in_window(day, within, older) and (accept is None or accept(fact)):
                evidence.append(Evidence(label=label(valueset.title, fact, day), fact=fact))
        if not evidence:
            return FALSE
        return CriterionResult(True, newest_first(evidence))

    def _marker_trend(self, criterion: Criterion) -> CriterionResult:
        """Delegates "rising" to the chart module, so the service has one definition of it."""
        from cds_service.chart.marker_trend import extract_tumour_marker_trend

        valueset = self._valueset(criterion["marker_trend"])
        wanted = criterion.get("trend", DEFAULT_TREND)
        series = self.matching_facts(valueset, (FactKind.OBSERVATION,))
        if not series:
            return FALSE
        members = {id(fact) for fact in series}
        # The chart module reads only the facts it is given; handing it the value set's
        # observations (non-void, chart order) spares it the rest of the chart.
        trend: MarkerTrend = extract_tumour_marker_trend(
            series,
            lambda fact: id(fact) in members,
            self.today,
            criterion.get("window_days", DEFAULT_TREND_WINDOW_DAYS),
            criterion.get("min_rise_fraction", DEFAULT_MIN_RISE_FRACTION),
        )
        if trend.direction != wanted:
            return FALSE
        return CriterionResult(True, (Evidence(label=trend_label(valueset.title, trend), facts=trend.points),))

    def _order_reason(self, criterion: Criterion) -> CriterionResult:
        valueset, outside = self._valueset(criterion["order_reason"]), criterion.get("outside", False)
        title = "Order reason" if outside else valueset.title
        found = reasons_in(self._facts_of_kind(FactKind.ORDER_REASON), valueset, outside)
        return CriterionResult(True, tuple(Evidence(_fact_label(title, f, None), f) for f in found)) if found else FALSE

    def _imaging(self, criterion: Criterion) -> CriterionResult:
        """Prior studies: an IMAGING fact counts when one of its codes is a code of a listed study."""
        wanted = list(criterion["imaging"])
        for procedure_id in wanted:
            if procedure_id not in self.knowledge.procedures:
                raise ValueError(f"unknown procedure {procedure_id!r}")
        within = criterion.get("within_days")
        older = criterion.get("older_than_days")
        evidence: list[Evidence] = []
        for fact in self.prior_studies(wanted):
            day = self._fact_day(fact)
            if not self._in_window(day, within, older):
                continue
            matched = self._study_procedures(fact)
            name = next(p.name for p in matched if p.id in wanted)
            evidence.append(Evidence(label=_fact_label(f"Prior {name}", fact, day), fact=fact))
        if not evidence:
            return FALSE
        return CriterionResult(True, newest_first(evidence))

    # -- indexes -------------------------------------------------------------------------------

    def prior_studies(self, procedure_ids: Iterable[str]) -> tuple[ClinicalFact, ...]:
        """IMAGING facts that are a study of one of these catalogue procedures, in chart order."""
        wanted = set(procedure_ids)
        return tuple(
            fact
            for fact in self._facts_of_kind(FactKind.IMAGING)
            if any(p.id in wanted for p in self._study_procedures(fact))
        )

    def _study_procedures(self, fact: ClinicalFact):
        return self.knowledge.procedures_for(fact.codes)

    def matching_facts(self, valueset: ValueSet, kinds: tuple[FactKind, ...]) -> tuple[ClinicalFact, ...]:
        """Non-void facts of ``kinds`` with a code in ``valueset``, in chart order."""
        self._build_indexes()
        if len(kinds) == 1:
            return self._by_valueset.get((valueset.id, kinds[0]), ())
        found = [fact for kind in kinds for fact in self._by_valueset.get((valueset.id, kind), ())]
        positions = self._positions
        found.sort(key=lambda fact: positions[id(fact)])
        return tuple(found)

    def _facts_of_kind(self, kind: FactKind) -> tuple[ClinicalFact, ...]:
        """Non-void facts of ``kind``, in chart order."""
        self._build_indexes()
        return self._by_kind.get(kind, ())

    def _build_indexes(self) -> None:
        """One pass over the chart on first use: facts by kind, and by value set within each kind.

        Each code is asked once which value sets contain it (``Knowledge.valuesets_with``, which
        remembers its answers), so a criterion's value set costs one look-up however large it is.
        """
        if self._by_kind is not None:
            return
        by_kind: dict[FactKind, list[ClinicalFact]] = {}
        by_valueset: dict[tuple[str, FactKind], list[ClinicalFact]] = {}
        facts: tuple[ClinicalFact, ...] = self.facts.facts
        start = 0
        if self._shared is not None:  # the call's index, plus this order's own facts
            shared = self._shared
            shared._build_indexes()
            by_kind = {kind: list(found) for kind, found in shared._by_kind.items()}
            by_valueset = {key: list(found) for key, found in shared._by_valueset.items()}
            self._positions = dict(shared._positions)
            facts, start = self._order_facts, len(shared.facts.facts)
        self._index(facts, start, by_kind, by_valueset)
        self._by_kind = {kind: tuple(found) for kind, found in by_kind.items()}
        self._by_valueset = {key: tuple(found) for key, found in by_valueset.items()}

    def _index(self, facts: tuple[ClinicalFact, ...], start: int, by_kind: dict, by_valueset: dict) -> None:
        # A hot loop (every fact of the chart, once per call): written for speed, not beauty.
        positions = self._positions
        valuesets_with = self.knowledge.valuesets_with
        void_verifications = _VOID_VERIFICATIONS
        for position, fact in enumerate(facts, start):
            kind, status, verification = fact.kind, fact.status, fact.verification
            if (status is not None and status in _VOID_STATUSES[kind]) or (
                verification is not None and verification in void_verifications
            ):
                continue
            positions[id(fact)] = position
            kind_facts = by_kind.get(kind)
            if kind_facts is None:
                by_kind[kind] = [fact]
            else:
                kind_facts.append(fact)
            for code in fact.codes:
                for valueset_id in valuesets_with(code.system, code.code):
                    key = (valueset_id, kind)
                    bucket = by_valueset.get(key)
                    if bucket is None:
                        by_valueset[key] = [fact]
                    elif bucket[-1] is not fact:  # two codes of one fact in the same value set
                        bucket.append(fact)

    def _valueset(self, valueset_id: str) -> ValueSet:
        try:
            return self.knowledge.valuesets[valueset_id]
        except KeyError:
            raise ValueError(f"unknown value set {valueset_id!r}") from None

    # -- dates ---------------------------------------------------------------------------------

    def _fact_day(self, fact: ClinicalFact) -> date | None:
        """Reasons on the draft order count as dated today (docs/knowledge.md)."""
        if fact.kind is FactKind.ORDER_REASON:
            return day_of(fact.date) or self.today
        return day_of(fact.date)

    def _in_window(self, day: date | None, within_days: int | None, older_than_days: int | None) -> bool:
        """within_days N: no earlier than N days before today; older_than_days N: more than N days ago.

        Undated facts never satisfy a dated option.
        """
        if within_days is None and older_than_days is None:
            return True
        if day is None:
            return False
        if within_days is not None and day < self.today - timedelta(days=within_days):
            return False
        if older_than_days is not None and not day < self.today - timedelta(days=older_than_days):
            return False
        return True
