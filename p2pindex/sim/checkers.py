"""Checkers: what a run must never show, judged from its history alone.

Each checker takes a ``History`` (or an ``Analysis`` of one, to share the single pass that
pairs invocations with completions) and returns ``Violation`` records. All are linear in
the history, apart from the sibling check, which walks the causal past of a key only for
reads that returned two siblings or more.

Definitions (the value model is described in ``p2pindex.sim.history``):

* a token is *dropped* by a put or delete that did not definitely fail and whose context
  read saw it: such a write may legitimately replace it. A token is *dead* when the
  dropping write was acknowledged: it must never come back;
* a token is *must* when its write was acknowledged and nothing dropped it: it has to be
  in the final read after heal and quiescence (Riak's ``ec_eqc`` Must/May rule, which for
  set-add keys is Jepsen's set checker: every acknowledged element survives);
* an acknowledged write is *destroyed by faults* when crashes destroyed committed copies
  of its token on at least as many nodes as its consistency required acknowledgements,
  the last of them leaving no copy on any disk (``CopyLoss``), and no read begun after
  that showed it again: a write at ONE acknowledged by a node whose disk is then wiped
  before the write spread. Such a write is not *must*, and what it replaced may return;
* a sibling's *writer* is its first token; two siblings of one read must be concurrent:
  the writer of one must not have read (directly or through other writes) the other;
* a *read-first* write (a delete without a context, a put with ``overwrite``) is served by
  a read on the node that the history does not show, so its past is unknown: it *may*
  drop any token of its key written before it was acknowledged (no such token is *must*
  unless written after it, or unless the write definitely failed), or, with an unknown
  outcome, any token of its key at all (it may run long after its client gave up); it
  makes no token *dead* and no sibling stale. What stays checked: its own token as any
  put's, a definite failure that changed the key anyway, and every write that follows an
  acknowledged one.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from p2pindex.core.versions import decode_context
from p2pindex.sim.history import (
    NETWORK_FAULTS,
    CopyLoss,
    EventKind,
    FaultEvent,
    History,
    Op,
    OpF,
    OpType,
    describe_value,
    format_history,
    shorten,
)
from p2pindex.types import Liveness

SHOWN = 8
"""Tokens or ops quoted in one violation message; the op indexes list them all."""


@dataclass(frozen=True, slots=True)
class Violation:
    checker: str
    message: str
    keys: tuple[str, ...] = ()
    op_indexes: tuple[int, ...] = ()
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MembershipBounds:
    """The envelope inside which SWIM must never declare a healthy node dead.

    Outside it (longer pauses, heavier loss or delay, partitions) a death is excused,
    and for ``settle`` seconds after such a fault ends, while suspicions time out.
    """

    detect_within: float
    """Every up member declares a crashed node dead within this many seconds."""
    max_pause: float
    max_loss: float
    max_delay: float
    settle: float


@dataclass(frozen=True, slots=True)
class CheckConfig:
    convergence_bound: float | None = 30.0
    """Replicas must agree this many seconds after the last fault (None: not checked)."""
    membership: MembershipBounds | None = None
    """Bounds for the membership checker (None: not checked)."""


@dataclass(slots=True)
class Write:
    """A write paired with its outcome and what its context had seen."""

    invoke: Op
    token: bytes | None
    """None for a delete."""
    outcome: OpType
    """OK, FAIL or INFO (INFO also when the run ended before the op completed)."""
    observed: frozenset[bytes]
    """Every token in the values of the read whose context the write carried."""
    closed: bool
    """``observed`` is the write's whole causal past (so walks can stop here): true when
    each value read is exactly its writer's token plus that writer's closed past."""
    read_first: bool = False
    """The node read the key before writing (``Op.read_first``); ``observed`` is empty."""
    ended: int | None = None
    """Index of the op's completion, if it completed."""
    may_drop: frozenset[bytes] = frozenset()
    """For a read-first write: every token of its key written before it completed."""


@dataclass(slots=True)
class Read:
    op: Op
    """The ok completion."""
    siblings: tuple[tuple[bytes, ...], ...]
    """Tokens of each sibling value, writer first."""
    invoked: float = 0.0
    """When the read was invoked."""


@dataclass(slots=True)
class KeyRecord:
    writes: list[Write] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    final: Read | None = None


