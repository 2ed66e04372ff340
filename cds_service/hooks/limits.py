"""Bounds on the shape of a request, checked before any JSON Schema validation.

jsonschema walks a document recursively and builds every error it finds: a body nested 1,000
deep overflows the Python stack, and 100,000 invalid array items cost seconds and gigabytes
(issue 13). So a request is first measured here, without recursion and stopping at the first
excess: nesting depth, the length of every array, and the number of draft orders. What passes is
small enough for the schema check, the chart reader and the answer to stay bounded.

The bounds are far above anything a conforming EHR sends (a draft order is about 8 levels deep
inside a hook body; order-sign in practice carries a handful of orders).
"""

from __future__ import annotations

from typing import Any, Iterator

from cds_service.errors import InvalidRequest, PayloadTooLarge

#: Deepest nesting accepted in a hook body (objects and arrays; a FHIR resource in a draft order
#: rarely exceeds 15 levels). Prefetched resources decoded by ``chart.decoding`` count as leaves.
MAX_HOOK_DEPTH = 64
#: Longest array accepted anywhere in ``context`` (prefetch Bundles are bounded by the body size).
MAX_CONTEXT_ARRAY = 1_000
#: Draft orders rated in one call: each becomes a rating action that echoes the whole order.
MAX_DRAFT_ORDERS = 100
#: A feedback entry is 4 levels deep inside its body.
MAX_FEEDBACK_DEPTH = 12
#: Entries per feedback call (feedback.schema.json says the same, but the schema check is too
#: costly to reach with more) and any other array in a feedback body.
MAX_FEEDBACK_ENTRIES = 500
MAX_FEEDBACK_ARRAY = 100


def check_hook_body(body: dict) -> None:
    """Raise ``PayloadTooLarge`` (too many draft orders) or ``InvalidRequest`` (too deep or too long)."""
    context = body.get("context")
    if isinstance(context, dict):
        bundle = context.get("draftOrders")
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        if isinstance(entries, list) and len(entries) > MAX_DRAFT_ORDERS:
            raise PayloadTooLarge(f"context.draftOrders holds {len(entries)} entries; "
                                  f"at most {MAX_DRAFT_ORDERS} orders per call")
    for name, value in body.items():
        max_items = MAX_CONTEXT_ARRAY if name == "context" else None
        problem = first_excess(value, name, max_depth=MAX_HOOK_DEPTH - 1, max_items=max_items)
        if problem:
            raise InvalidRequest("request too deeply nested or too large", details=[problem])


def check_feedback_body(body: Any) -> None:
    """Raise ``InvalidRequest`` for a feedback body too deep or with too many entries."""
    if not isinstance(body, dict):
        return  # the schema check says so, cheaply
    entries = body.get("feedback")
    if isinstance(entries, list) and len(entries) > MAX_FEEDBACK_ENTRIES:
        raise InvalidRequest("invalid CDS Hooks feedback",
                             details=[f"feedback: {len(entries)} entries; at most {MAX_FEEDBACK_ENTRIES} per call"])
    for name, value in body.items():
        max_items = MAX_FEEDBACK_ENTRIES if name == "feedback" else MAX_FEEDBACK_ARRAY
        problem = first_excess(value, name, max_depth=MAX_FEEDBACK_DEPTH - 1, max_items=max_items,
                               nested_items=MAX_FEEDBACK_ARRAY)
        if problem:
            raise InvalidRequest("invalid CDS Hooks feedback", details=[problem])


def first_excess(value: Any, where: str, *, max_depth: int, max_items: int | None,
                 nested_items: int | None = None) -> str | None:
    """The first place where ``value`` nests deeper than ``max_depth`` or holds a longer array.

    Iterative (an explicit stack), so any depth the decoder produced is measured safely.
    ``max_items`` bounds arrays at the top, ``nested_items`` (default: the same) the ones inside.
    Values that are neither dicts nor lists (strings, numbers, decoded FHIR structs) are leaves.
    """
    nested_items = max_items if nested_items is None else nested_items
    stack: list[tuple[Any, int, str]] = [(value, 0, where)]
    while stack:
        item, depth, path = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth >= max_depth:
            return f"{path}: nested more than {max_depth} levels deep"
        limit = max_items if depth == 0 else nested_items
        if isinstance(item, list) and limit is not None and len(item) > limit:
            return f"{path}: {len(item)} items; at most {limit}"
        stack.extend((child, depth + 1, f"{path}.{key}") for key, child in _children(item))
    return None


def _children(item: dict | list) -> Iterator[tuple[Any, Any]]:
    if isinstance(item, dict):
        return iter(item.items())
    return enumerate(item)
