"""CDS Hooks 2.0 response objects.

Plain dataclasses mirroring the spec's names. ``to_json`` drops ``None`` and empty collections,
because CDS Hooks 2.0 forbids ``null`` and empty optional fields (the one permitted empty array,
``cards``, is written by the caller).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any


def new_uuid() -> str:
    return str(uuid.uuid4())


class JsonObject(dict):
    """A JSON object already fit to send (no ``null`` member at any depth): ``to_json`` keeps it as
    it is instead of walking it again. Made by :func:`without_nulls`."""


def without_nulls(value: Any) -> Any:
    """A copy of decoded JSON without ``null`` object members (kept in arrays, as ``to_json`` does);
    an object comes back as a :class:`JsonObject`. An echoed FHIR resource is copied this way once."""
    if type(value) is dict or type(value) is JsonObject:
        return JsonObject({key: _copy_without_nulls(item) for key, item in value.items() if item is not None})
    return _copy_without_nulls(value)


def _copy_without_nulls(value: Any) -> Any:
    kind = type(value)
    if kind is dict or kind is JsonObject:
        return {key: _copy_without_nulls(item) for key, item in value.items() if item is not None}
    if kind is list:
        return [_copy_without_nulls(item) for item in value]
    return value


def to_json(value: Any) -> Any:
    """Dataclasses → dicts with camelCase keys, without ``None``/empty values."""
    if isinstance(value, _SCALARS):
        return value
    names = _JSON_NAMES.get(type(value))
    if names is None:
        if type(value) is JsonObject:
            return value
        if isinstance(value, (list, tuple)):
            return [to_json(v) for v in value]
        if isinstance(value, dict):
            return {k: to_json(v) for k, v in value.items() if v is not None}
        if not is_dataclass(value) or isinstance(value, type):
            return value
        names = _JSON_NAMES[type(value)] = tuple((f.name, f.metadata.get("json", f.name)) for f in fields(value))
    out = {}
    for name, json_name in names:
        item = to_json(getattr(value, name))
        if item is None or item == [] or item == {} or item == "":
            continue
        out[json_name] = item
    return out


_SCALARS = (str, int, float, bool, type(None))
#: Dataclass type → its (attribute, JSON member) names; a response builds ~100 objects.
_JSON_NAMES: dict[type, tuple[tuple[str, str], ...]] = {}


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True)
class Source:
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


@dataclass(frozen=True)
class Link:
    label: str
    url: str
    type: str = "absolute"


@dataclass(frozen=True)
class Action:
    type: str                                   # create | update | delete
    description: str
    resource: dict | None = None
    resource_id: str | None = field(default=None, metadata={"json": "resourceId"})


@dataclass(frozen=True)
class Suggestion:
    label: str
    actions: tuple[Action, ...]
    uuid: str = field(default_factory=new_uuid)
    is_recommended: bool | None = field(default=None, metadata={"json": "isRecommended"})


@dataclass(frozen=True)
class Card:
    summary: str
    indicator: str                              # info | warning | critical
    source: Source
    detail: str | None = None
    suggestions: tuple[Suggestion, ...] = ()
    selection_behavior: str | None = field(default=None, metadata={"json": "selectionBehavior"})
    override_reasons: tuple[Coding, ...] = field(default=(), metadata={"json": "overrideReasons"})
    links: tuple[Link, ...] = ()
    uuid: str = field(default_factory=new_uuid)

    def __post_init__(self):
        # CDS Hooks 2.0: summary "<140-character"; selectionBehavior MUST accompany suggestions.
        if len(self.summary) >= 140:
            raise ValueError(f"card summary is {len(self.summary)} characters; it must be under 140")
        if self.suggestions and not self.selection_behavior:
            raise ValueError("a card with suggestions needs selectionBehavior")
