"""Lab values in different but equivalent units, compared through UCUM.

A series of results may be reported in ``ng/mL`` by one laboratory and ``ug/L`` by another; both
are the same quantity. Units are parsed as UCUM codes by ``ucumvert`` (a maintained UCUM grammar
on top of the ``pint`` unit library) — no conversion table of our own. A unit that is not valid
UCUM, or that measures something else (``U/mL`` against ``ng/mL``), cannot be converted: the
caller then leaves that value out rather than compare it wrongly.

Which text is the unit: the UCUM code of ``valueQuantity`` (``ClinicalFact.ucum``) when the
source gives one, else its human-readable ``unit``, which most laboratories write in UCUM anyway.
The micro sign (µ, μ) is read as UCUM's ``u``; nothing else is rewritten.

The registry takes a few seconds to build, so it is built once per process, on first use or
by :func:`warm_up` at start-up; identical units (the usual case) never touch it.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
#: What takes long to build, built once per process: "registry" (pint with UCUM), "grammar".
_built: dict[str, Any] = {}


def warm_up() -> None:
    """Build the UCUM registry now (start-up), so that no request waits for it."""
    _get_registry()


def unit_of(ucum: str | None, unit: str | None) -> str | None:
    """The unit text to compare: the UCUM code when given, else the unit as written."""
    return ucum or unit


def convert(value: float, from_unit: str | None, to_unit: str | None) -> float | None:
    """``value`` expressed in ``to_unit``; ``None`` when the units cannot be compared.

    Two missing units, or two that are the same text (surrounding spaces ignored), need no
    conversion. One missing unit against a present one cannot be compared.
    """
    if from_unit is None or to_unit is None:
        return value if from_unit is None and to_unit is None else None
    if from_unit.strip() == to_unit.strip():
        return value
    factor = conversion_factor(from_unit.strip(), to_unit.strip())
    return None if factor is None else value * factor


#: (from, to) → factor or None, as worked out; a chart repeats a handful of units and a parse costs
#: milliseconds. Bounded: emptied when full (the units come from requests).
_factors: dict[tuple[str, str], float | None] = {}
_MAX_REMEMBERED = 1024


def conversion_factor(from_unit: str, to_unit: str) -> float | None:
    """The number that turns a value in ``from_unit`` into ``to_unit``, or ``None`` (not comparable)."""
    key = (from_unit, to_unit)
    if key in _factors:
        return _factors[key]
    factor = _factor(from_unit, to_unit)
    if len(_factors) >= _MAX_REMEMBERED:
        _factors.clear()
    _factors[key] = factor
    return factor


def _factor(from_unit: str, to_unit: str) -> float | None:
    source, target = _quantity(from_unit), _quantity(to_unit)
    if source is None or target is None:
        return None
    try:
        if source.dimensionality != target.dimensionality:
            return None
        factor = float((source / target).to("dimensionless").magnitude)
    except Exception:  # offset units (Cel), pint's own errors: not comparable by a factor
        return None
    # 12 significant digits: ng/mL → ug/L is 1, not 1.0000000000000002 (float error of pint's path).
    return float(f"{factor:.12g}")


#: Real units are short ("mL/min/{1.73_m2}" is 16 characters) and lab units need no parentheses;
#: the parser's time grows steeply with length and nesting (a 40-character nest takes ~80 ms), so
#: other texts from a chart are not parsed at all (not comparable). Worst case left: ~15 ms a unit.
MAX_UNIT_LENGTH = 24
#: Units one series or one criterion may fail to convert before it stops trying new ones.
MAX_FAILED_UNITS = 8


class Converter:
    """:func:`convert` with a bound on the parsing spent on units that turn out not comparable.

    Units arrive from the chart, so a hostile one could name hundreds of made-up units, each a
    parse that fails slowly; after ``max_failures`` of them, further units that are not already
    known to convert are not comparable. Units that convert cost one quick parse each, once per
    process (cached), and are never refused.
    """

    def __init__(self, max_failures: int = MAX_FAILED_UNITS) -> None:
        self.max_failures = max_failures
        self.failures = 0

    def convert(self, value: float, from_unit: str | None, to_unit: str | None) -> float | None:
        if self.failures >= self.max_failures and not _known(from_unit, to_unit):
            return None
        result = convert(value, from_unit, to_unit)
        if result is None:
            self.failures += 1
        return result


def _known(from_unit: str | None, to_unit: str | None) -> bool:
    """Whether converting these units costs nothing: the same text, or a pair already worked out."""
    if from_unit is None or to_unit is None or from_unit.strip() == to_unit.strip():
        return True
    return (from_unit.strip(), to_unit.strip()) in _factors


def _quantity(unit: str) -> Any:
    if len(unit) > MAX_UNIT_LENGTH or "(" in unit:
        return None
    text = unit.replace("µ", "u").replace("μ", "u")
    registry = _get_registry()
    try:
        quantity = registry.from_ucum(text)
    except Exception:  # not valid UCUM (ucumvert raises its own and lark's errors)
        return None
    # An annotation alone ("{ratio}") parses to no quantity: nothing to compare.
    return quantity if hasattr(quantity, "dimensionality") and hasattr(quantity, "magnitude") else None


def _once(name: str, build: Any) -> Any:
    if name not in _built:
        with _lock:
            if name not in _built:
                _built[name] = build()
    return _built[name]


def _get_registry() -> Any:
    def build() -> Any:
        from ucumvert import PintUcumRegistry  # several seconds: only when first needed

        return PintUcumRegistry()

    return _once("registry", build)


@lru_cache(maxsize=256)
def unit_problem(unit: str) -> str | None:
    """Why a criterion's ``unit`` could never be compared with results, or ``None``: not a UCUM code
    (``mL/min/1.73m2`` is not; ``mL/min/{1.73_m2}`` is), or beyond what is parsed (see
    :data:`MAX_UNIT_LENGTH`). For the knowledge loader; only the UCUM grammar is needed, which
    is built in well under a second, not the registry."""
    if len(unit) > MAX_UNIT_LENGTH or "(" in unit:
        return (f"{unit!r}: a unit over {MAX_UNIT_LENGTH} characters or with parentheses is never "
                "parsed, so no result would be converted into it")
    from lark.exceptions import LarkError
    from ucumvert.parser import parse_ucum

    try:
        parse_ucum(unit, _get_grammar())
    except LarkError as error:  # ucumvert's InvalidUcumError says which character, and where
        return str(error).splitlines()[0]
    return None


def _get_grammar() -> Any:
    from ucumvert.parser import get_ucum_parser

    return _once("grammar", get_ucum_parser)
