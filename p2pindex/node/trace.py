"""Following one request: the coordinator's steps, with the time each happened.

A caller that wants a trace (an HTTP request with ``X-P2P-Trace: 1``, a binary-protocol
request with ``trace`` set) opens one with
``tracing()`` around the request; the coordinator finds it through a context variable
(``current()``), so the seam costs an untraced request one context-variable lookup, and no
signature in the coordinator changes. Replica answers arrive in other tasks, so the
coordinator keeps the trace with the request and records each answer with ``replica``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import outcome

_CURRENT: ContextVar[RequestTrace | None] = ContextVar("p2pindex_trace", default=None)
MAX_STEPS = 256
"""A trace is bounded: a request that relays or retries a lot still fits in a header."""


_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """An id for a request that arrived without one (a per-process random prefix and a
    counter: unique, and cheaper than random bytes per request)."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


class RequestTrace:
    def __init__(self, request_id: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self.request_id = request_id
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self.steps: list[dict[str, Any]] = []

    def step(self, what: str, **fields: Any) -> None:
        if len(self.steps) >= MAX_STEPS:
            return
        now = self._clock()
        self.steps.append(
            {
                "at_ms": round((now - self._start) * 1000, 3),
                "took_ms": round((now - self._last) * 1000, 3),
                "step": what,
                **fields,
            }
        )
        self._last = now

    def replica(self, node: str, result: outcome.Outcome) -> None:
        """Record which replica answered how (the coordinator calls it as answers arrive,
        in whatever task delivers them)."""
        if isinstance(result, outcome.Error):
            self.step("replica_failed", node=node, error=str(result.error)[:200])
        else:
            assert isinstance(result, outcome.Value)  # outcome's only other (final) subclass
            self.step("replica_answered", node=node, reply=type(result.value).__name__)

    def doc(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "steps": self.steps}


def current() -> RequestTrace | None:
    return _CURRENT.get()


@contextlib.contextmanager
def tracing(trace: RequestTrace | None) -> Iterator[None]:
    token = _CURRENT.set(trace)
    try:
        yield
    finally:
        _CURRENT.reset(token)