class Analysis:
    """One pass over the ops: pairs, tokens, per-key writes and reads."""

    __slots__ = ("_split", "by_key", "destroyed", "writes")

    def __init__(self, history: History) -> None:
        self.writes: dict[bytes, Write] = {}
        self.destroyed: set[bytes] = set()
        """Tokens of acknowledged writes destroyed by faults (see the module docstring)."""
        self.by_key: dict[str, KeyRecord] = defaultdict(KeyRecord)
        self._split: dict[bytes, tuple[bytes, ...]] = {}
        pending: dict[int, tuple[Op, Write | None]] = {}
        ok_reads: dict[int, Read] = {}
        invoke, ok, final = OpType.INVOKE, OpType.OK, OpF.FINAL
        for op in history.ops:
            if op.type is invoke:
                if op.process in pending:
                    raise ValueError(
                        f"op #{op.index}: process {op.process} invoked again before "
                        f"#{pending[op.process][0].index} completed"
                    )
                pending[op.process] = (op, self._begin_write(op, ok_reads))
                continue
            started = pending.pop(op.process, None)
            if started is None or started[0].f is not op.f or started[0].key != op.key:
                raise ValueError(f"op #{op.index} completes nothing process {op.process} invoked")
            write = started[1]
            if write is not None:
                write.outcome = op.type
                write.ended = op.index
            elif op.type is ok:
                read = Read(op, self._siblings(op), started[0].time)
                record = self.by_key[op.key]
                if op.f is final:
                    record.final = read
                else:
                    record.reads.append(read)
                ok_reads[op.index] = read
        self._bound_read_first()
        if history.losses:
            replicas = history.meta.options.get("replicas", 3) if history.meta else 3
            self.destroyed = self._destroyed(history.losses, int(replicas))

    def _bound_read_first(self) -> None:
        """Give each read-first write the tokens it may have read: those of its key whose
        writes were invoked before it was acknowledged. One of unknown outcome may still run
        after the client gave up, and read (and replace) whatever the key holds by then:
        supersede seed 26 had an overwrite wait 13 s in a paused node's socket and replace
        three writes acknowledged after its client had timed out."""
        for record in self.by_key.values():
            if not any(write.read_first for write in record.writes):
                continue
            for write in record.writes:
                if write.read_first:
                    end = math.inf
                    if write.outcome is OpType.OK and write.ended is not None:
                        end = write.ended
                    write.may_drop = frozenset(
                        other.token
                        for other in record.writes
                        if other.token is not None
                        and other is not write
                        and other.invoke.index < end
                    )

    def _destroyed(self, losses: list[CopyLoss], replicas: int) -> set[bytes]:
        copies: dict[bytes, set[str]] = defaultdict(set)
        gone_at: dict[bytes, float] = {}
        for loss in losses:
            for token in loss.tokens:
                copies[token].add(loss.node)
            for token in loss.gone:
                gone_at[token] = loss.time
        destroyed = set()
        for token, when in gone_at.items():
            write = self.writes.get(token)
            if write is None or write.outcome is not OpType.OK:
                continue
            if len(copies[token]) < _acknowledgements(write.invoke.consistency, replicas):
                continue
            record = self.by_key[write.invoke.key]
            later = [*record.reads, *([record.final] if record.final else [])]
            if any(
                read.invoked > when and any(token in sibling for sibling in read.siblings)
                for read in later
            ):
                continue
            destroyed.add(token)
        return destroyed

    def _siblings(self, op: Op) -> tuple[tuple[bytes, ...], ...]:
        cache = self._split
        result = []
        for value in op.value if isinstance(op.value, tuple) else ():
            tokens = cache.get(value)
            if tokens is None:
                tokens = cache[value] = tuple(value.split())
            result.append(tokens)
        return tuple(result)

    def _begin_write(self, op: Op, ok_reads: dict[int, Read]) -> Write | None:
        if op.f not in (OpF.ADD, OpF.PUT, OpF.DELETE):
            return None
        observed: frozenset[bytes] = frozenset()
        closed = not op.read_first
        if op.ctx is not None:
            read = ok_reads.get(op.ctx)
            if read is None or read.op.key != op.key:
                raise ValueError(
                    f"write #{op.index} carries the context of #{op.ctx}, "
                    f"which is not an ok read of {op.key!r}"
                )
            observed = frozenset().union(*read.siblings)
            closed = all(self._is_closed_value(sibling) for sibling in read.siblings)
        token = op.value if isinstance(op.value, bytes) else None
        write = Write(op, token, OpType.INFO, observed, closed, op.read_first)
        if op.f is not OpF.DELETE:
            if token is None or not token or token.split() != [token]:
                raise ValueError(f"write #{op.index} has no single-word token: {op.value!r}")
            if token in self.writes:
                raise ValueError(f"token {token!r} of #{op.index} was already written")
            self.writes[token] = write
        self.by_key[op.key].writes.append(write)
        return write

    def _is_closed_value(self, sibling: tuple[bytes, ...]) -> bool:
        writer = self.writes.get(sibling[0]) if sibling else None
        if writer is None or not writer.closed:
            return False
        past = writer.observed
        return len(sibling) == len(past) + 1 and past == frozenset(sibling[1:])

    def ok_reads(self) -> Iterable[tuple[str, Read]]:
        for key, record in self.by_key.items():
            for read in record.reads:
                yield key, read
            if record.final is not None:
                yield key, record.final


