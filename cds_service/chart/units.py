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
_registry: Any = None


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


@lru_cache(maxsize=1024)  # a chart repeats a handful of units; the parse costs milliseconds
def conversion_factor(from_unit: str, to_unit: str) -> float | None:
    """The number that turns a value in ``from_unit`` into ``to_unit``, or ``None`` (not comparable)."""
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


def _quantity(unit: str) -> Any:
    text = unit.replace("µ", "u").replace("μ", "u")
    registry = _get_registry()
    try:
        quantity = registry.from_ucum(text)
    except Exception:  # not valid UCUM (ucumvert raises its own and lark's errors)
        return None
    # An annotation alone ("{ratio}") parses to no quantity: nothing to compare.
    return quantity if hasattr(quantity, "dimensionality") and hasattr(quantity, "magnitude") else None


def _get_registry() -> Any:
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                from ucumvert import PintUcumRegistry  # several seconds: only when first needed

                _registry = PintUcumRegistry()
    return _registry
