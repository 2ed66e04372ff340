"""Cyclic garbage collection between requests instead of during them (production server only).

CPython's collector runs whenever enough container objects have been allocated, so it fires in
the middle of a hook call: a 300-resource prefetch allocates enough for three or four young
collections, about a tenth of the time the EHR waits for its answer. Almost all of that garbage
is freed by reference counting anyway; the collector only has to look for cycles, and nothing
requires it to look while a clinician is waiting.

:func:`collect_between_requests` therefore raises the young-generation threshold so that
collections no longer trigger during ordinary requests, and wraps the WSGI app so that, once a
response has been written to the client, the generations that are due are collected with the
same cadence CPython itself would use. The raised threshold still bounds memory: a request that
allocates more than that many containers is collected during the request, as before.
"""

from __future__ import annotations

import gc
from typing import Any, Callable, Iterable

from werkzeug.wsgi import ClosingIterator

#: Young-generation threshold while collection is deferred: far above what one hook call
#: allocates (a few thousand containers for a 300-resource prefetch), yet a bound on memory.
DEFERRED_YOUNG_THRESHOLD = 100_000

WsgiApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]


def collect_between_requests(wsgi_app: WsgiApp) -> WsgiApp:
    """Raise the young threshold (process-wide) and return ``wsgi_app`` collecting after each response."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(DEFERRED_YOUNG_THRESHOLD, middle, old)

    def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        # The server calls close() after the last byte of the response has been sent.
        return ClosingIterator(wsgi_app(environ, start_response), collect_due_generations)

    return app


def collect_due_generations() -> int:
    """Collect the youngest generation, and older ones when they are due; returns the generation.

    The cadence is CPython's own: an older generation is collected once more than its threshold
    of younger collections has happened since its last one (``gc.collect(n)`` counts towards
    n + 1 and resets the younger counts). CPython additionally skips a full collection while
    few objects have survived into the old generation; that ratio is not visible from Python,
    so full collections here come at most that often, after the answer, as everything else.
    """
    _, middle_threshold, old_threshold = gc.get_threshold()
    _, middle, old = gc.get_count()
    if old > old_threshold:
        generation = 2
    elif middle > middle_threshold:
        generation = 1
    else:
        generation = 0
    gc.collect(generation)
    return generation
