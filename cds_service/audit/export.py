"""Audit export: decisions (with their cards) and feedback as CSV or JSON, streamed row by row."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence, TextIO

from cds_service.audit.backend import Tx, utc

DECISION_FIELDS = (
    "id", "decided_at", "service_id", "hook", "hook_instance", "patient_hash", "order_codes",
    "order_ref", "scenario_id", "rating", "pama_rating", "outcome", "knowledge_version",
    "consult_id", "latency_ms", "instance", "cards",
)


FEEDBACK_FIELDS = (
    "id", "received_at", "service_id", "card_uuid", "outcome", "outcome_timestamp",
    "accepted_suggestions", "override_reason_system", "override_reason_code",
    "override_reason_display", "has_user_comment", "decision_id", "hook_instance", "instance",
)


def iso_utc(value: datetime | None) -> str | None:
    """UTC ISO-8601 with microseconds and ``Z`` (exports)."""
    return None if value is None else utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _CsvOut:
    def __init__(self, out: TextIO, fields: Sequence[str]):
        self._fields = fields
        self._writer = csv.writer(out)
        self._writer.writerow(fields)

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow([self._cell(row[f]) for f in self._fields])

    @staticmethod
    def _cell(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (list, dict)):
            return json.dumps(value, ensure_ascii=False)
        # Spreadsheets ignore leading blanks and line breaks before a formula sign.
        if isinstance(value, str) and (value.startswith(_FORMULA_START)
                                       or value.lstrip(" \t\r\n\f\v").startswith(_FORMULA_START)):
            return "'" + value
        return value

    def finish(self) -> None:
        pass


class _JsonOut:
    def __init__(self, out: TextIO):
        self._out = out
        self._count = 0

    def write(self, row: Mapping[str, Any]) -> None:
        self._out.write(("[\n" if self._count == 0 else ",\n") + json.dumps(row, ensure_ascii=False))
        self._count += 1

    def finish(self) -> None:
        self._out.write("\n]\n" if self._count else "[]\n")


def check_export_request(what: str, fmt: str) -> None:
    if what not in ("decisions", "feedback"):
        raise ValueError(f"export what must be 'decisions' or 'feedback', not {what!r}")
    if fmt not in ("csv", "json"):
        raise ValueError(f"export format must be 'csv' or 'json', not {fmt!r}")


def write_export(tx: Tx, what: str, fmt: str, out: TextIO, since: datetime | None) -> int:
    """Write ``decisions`` or ``feedback`` (oldest first) as ``csv`` or ``json``; rows written.

    JSON is one array of objects (written row by row); in CSV, list-valued columns hold
    JSON arrays and text that a spreadsheet would run as a formula is prefixed with ``'``.
    ``since`` keeps decisions decided (feedback received) at or after that instant.
    """
    check_export_request(what, fmt)
    table = _DECISIONS if what == "decisions" else _FEEDBACK
    writer = _CsvOut(out, table.fields) if fmt == "csv" else _JsonOut(out)  # nothing written before connecting
    count = 0
    for row in _rows(tx, table, since):
        writer.write(row)
        count += 1
    writer.finish()
    return count


@dataclass(frozen=True)
class _Table:
    """How one export is read: its query and how the stored columns become the exported values."""

    fields: tuple[str, ...]
    #: ``SELECT … FROM …``: one column per field in ``fields`` order (``cards`` excepted), then,
    #: for decisions, the columns of one card (:data:`CARD_FIELDS`), one result row per card.
    select: str
    since_column: str
    order_by: str
    instants: tuple[str, ...] = ()    # stored timestamps, exported as UTC ISO-8601
    json_lists: tuple[str, ...] = ()  # stored as JSON text
    flags: tuple[str, ...] = ()       # stored as 0/1
    with_cards: bool = False


#: The columns of a card in a decision export's ``cards`` list (the last, ``suggestion_uuids``, JSON text).
CARD_FIELDS = ("uuid", "indicator", "summary", "suggestion_uuids")

_DECISIONS = _Table(
    fields=DECISION_FIELDS,
    select=("SELECT d.id, d.decided_at, d.service_id, d.hook, d.hook_instance, d.patient_hash, "
            "d.order_codes, d.order_ref, d.scenario_id, d.rating, d.pama_rating, d.outcome, "
            "d.knowledge_version, d.consult_id, d.latency_ms, d.instance, "
            "c.uuid, c.indicator, c.summary, c.suggestion_uuids "
            "FROM decisions d LEFT JOIN cards c ON c.decision_id = d.id"),
    since_column="d.decided_at", order_by="d.decided_at, d.id, c.position",
    instants=("decided_at",), json_lists=("order_codes",), with_cards=True,
)

_FEEDBACK = _Table(
    fields=FEEDBACK_FIELDS,
    # Feedback that arrived before its decision was stored is resolved here, late.
    select=("SELECT f.id, f.received_at, f.service_id, f.card_uuid, f.outcome, f.outcome_timestamp, "
            "f.accepted_suggestions, f.override_reason_system, f.override_reason_code, "
            "f.override_reason_display, f.has_user_comment, COALESCE(f.decision_id, c.decision_id), "
            "COALESCE(f.hook_instance, d.hook_instance), f.instance "
            "FROM feedback f LEFT JOIN cards c ON c.uuid = f.card_uuid "
            "LEFT JOIN decisions d ON d.id = c.decision_id"),
    since_column="f.received_at", order_by="f.received_at, f.id",
    instants=("received_at", "outcome_timestamp"), json_lists=("accepted_suggestions",), flags=("has_user_comment",),
)


def _rows(tx: Tx, table: _Table, since: datetime | None) -> Iterator[dict]:
    """The export's rows, oldest first, streamed; a decision's cards are gathered from its
    consecutive result rows (the query orders them by decision)."""
    sql, params = table.select, ()
    if since is not None:
        sql, params = f"{sql} WHERE {table.since_column} >= ?", (tx.ts(since),)
    sql += f" ORDER BY {table.order_by}"
    columns = [name for name in table.fields if name != "cards"]
    current: dict | None = None
    for r in tx.stream(sql, params):
        if current is None or current["id"] != r[0]:
            if current is not None:
                yield current
            current = _exported(tx, table, dict(zip(columns, r)))
        if table.with_cards and r[len(columns)] is not None:
            card = dict(zip(CARD_FIELDS, r[len(columns):]))
            card["suggestion_uuids"] = json.loads(card["suggestion_uuids"])
            current["cards"].append(card)
    if current is not None:
        yield current


def _exported(tx: Tx, table: _Table, row: dict) -> dict:
    for name in table.instants:
        row[name] = iso_utc(tx.from_ts(row[name]))
    for name in table.json_lists:
        row[name] = json.loads(row[name])
    for name in table.flags:
        row[name] = bool(row[name])
    if table.with_cards:
        row["cards"] = []
    return row
