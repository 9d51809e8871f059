"""The index checker: every completed query against the model of acknowledged writes.

For a query that ran from ``t0`` to ``t1`` over terms ``lo..hi`` and a key ``k``, let W be
the acknowledged write of ``k`` that completed last before ``t0``. The key is *settled* for
the query when no other write of ``k`` that may have taken effect (acknowledged, or of
unknown outcome) began after W began and before ``t1``. Then:

* **must be there**: W is a put with a term in ``lo..hi``. W's dot can only be superseded
  by a write that began after it, so W's sibling stands on every replica that has it. A
  quorum query must return (term, k) when W was acknowledged by a strict QUORUM or ALL; a
  ``one`` query when W was acknowledged by ALL and the ring has not changed (every primary
  holds it). Excused only when the query said it was incomplete: a page claimed complete
  that omits such a key is exactly the silently partial answer this checker exists for.
* **must not be there**: additionally W carried the context of a quorum read that began
  after every earlier write of ``k`` had completed, and every earlier write is known (none
  of unknown outcome): W superseded them all, so W is the only version. A quorum query must
  not return ``k`` under any term but W's (none after a delete); a ``one`` query neither
  when W was acknowledged by ALL. Both only when neither W nor any earlier write of ``k``
  raced a membership change (below): a change while a write was under way may have left
  its copies off the quorum W's read asked, and such a version stays a sibling,
  legitimately, until repair.

Neither rule applies to a write that raced a membership change: a join, leave or removal
from ``RING_SETTLE`` before W began to ``RING_SETTLE`` after it ended. Coordinators that had
not heard of the change yet sent W to the old replicas, and the range may have been copied
before W reached them. A change long before or after W is checked in full:

* a joiner takes each range from the node it displaces, so a quorum of the new replicas
  still meets every quorum of the old ones;
* a leaving node pushes its ranges, stops taking writes and pushes again what it took
  meanwhile, before it leaves;
* after a removal, each node that gained arcs pulls them from every remaining old replica
  and serves no reads of them until then (index seed 2 found the gap this closes: a removed
  node had held one of a quorum's two copies).

The strict QUORUM reads the writes take their contexts from are held to the same two rules
as a quorum query over every term of their one key, by value: the read must return W's
value when W was acknowledged at QUORUM or ALL (the first rule), and nothing else when W
replaced every earlier version on a steady ring (the second; for a delete, nothing at all).
R + W > N on the key's own replicas promises exactly this, and the README says so.

Queries asked after heal and quiescence (``final``) hold every replica to the model: any
acknowledged level counts, for keys with no write of unknown outcome.

No rule applies to W once as many nodes as W had acknowledgements (1 at ``one``, N/2+1 at
``quorum``, N at ``all``) were removed or had their disks wiped after W began: every copy of
W may have been on them, and then W is gone by design (index seed 22: a delete at quorum
stored on two nodes that were both removed within three seconds).
"""

from __future__ import annotations

from collections.abc import Collection

from p2pindex.sim.checkers import Violation
from p2pindex.sim.history import EventKind, History
from p2pindex.sim.index_workload import (
    IndexHistory,
    IndexQuery,
    IndexRead,
    IndexWorkload,
    IndexWrite,
)

CHECKER = "index"
_TAKES_EFFECT = ("ok", "unknown", "pending")


RING_SETTLE = 10.0
"""Seconds a membership change takes to reach every node's ring (gossip), as a margin."""


def check_index(history: IndexHistory) -> list[Violation]:
    by_key: dict[bytes, list[tuple[int, IndexWrite]]] = {}
    for number, write in enumerate(history.writes):
        by_key.setdefault(write.key, []).append((number, write))
    violations: list[Violation] = []
    for number, query in enumerate(history.queries):
        if query.outcome != "ok" or query.complete is None:
            continue
        steady = not any(t <= query.complete for t in history.membership_changes)
        returned = set(query.rows)
        for key, writes in by_key.items():
            violations += _check_key(number, query, key, writes, returned, steady, history)
    for number, read in enumerate(history.reads):
        steady = not any(t <= read.complete for t in history.membership_changes)
        violations += _check_read(number, read, by_key.get(read.key, []), steady, history)
    return violations


def _raced(write: IndexWrite, history: IndexHistory) -> bool:
    """Whether ``write`` raced a membership change (module doc)."""
    assert write.complete is not None
    since = write.invoke - RING_SETTLE
    until = write.complete + RING_SETTLE
    return any(since < t <= until for t in history.membership_changes)


