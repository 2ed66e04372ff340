"""Tolerant readers for FHIR elements, shared by the chart modules.

Coded elements arrive as the typed structs of :mod:`.decoding` (``CodeableConcept``, ``Coding``);
other elements (Period) as plain JSON dicts.

Every reader accepts *anything* and returns ``None`` / ``()`` for input of the wrong shape
instead of raising: clients send invalid FHIR, and one bad element must not lose a request.
They are deliberately small and allocation-light because they run for every resource in the
prefetch (a 300-resource Bundle must be read in a couple of milliseconds).
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import Any

from cds_service.chart.decoding import CodeableConcept, Coding
from cds_service.chart.facts import Code

# FHIR date / dateTime / instant: "2024", "2024-05", "2024-05-17", "2024-05-17T10:00:00+02:00".
# The time part is not checked: only the calendar date is used.
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T.*)?)?)?", re.ASCII)
#: "2024-05-17T10:00:00.123456789+14:00" plus some slack for stray spaces; longer strings are junk
#: and are neither parsed nor kept in the cache.
_LONGEST_DATE_TIME = 48


def fhir_date(value: Any) -> date | None:
    """The calendar date of a FHIR date, dateTime or instant; ``None`` when absent or invalid.

    Partial dates take the first day ("2024" → 2024-01-01, "2024-05" → 2024-05-01). A dateTime
    with an offset gives the date *in its own offset* ("2024-05-17T23:30:00-05:00" → 2024-05-17),
    which is the local date the clinician saw; it is not converted to UTC.
    """
    if not isinstance(value, str) or len(value) > _LONGEST_DATE_TIME:
        return None
    return _parse_date(value)


@lru_cache(maxsize=4096)  # charts repeat the same few hundred dates; parsing is the hot spot
def _parse_date(text: str) -> date | None:
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day = match.groups()
    try:
        return date(int(year), int(month or 1), int(day or 1))
    except ValueError:  # "2024-13", "2023-02-30", year 0000
        return None


def period_date(period: Any, prefer_end: bool) -> date | None:
    """A Period's end (else start) when ``prefer_end``, otherwise its start (else end)."""
    if not isinstance(period, dict):
        return None
    first, second = ("end", "start") if prefer_end else ("start", "end")
    return fhir_date(period.get(first)) or fhir_date(period.get(second))


def coding_of(coding: Any) -> Code | None:
    """A Coding with both a system and a code (whitespace stripped), else ``None``."""
    if not isinstance(coding, Coding):
        return None
    system = coding.system
    value = coding.code
    if not isinstance(system, str) or not isinstance(value, str):
        return None
    system = system.strip()
    value = value.strip()
    if not system or not value:
        return None
    display = coding.display
    return Code(system, value, (display.strip() or None) if isinstance(display, str) else None)


def codings_of(concept: Any) -> tuple[Code, ...]:
    """Usable codings of a CodeableConcept (see :func:`coding_of`); wrong shapes give ``()``."""
    if not isinstance(concept, CodeableConcept):
        return ()
    codings = concept.coding
    if not isinstance(codings, list):
        return ()
    found = []
    for coding in codings:
        code = coding_of(coding)
        if code is not None:
            found.append(code)
    return tuple(found)


def is_malformed_concept(concept: Any) -> bool:
    """True when a CodeableConcept is present but not shaped like one (e.g. a bare string)."""
    if concept is None:
        return False
    if not isinstance(concept, CodeableConcept):
        return True
    codings = concept.coding
    return codings is not None and not isinstance(codings, list)


def text_of(concept: Any) -> str | None:
    """CodeableConcept.text, else the first coding's display."""
    if not isinstance(concept, CodeableConcept):
        return None
    text = concept.text
    if isinstance(text, str) and text.strip():
        return text.strip()
    return _first_in_codings(concept, "display")


def status_code(value: Any) -> str | None:
    """A status as a code string: R4 CodeableConcept (first coded value) or DSTU2/STU3 plain code."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, CodeableConcept):
        return _first_in_codings(value, "code")
    return None


def _first_in_codings(concept: CodeableConcept, member: str) -> str | None:
    """The first non-blank ``member`` ("code", "display") among a CodeableConcept's codings."""
    codings = concept.coding
    if isinstance(codings, list):
        for coding in codings:
            if isinstance(coding, Coding):
                found = getattr(coding, member)
                if isinstance(found, str) and found.strip():
                    return found.strip()
    return None


def number(value: Any) -> float | None:
    """A JSON number as float; booleans, strings, NaN and infinities give ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return result if result - result == 0 else None  # NaN and ±inf fail x - x == 0


def string(value: Any) -> str | None:
    """A non-empty string, stripped, else ``None``."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None
