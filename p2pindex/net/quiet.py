"""Whether any task is queued to run in the next scheduler pass.

A frame sent at once on TCP costs a system call of its own; one queued for the connection's
writer shares a send with whatever else gets queued before the writer runs, at the price of
a scheduler pass. While a node is busy, the tasks of each pass keep waking others (a reply
wakes its requester, a queued frame its writer), and those run next pass and queue more
frames: then the writer's wait pays for itself. When nothing is queued for the next pass,
nothing will join this frame, and the wait would only delay it.

trio keeps its run queue private (``GLOBAL_RUN_CONTEXT.runner.runq``, trio 0.35). Its public
``current_statistics()`` has the same count but builds a statistics object with I/O
figures on every call (about 4 us against 0.1 us), too much for every frame. If a trio
upgrade moves the queue, ``others_runnable`` answers True for ever (frames always go
through the writer, as before this existed) and a test fails loudly (tests/unit/test_quiet.py).
"""

from __future__ import annotations

from collections.abc import Sized

try:
    from trio._core import _run

    _CONTEXT: object = _run.GLOBAL_RUN_CONTEXT
except (ImportError, AttributeError):  # only with a trio that reorganised its internals
    _CONTEXT = None


def _run_queue() -> Sized | None:
    runner = getattr(_CONTEXT, "runner", None)
    queue = getattr(runner, "runq", None)
    return queue if isinstance(queue, Sized) else None


def available() -> bool:
    """Whether this trio exposes the run queue (asked inside a trio run)."""
    return _run_queue() is not None


def others_runnable() -> bool:
    """True when another task is waiting to run (or when trio's queue cannot be read)."""
    try:
        return bool(_CONTEXT.runner.runq)  # type: ignore[attr-defined]
    except AttributeError:
        return True