def _acknowledgements(level: str, replicas: int) -> int:
    return {"one": 1, "quorum": replicas // 2 + 1}.get(level, replicas)


def _check_key(
    number: int,
    query: IndexQuery,
    key: bytes,
    writes: list[tuple[int, IndexWrite]],
    returned: set[tuple[int, bytes]],
    steady: bool,
    history: IndexHistory,
) -> list[Violation]:
    assert query.complete is not None
    settled = _settled_last(writes, query.invoke, query.complete, query.final, history)
    if settled is None:
        return []
    index, last = settled
    covers = _level_covers(query, last, steady) and (query.final or not _raced(last, history))
    text = key.decode()
    found: list[Violation] = []
    in_range = last.term is not None and query.lo <= last.term <= query.hi
    if covers and in_range and query.claimed_complete and (last.term, key) not in returned:
        found.append(
            Violation(
                CHECKER,
                f"{query.level} query #{number} over {query.lo}..{query.hi} claimed complete "
                f"but omitted {text} (term {last.term}), acknowledged at {last.level} by write "
                f"#{index} before the query began and not written since",
                keys=(text,),
                op_indexes=(index,),
            )
        )
    held = steady or query.final or _placed_on_one_ring(index, last, writes, history)
    if covers and held and _supersedes_all(index, last, writes):
        wrong = sorted(t for t, k in returned if k == key and t != last.term)
        if wrong:
            what = "a delete" if last.term is None else f"term {last.term}"
            found.append(
                Violation(
                    CHECKER,
                    f"{query.level} query #{number} returned {text} under term(s) {wrong}, but "
                    f"its acknowledged current version (write #{index}, {what} at "
                    f"{last.level}) replaced every earlier version",
                    keys=(text,),
                    op_indexes=(index,),
                )
            )
    return found


def _settled_last(
    writes: list[tuple[int, IndexWrite]],
    invoke: float,
    complete: float,
    final: bool,
    history: IndexHistory,
) -> tuple[int, IndexWrite] | None:
    """W, the acknowledged write of a key that completed last before ``invoke`` (with its
    number), when an answer given from ``invoke`` to ``complete`` is held to it: no write
    that may take effect began after W did and before ``complete``, and W's copies were
    not all on nodes removed or wiped since (module doc)."""
    done = [
        (i, w)
        for i, w in writes
        if w.outcome == "ok" and w.complete is not None and w.complete < invoke
    ]
    if not done:
        return None
    index, last = max(done, key=lambda item: item[1].complete or 0.0)
    for i, other in writes:
        if i != index and other.outcome in _TAKES_EFFECT and last.invoke < other.invoke < complete:
            return None  # a later write may or may not be in the answer
    if final and any(w.outcome != "ok" and w.outcome != "fail" for _, w in writes):
        return None
    destroyed = sum(1 for t in history.copy_losses if last.invoke < t <= complete)
    if destroyed >= _acknowledgements(last.level, history.replicas):
        return None  # every copy of W may have been on the nodes removed or wiped since
    return index, last


def _check_read(
    number: int,
    read: IndexRead,
    writes: list[tuple[int, IndexWrite]],
    steady: bool,
    history: IndexHistory,
) -> list[Violation]:
    """A strict QUORUM read of one key against W (module doc)."""
    settled = _settled_last(writes, read.invoke, read.complete, False, history)
    if settled is None:
        return []
    index, last = settled
    if last.level not in ("quorum", "all") or _raced(last, history):
        return []
    text = read.key.decode()
    shown = sorted(v.decode("ascii", "replace") for v in read.values)
    if last.value is not None and last.value not in read.values:
        return [
            Violation(
                CHECKER,
                f"strict quorum read #{number} of {text} returned {shown} without "
                f"{last.value.decode()}, acknowledged at {last.level} by write #{index} "
                "before the read began and not written since",
                keys=(text,),
                op_indexes=(index,),
            )
        ]
    expected = () if last.value is None else (last.value,)
    held = steady or _placed_on_one_ring(index, last, writes, history)
    if held and _supersedes_all(index, last, writes) and read.values != expected:
        what = "a delete" if last.value is None else last.value.decode()
        return [
            Violation(
                CHECKER,
                f"strict quorum read #{number} of {text} returned {shown}, but its "
                f"acknowledged current version (write #{index}, {what} at {last.level}) "
                "replaced every earlier version",
                keys=(text,),
                op_indexes=(index,),
            )
        ]
    return []


def _placed_on_one_ring(
    index: int, last: IndexWrite, writes: list[tuple[int, IndexWrite]], history: IndexHistory
) -> bool:
    """Whether neither W nor any earlier write of its key that took effect raced a
    membership change: each was placed whole on one ring, and a change long after a write
    moves its copies so that a quorum of the new replicas meets the quorum that has it."""
    return not any(
        i == index or (other.invoke <= last.invoke and other.outcome != "fail")
        for i, other in writes
        if other.complete is not None and _raced(other, history)
    )


def _level_covers(query: IndexQuery, write: IndexWrite, steady: bool) -> bool:
    if query.final:
        return True
    if query.level == "quorum":
        return write.level in ("quorum", "all")
    return write.level == "all" and steady


def _supersedes_all(index: int, last: IndexWrite, writes: list[tuple[int, IndexWrite]]) -> bool:
    if last.read_invoke is None:
        return False
    for i, other in writes:
        if i == index or other.invoke > last.invoke:
            continue
        if other.outcome == "fail":
            continue
        if other.outcome != "ok" or other.complete is None:
            return False
        if other.complete >= last.read_invoke:
            return False
    return True


def check_index_run(
    workload: IndexWorkload | None,
    history: History,
    churn: Collection[object],
    replicas: int,
) -> list[Violation]:
    """The index violations of a run (none when it had no index workload)."""
    if workload is None:
        return []
    index_history = workload.history
    index_history.membership_changes = [e.time for e in history.faults if e.kind in churn]
    index_history.copy_losses = [
        e.time for e in history.faults if e.kind in (EventKind.REMOVE, EventKind.WIPE)
    ]
    index_history.replicas = replicas
    return check_index(index_history)
