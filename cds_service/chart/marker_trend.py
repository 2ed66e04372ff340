"""Tumour-marker series → :class:`MarkerTrend` (rising, falling, stable or insufficient data)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Callable, Iterable

import msgspec

from cds_service.chart.facts import ClinicalFact, MarkerTrend
from cds_service.chart.units import Converter, unit_of

def extract_tumour_marker_trend(
    facts: Iterable[ClinicalFact],
    is_marker: Callable[[ClinicalFact], bool],
    today: date,
    window_days: int = 365,
    min_rise_fraction: float = 0.2,
) -> MarkerTrend:
    """Whether a tumour marker is rising, falling or stable over the recent window.

    Definition (``f`` = ``min_rise_fraction``, e.g. 0.2 = 20 %):

    1. **Points.** Facts for which ``is_marker(fact)`` holds that have a numeric value and a date
       with ``today - window_days <= date <= today`` (future-dated results are ignored). They are
       ordered by date; when several fall on the same date only the one listed *last* is kept
       (dates have no time of day, and a later entry usually corrects an earlier one).
    2. **Units.** Values are compared in the unit of the latest point that has one (its UCUM
       code, else its unit text): a point in an equivalent unit is converted through UCUM
       (:mod:`.units`: 2 ug/L is 2 ng/mL), a point whose unit measures something else or is not
       UCUM is dropped, and a point without a unit is taken as it is. The points returned carry
       their converted values and that unit.
    3. **Fewer than 2 points** → ``"insufficient-data"``.
    4. **Rising** when all of these hold, with *latest* and *previous* the last two points and
       *nadir* the lowest value among the points:

       * latest > previous and latest − previous ≥ f × |previous|;
       * latest > nadir and latest − nadir ≥ f × |nadir| (for non-negative values this follows
         from the first condition; it is stated so that the rule reads "rising from the nadir");
       * if the latest point carries a reference-range upper limit (``reference_high``), the
         latest value is strictly above it (a rise within the normal range is not "rising").
    5. **Falling** when latest < previous and previous − latest ≥ f × |previous|.
    6. Otherwise **stable** (including a ≥ f rise that stays within the reference range).

    "At least f" is inclusive (a tiny tolerance absorbs floating-point error, so 10 → 12 with
    f = 0.2 is rising). ``points`` in the result are the compared points, oldest → newest.
    """
    window_start = today - timedelta(days=window_days)
    by_date: dict[date, ClinicalFact] = {}
    for fact in facts:
        if fact.value is None or fact.date is None or not window_start <= fact.date <= today:
            continue
        if not is_marker(fact):
            continue
        by_date.pop(fact.date, None)  # the later-listed fact wins its date
        by_date[fact.date] = fact
    points = sorted(by_date.values(), key=_date_of)
    points = _same_unit_as_latest(points)
    if len(points) < 2:
        return MarkerTrend("insufficient-data", tuple(points))

    values = [p.value for p in points if p.value is not None]  # all of them; narrows the type
    latest, previous, nadir = values[-1], values[-2], min(values)
    high = points[-1].reference_high
    if (_rose_by(previous, latest, min_rise_fraction) and _rose_by(nadir, latest, min_rise_fraction)
            and (high is None or latest > high)):
        direction = "rising"
    elif _fell_by(previous, latest, min_rise_fraction):
        direction = "falling"
    else:
        direction = "stable"
    return MarkerTrend(direction, tuple(points))


def _date_of(fact: ClinicalFact) -> date:
    return fact.date or date.min


def _rose_by(old: float, new: float, fraction: float) -> bool:
    """``new`` exceeds ``old`` by at least ``fraction`` of |old| (inclusive, float-tolerant)."""
    return new > old and new - old >= fraction * abs(old) - 1e-9 * max(1.0, abs(old))


def _fell_by(old: float, new: float, fraction: float) -> bool:
    """``new`` is below ``old`` by at least ``fraction`` of |old| (inclusive, float-tolerant)."""
    return new < old and old - new >= fraction * abs(old) - 1e-9 * max(1.0, abs(old))


def _same_unit_as_latest(points: list[ClinicalFact]) -> list[ClinicalFact]:
    """The points in the unit of the latest point that has one; inconvertible ones left out."""
    latest = next((p for p in reversed(points) if unit_of(p.ucum, p.unit) is not None), None)
    if latest is None:
        return points
    target = unit_of(latest.ucum, latest.unit)
    converter = Converter()
    kept = []
    for point in points:
        unit = unit_of(point.ucum, point.unit)
        if unit is None or point.value is None or unit == target:
            kept.append(point)
            continue
        value = converter.convert(point.value, unit, target)
        if value is None and point.unit is not None and point.unit.strip().lower() == (latest.unit or "").strip().lower():
            value = point.value  # the same unit text in another case ("ng/ml"): as before, the same unit
        if value is not None:
            kept.append(msgspec.structs.replace(point, value=value, unit=latest.unit, ucum=latest.ucum))
    return kept