def _analysis(source: History | Analysis) -> Analysis:
    return source if isinstance(source, Analysis) else Analysis(source)


def _acknowledgements(consistency: str | None, replicas: int) -> int:
    """How many replicas acknowledged a write at ``consistency`` (as the node counts)."""
    if consistency is None or consistency == "one":
        return 1
    if consistency == "quorum":
        return replicas // 2 + 1
    if consistency == "all":
        return replicas
    try:
        return int(consistency)
    except ValueError:
        return replicas


def _dropping(
    record: KeyRecord, *, acknowledged_only: bool, destroyed: set[bytes] | None = None
) -> set[bytes]:
    dropped: set[bytes] = set()
    for write in record.writes:
        if write.invoke.f is OpF.ADD or write.outcome is OpType.FAIL:
            continue
        if acknowledged_only and write.outcome is not OpType.OK:
            continue
        if destroyed and write.token in destroyed:
            continue  # its replacement was destroyed with it
        # What a read-first write saw is unknown: it may have dropped what came before it
        # (so nothing earlier is must) but is not known to have (so nothing is dead).
        dropped |= write.observed if acknowledged_only else write.observed | write.may_drop
    return dropped


def _tokens(tokens: Iterable[bytes]) -> str:
    shown = sorted(tokens)
    text = " ".join(t.decode("ascii", "backslashreplace") for t in shown[:SHOWN])
    return text + (f" (+{len(shown) - SHOWN} more)" if len(shown) > SHOWN else "")


# --- C1: acknowledged writes survive --------------------------------------------------------


def check_lost_writes(source: History | Analysis) -> list[Violation]:
    """Every acknowledged, never-replaced token is in the final read of its key."""
    analysis = _analysis(source)
    violations = []
    for key, record in analysis.by_key.items():
        dropped = _dropping(record, acknowledged_only=False)
        must = [
            w
            for w in record.writes
            if w.outcome is OpType.OK
            and w.invoke.f is not OpF.DELETE
            and w.token not in dropped
            and w.token not in analysis.destroyed
        ]
        if not must:
            continue
        if record.final is None:
            violations.append(
                Violation(
                    "lost_writes",
                    f"{key}: no successful final read, so {len(must)} acknowledged write(s) "
                    "cannot be shown to survive",
                    (key,),
                    tuple(w.invoke.index for w in must[:SHOWN]),
                )
            )
            continue
        present = {token for sibling in record.final.siblings for token in sibling}
        lost = [w for w in must if w.token not in present]
        if lost:
            violations.append(
                Violation(
                    "lost_writes",
                    f"{key}: {len(lost)} acknowledged write(s) missing from the final read "
                    f"#{record.final.op.index}: {_tokens(w.token for w in lost if w.token)}",
                    (key,),
                    (*(w.invoke.index for w in lost), record.final.op.index),
                )
            )
    return violations


# --- C2: nothing read that was never written or definitely failed --------------------------


