"""Validation of a CDS Hooks feedback call: bounded, then the schema, then what the schema cannot say."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from cds_service.errors import InvalidRequest
from cds_service.hooks.limits import check_feedback_body
from cds_service.hooks.schemas import problems


def parse_feedback(body: Any) -> list[dict]:
    """The feedback entries of ``body``, each once, or ``InvalidRequest`` with the problems found.

    The schema's pattern admits ``2026-13-45T99:00:00Z``: every ``outcomeTimestamp`` must also be
    a real instant, since the store deduplicates on it (a timestamp read as NULL would make every
    retry a new row). Entries repeated within one call are kept once.
    """
    check_feedback_body(body)
    found = problems("feedback", body) if isinstance(body, dict) else ["(body): must be a JSON object"]
    if found:
        raise InvalidRequest("invalid CDS Hooks feedback", details=found)
    entries: list[dict] = []
    seen: set[bytes] = set()
    for index, entry in enumerate(body["feedback"]):
        try:
            datetime.fromisoformat(entry["outcomeTimestamp"].replace("Z", "+00:00"))
        except ValueError:
            found.append(f"feedback.{index}.outcomeTimestamp: not a valid date and time")
            continue
        key = msgspec.json.encode(entry, order="sorted")
        if key not in seen:
            seen.add(key)
            entries.append(entry)
    if found:
        raise InvalidRequest("invalid CDS Hooks feedback", details=found[:10])
    return entries