def check_unexpected_values(source: History | Analysis) -> list[Violation]:
    """Reads show only tokens written to that key, not definitely failed, not from later."""
    analysis = _analysis(source)
    found: dict[tuple[str, str], tuple[set[bytes], list[int]]] = {}
    verdicts: dict[tuple[str, tuple[bytes, ...]], tuple[list[tuple[str, bytes]], int]] = {}
    writes = analysis.writes
    for key, read in analysis.ok_reads():
        index = read.op.index
        for sibling in read.siblings:
            verdict = verdicts.get((key, sibling))
            if verdict is None:
                verdict = verdicts[(key, sibling)] = _judge(writes, key, sibling)
            problems, newest = verdict
            if newest > index:
                problems = problems + [
                    ("values written only after the read returned", token)
                    for token in sibling
                    if token in writes and writes[token].invoke.index > index
                ]
            for problem, token in problems:
                tokens, indexes = found.setdefault((key, problem), (set(), []))
                tokens.add(token)
                if len(indexes) < 4 * SHOWN and index not in indexes:
                    indexes.append(index)
    return [
        Violation(
            "unexpected_values",
            f"{key}: reads returned {problem}: {_tokens(tokens)}",
            (key,),
            tuple(indexes),
        )
        for (key, problem), (tokens, indexes) in found.items()
    ]


def _judge(
    writes: dict[bytes, Write], key: str, sibling: tuple[bytes, ...]
) -> tuple[list[tuple[str, bytes]], int]:
    """What is wrong with one sibling value whenever it is read, and its newest writer."""
    problems = []
    newest = -1
    if not sibling:
        problems.append(("an empty value that no write stores", b""))
    failed = OpType.FAIL
    for token in sibling:
        write = writes.get(token)
        if write is None:
            problems.append(("values never written", token))
            continue
        invocation = write.invoke
        if invocation.key != key:
            problems.append((f"values written to another key ({invocation.key})", token))
        elif write.outcome is failed:
            problems.append(("values whose write failed definitely", token))
        elif invocation.index > newest:
            newest = invocation.index
    return problems, newest


# --- C3: nothing replaced by an acknowledged delete or overwrite comes back -----------------


def check_resurrection(source: History | Analysis) -> list[Violation]:
    """No final sibling was written by a token an acknowledged delete or put replaced."""
    analysis = _analysis(source)
    violations = []
    for key, record in analysis.by_key.items():
        if record.final is None:
            continue
        dead = _dropping(record, acknowledged_only=True, destroyed=analysis.destroyed)
        back = [sibling[0] for sibling in record.final.siblings if sibling and sibling[0] in dead]
        if not back:
            continue
        killers = [
            w.invoke.index
            for w in record.writes
            if w.outcome is OpType.OK
            and w.invoke.f is not OpF.ADD
            and w.token not in analysis.destroyed
            and w.observed & set(back)
        ]
        violations.append(
            Violation(
                "resurrection",
                f"{key}: the final read #{record.final.op.index} holds value(s) that an "
                f"acknowledged delete or overwrite had replaced: {_tokens(back)}",
                (key,),
                (*killers, record.final.op.index),
            )
        )
    return violations


# --- C5: siblings are only truly concurrent writes -----------------------------------------


def check_siblings(source: History | Analysis) -> list[Violation]:
    """No read shows a sibling together with one whose writer had already read it.

    This is "siblings never exceed the concurrent writers" stated exactly: every sibling
    must be a write that no other visible sibling's writer knew about.
    """
    analysis = _analysis(source)
    writes = analysis.writes
    violations = []
    for key, read in analysis.ok_reads():
        if len(read.siblings) < 2:
            continue
        writers = [s[0] for s in read.siblings if s and s[0] in writes]
        stale: list[tuple[bytes, bytes]] = []
        if len(set(read.op.value or ())) < len(read.siblings):
            stale.append((b"duplicate", b"sibling"))
        for older in writers:
            for newer in writers:
                if older != newer and _in_past(writes, newer, older):
                    stale.append((older, newer))
        if stale:
            pairs = ", ".join(
                f"{a.decode('ascii', 'replace')} < {b.decode('ascii', 'replace')}"
                for a, b in stale[:SHOWN]
            )
            violations.append(
                Violation(
                    "siblings",
                    f"{key}: read #{read.op.index} returned {len(read.siblings)} siblings, "
                    f"some not concurrent (older < newer whose writer had read it): {pairs}",
                    (key,),
                    (read.op.index, *(writes[b].invoke.index for _, b in stale if b in writes)),
                )
            )
    return violations


def _in_past(writes: dict[bytes, Write], newer: bytes, older: bytes) -> bool:
    """Whether the writer of ``newer`` had read ``older``, directly or through other writes.

    Every write on such a path was invoked after ``older``'s write, which bounds the walk,
    and a write whose observed tokens are its whole past ends it.
    """
    floor = writes[older].invoke.index
    stack = [writes[newer]]
    seen = {newer}
    while stack:
        write = stack.pop()
        if older in write.observed:
            return True
        if write.closed:
            continue
        for token in write.observed:
            earlier = writes.get(token)
            if token not in seen and earlier is not None and earlier.invoke.index > floor:
                seen.add(token)
                stack.append(earlier)
    return False


# --- C4: replicas converge after heal --------------------------------------------------------


def describe_clock(raw: bytes) -> str:
    """A sampled clock as ``{actor:counter ...}`` with actors shortened to node and epoch.

    Every entry is shown: a truncated clock made strictly older replicas look like "same
    clock, different siblings".
    """
    if not raw:
        return "{}"
    try:
        clock = decode_context(raw)
    except ValueError:
        return raw.hex()
    entries = []
    for actor, counter in clock.items():
        node, _, epoch = actor.partition(".")
        entries.append(f"{node[:6]}.{epoch[:4]}:{counter}")
    return "{" + " ".join(entries) + "}"


def check_convergence(history: History, bound: float) -> list[Violation]:
    """Every key's replicas hold the same clock and values in a round sampled in time (or
    all read as deleted).

    Time is measured from the last fault event: the runner heals everything last.
    """
    if not history.replicas:
        return [Violation("convergence", "no replica samples were recorded after heal")]
    healed = max((f.time for f in history.faults), default=0.0)
    deadline = healed + bound
    rounds: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for sample in history.replicas:
        rounds[sample.key][sample.round].append(sample)
    violations = []
    for key, by_round in rounds.items():
        verdicts = []
        for number in sorted(by_round):
            samples = by_round[number]
            states = {(s.clock, tuple(sorted(s.values))) for s in samples}
            # Every replica reading as deleted (a tombstone, a reaped tombstone's marker, or
            # nothing) agrees: tombstones are reaped one replica at a time (node/reaper.py),
            # so their clocks legitimately differ on the way to nothing.
            deleted = all(not s.values for s in samples)
            verdicts.append((max(s.time for s in samples), len(states) == 1 or deleted, samples))
        if any(agreed and when <= deadline for when, agreed, _ in verdicts):
            continue
        late = next((when for when, agreed, _ in verdicts if agreed), None)
        when, _, samples = verdicts[-1]
        detail = "; ".join(
            f"{s.node}: {describe_value(tuple(sorted(s.values)))} clock={describe_clock(s.clock)}"
            for s in samples
        )
        if late is not None:
            message = f"{key}: replicas agreed only at {late:.3f}, after the bound {deadline:.3f}"
        else:
            message = f"{key}: replicas still differ at {when:.3f} (bound {deadline:.3f}): {detail}"
        violations.append(
            Violation("convergence", message, (key,), (), tuple(s.node for s in samples))
        )
    return violations


# --- C8: membership: true deaths detected, no false deaths -----------------------------------


Window = tuple[float, float]


class _FaultTimeline:
    """Per-node windows derived from the fault events."""

    def __init__(self, faults: list[FaultEvent], bounds: MembershipBounds) -> None:
        self.bounds = bounds
        self.down: dict[str, list[Window]] = defaultdict(list)
        self.paused: dict[str, list[Window]] = defaultdict(list)
        self.excused: dict[str, list[Window]] = defaultdict(list)
        """Deaths of or declared by the node are excused inside these windows."""
        self.everyone: list[Window] = []
        self._down_since: dict[str, float] = {}
        self._pause_since: dict[str, float] = {}
        self._links: set[tuple[str, str]] = set()
        self._cut_since: dict[str, float] = {}
        self._loud_since: dict[tuple[EventKind, tuple[str, ...]], float] = {}
        for event in sorted(faults, key=lambda e: e.time):
            self._apply(event)
        self._close_all(math.inf)

    def _apply(self, event: FaultEvent) -> None:
        if event.kind in (
            EventKind.PARTITION,
            EventKind.HEAL,
            EventKind.LOSS,
            EventKind.DELAY,
            EventKind.SLOW,
        ):
            self._apply_network(event)
        else:
            self._apply_process(event)

    def _apply_process(self, event: FaultEvent) -> None:
        t, kind, bounds = event.time, event.kind, self.bounds
        if kind in (EventKind.CRASH, EventKind.LEAVE, EventKind.REMOVE):
            for node in event.nodes:
                self._down_since.setdefault(node, t)
        elif kind in (EventKind.RESTART, EventKind.JOIN):
            for node in event.nodes:
                start = self._down_since.pop(node, None)
                if start is not None:
                    self.down[node].append((start, t))
                self.excused[node].append((t, t + bounds.settle))
        elif kind is EventKind.PAUSE:
            for node in event.nodes:
                self._pause_since.setdefault(node, t)
        elif kind is EventKind.RESUME:
            for node in event.nodes:
                start = self._pause_since.pop(node, None)
                if start is not None:
                    self._end_pause(node, start, t)

    def _apply_network(self, event: FaultEvent) -> None:
        t, kind, bounds = event.time, event.kind, self.bounds
        if kind is EventKind.PARTITION:
            self._links.update(event.links)
            self._recount_cuts(t)
        elif kind is EventKind.HEAL:
            if event.links:
                self._links.difference_update(event.links)
            else:
                self._links.clear()
                for loud in [k for k in self._loud_since if k[0] in NETWORK_FAULTS]:
                    self._end_loud(loud, t)
            self._recount_cuts(t)
        elif kind in (EventKind.LOSS, EventKind.DELAY, EventKind.SLOW):
            loud = (kind, tuple(sorted(event.nodes)))
            limit = bounds.max_loss if kind is EventKind.LOSS else bounds.max_delay
            if event.ends or event.amount <= limit:
                if loud in self._loud_since:
                    self._end_loud(loud, t)
            else:
                self._loud_since.setdefault(loud, t)

    def _end_pause(self, node: str, start: float, end: float) -> None:
        self.paused[node].append((start, end))
        if end - start > self.bounds.max_pause:
            self.excused[node].append((start, end + self.bounds.settle))

    def _recount_cuts(self, t: float) -> None:
        touched = {node for link in self._links for node in link}
        for node in touched - self._cut_since.keys():
            self._cut_since[node] = t
        for node in self._cut_since.keys() - touched:
            self.excused[node].append((self._cut_since.pop(node), t + self.bounds.settle))

    def _end_loud(self, loud: tuple[EventKind, tuple[str, ...]], t: float) -> None:
        window = (self._loud_since.pop(loud), t + self.bounds.settle)
        if loud[1]:
            for node in loud[1]:
                self.excused[node].append(window)
        else:
            self.everyone.append(window)

    def _close_all(self, t: float) -> None:
        for node, start in self._down_since.items():
            self.down[node].append((start, t))
        for node, start in self._pause_since.items():
            self._end_pause(node, start, t)
        self._links.clear()
        self._recount_cuts(t)
        for loud in list(self._loud_since):
            self._end_loud(loud, t)
        for node, windows in self.down.items():
            self.excused[node].extend((s, e + self.bounds.detect_within) for s, e in windows)

    @staticmethod
    def inside(windows: list[Window], t: float) -> bool:
        return any(start <= t <= end for start, end in windows)

    @staticmethod
    def overlaps(windows: list[Window], start: float, end: float) -> bool:
        return any(s <= end and start <= e for s, e in windows)


def check_membership(history: History, bounds: MembershipBounds) -> list[Violation]:
    """Crashed nodes are declared dead by every up member in time; healthy ones never are."""
    timeline = _FaultTimeline(history.faults, bounds)
    views: dict[tuple[str, str], list[tuple[float, Liveness]]] = defaultdict(list)
    for obs in history.observations:
        views[(obs.observer, obs.subject)].append((obs.time, obs.liveness))
    violations = []
    own_verdicts: dict[tuple[str, str], list[float]] = defaultdict(list)
    """(accuser, subject) -> when the accuser declared the subject dead on its own."""
    for obs in history.observations:
        if obs.liveness is Liveness.DEAD and obs.accuser in (None, obs.observer):
            own_verdicts[(obs.observer, obs.subject)].append(obs.time)

    def excused(observer: str, subject: str, t: float) -> bool:
        return (
            timeline.inside(timeline.excused[subject], t)
            or timeline.inside(timeline.excused[observer], t)
            or timeline.inside(timeline.everyone, t)
        )

    for obs in history.observations:
        if obs.liveness is not Liveness.DEAD:
            continue
        t = obs.time
        if excused(obs.observer, obs.subject, t):
            continue
        accuser = obs.accuser
        if accuser not in (None, obs.observer):
            # A verdict taken over by gossip is as sound as the accuser's own: one reached
            # while the accuser was cut off or paused spreads once it is back (SWIM accepts
            # a dead record from anyone; the subject refutes it when it hears).
            verdicts = [v for v in own_verdicts.get((accuser, obs.subject), []) if v <= t]
            if verdicts and excused(accuser, obs.subject, verdicts[-1]):
                continue
            # Views are polled, so an accuser's verdict refuted within one poll is never
            # seen (ci seed 8509: n7, back from an 11.9 s pause, declared n5 dead and heard
            # the refutation before the next poll, while n3 still held the record). Then
            # the accuser is judged when its record was held, which follows its verdict.
            if not verdicts and excused(accuser, obs.subject, t):
                continue
        violations.append(
            Violation(
                "membership",
                f"false death: {obs.observer} declared {obs.subject} dead at {t:.3f} although it "
                f"was up, paused at most {bounds.max_pause:g} s, not partitioned, and loss was "
                f"at most {bounds.max_loss:g}",
                nodes=(obs.observer, obs.subject),
            )
        )
    end_of_run = max((record.time for record in history), default=0.0)
    for event in history.faults:
        if event.kind is EventKind.CRASH:
            for subject in event.nodes:
                late = _late_observers(timeline, views, event.time, subject, bounds, end_of_run)
                if late:
                    violations.append(
                        Violation(
                            "membership",
                            f"undetected crash: {subject} crashed at {event.time:.3f} but "
                            f"{', '.join(late)} had not declared it dead within "
                            f"{bounds.detect_within:g} s",
                            nodes=(subject, *late),
                        )
                    )
    return violations


def _late_observers(
    timeline: _FaultTimeline,
    views: dict[tuple[str, str], list[tuple[float, Liveness]]],
    crashed: float,
    subject: str,
    bounds: MembershipBounds,
    end_of_run: float,
) -> list[str]:
    """Observers that knew ``subject``, stayed up and unpaused, and missed its death.

    Nothing is required when the run ended or the subject came back before the deadline.
    """
    deadline = crashed + bounds.detect_within
    if deadline > end_of_run:
        return []
    for start, end in timeline.down[subject]:
        if start <= crashed <= end and end <= deadline:
            return []
    late = []
    for (observer, about), changes in views.items():
        if about != subject or observer == subject:
            continue
        if timeline.overlaps(timeline.down[observer], crashed, deadline) or timeline.overlaps(
            timeline.paused[observer], crashed, deadline
        ):
            continue
        before = bisect.bisect_right([when for when, _ in changes], crashed)
        if before == 0 or changes[before - 1][1] in _GONE:
            continue
        if not any(liveness in _GONE for when, liveness in changes[before:] if when <= deadline):
            late.append(observer)
    return sorted(late)


_GONE = (Liveness.DEAD, Liveness.LEFT)


# --- running them all, reporting a failure ---------------------------------------------------


def check_all(history: History, config: CheckConfig | None = None) -> list[Violation]:
    """Every checker the configuration enables, sharing one analysis of the ops."""
    config = config or CheckConfig()
    analysis = Analysis(history)
    violations = [
        *check_lost_writes(analysis),
        *check_unexpected_values(analysis),
        *check_resurrection(analysis),
        *check_siblings(analysis),
    ]
    if config.convergence_bound is not None:
        violations.extend(check_convergence(history, config.convergence_bound))
    if config.membership is not None:
        violations.extend(check_membership(history, config.membership))
    return violations


def shorten_for(history: History, violations: list[Violation], max_keys: int = 3) -> History:
    """The shortened history that shows the first violations: their keys and nodes."""
    keys = list(dict.fromkeys(k for v in violations for k in v.keys))[:max_keys]
    nodes = {n for v in violations for n in v.nodes}
    return shorten(history, keys, nodes)


def failure_report(history: History, violations: list[Violation], max_keys: int = 3) -> str:
    """Seed, every option, the violations and the shortened history that replays them."""
    lines = [f"FAILED: {len(violations)} violation(s)"]
    if history.meta is not None:
        lines.append(f"seed: {history.meta.seed}")
        lines.append(
            "options: " + " ".join(f"{k}={v}" for k, v in sorted(history.meta.options.items()))
        )
    for violation in violations:
        lines.append(f"[{violation.checker}] {violation.message}")
        if violation.op_indexes:
            lines.append("    ops: " + " ".join(f"#{i}" for i in violation.op_indexes))
    short = shorten_for(history, violations, max_keys)
    lines.append(f"shortened history ({len(short.ops)} of {len(history.ops)} ops):")
    lines.append(format_history(short))
    return "\n".join(lines)
