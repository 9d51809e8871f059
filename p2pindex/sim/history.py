"""One history format for every workload, runner and checker (simulated or real processes).

A history is what a test run *observed*, in the Jepsen shape: every client operation is an
``invoke`` followed by ``ok`` (it happened), ``fail`` (it definitely did not happen) or
``info`` (unknown, e.g. a timeout), plus the fault events the runner injected, the liveness
changes each node reported about the others, and per-replica snapshots taken after the
faults healed. Checkers read nothing else, so a history saved by the in-process simulator
and one saved by the real-process harness are checked by the same code.

Value model, shared by all workloads (the checkers rely on it):

* every write introduces exactly one new *token* (``Op.value`` of an ``add`` or ``put``):
  a short ASCII word that is unique in the history;
* a stored value (one sibling) is ASCII words separated by spaces, its writer's token
  first: a ``put`` stores just its token, an ``add`` (set element by read-modify-write)
  stores its token followed by every token it read;
* a read records the raw sibling values it got, so garbage or phantom bytes stay visible;
* a write records in ``ctx`` the index of the ``ok`` read whose causal context it carried.

Serialisation is JSON lines, one record per line, bytes as hex. Op indexes are strictly
increasing but need not be dense, so a shortened history keeps the indexes of the original
and violations keep pointing at the same operations.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pindex.types import Liveness


class OpType(enum.Enum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    """The operation definitely had no effect (a ``DefiniteError``)."""
    INFO = "info"
    """The outcome is unknown (an ``IndeterminateError``): it may or may not have happened."""


class OpF(enum.Enum):
    """What a client operation did."""

    READ = "read"
    ADD = "add"
    """Set-add by read-modify-write: the stored value carries every token read plus one."""
    PUT = "put"
    """Plain write of one token; with a context it replaces what that context's read saw."""
    DELETE = "delete"
    FINAL = "final"
    """A read of the final phase, after heal and quiescence: what checkers compare against."""


WRITES = frozenset({OpF.ADD, OpF.PUT, OpF.DELETE})
READS = frozenset({OpF.READ, OpF.FINAL})


class EventKind(enum.Enum):
    """Fault events as the history records them (what happened, in the checkers' terms);
    ``p2pindex.sim.faults.FaultKind`` names the faults a schedule asks for. Membership
    changes are included because they move data.

    CRASH is ended by RESTART, PAUSE by RESUME, PARTITION by HEAL. Every other kind starts
    with an event of that kind and ends with an event of the same kind and ``ends=True``.
    """

    CRASH = "crash"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    PARTITION = "partition"
    """Drop every directed link in ``links`` (adds to partitions already in force)."""
    HEAL = "heal"
    """Restore the directed links in ``links``; with no links, end every network fault."""
    LOSS = "loss"
    """Drop each message with probability ``amount`` (on links touching ``nodes``, if any)."""
    DUPLICATE = "duplicate"
    REORDER = "reorder"
    DELAY = "delay"
    """Messages are delayed by ``amount`` seconds on average."""
    SLOW = "slow"
    CLOCK_SKEW = "clock_skew"
    CLOCK_JUMP = "clock_jump"
    DISK_FULL = "disk_full"
    DISK_ERROR = "disk_error"
    """Storage reports errors (e.g. a failing fsync)."""
    WIPE = "wipe"
    """The node's data is lost while its identity is kept (amnesia)."""
    JOIN = "join"
    LEAVE = "leave"
    REMOVE = "remove"


NETWORK_FAULTS = frozenset(
    {EventKind.PARTITION, EventKind.LOSS, EventKind.DUPLICATE, EventKind.REORDER, EventKind.DELAY}
)
"""What a HEAL without links ends."""


@dataclass(frozen=True, slots=True)
class Op:
    """One half of a client operation: its invocation or its completion."""

    index: int
    process: int
    """Client process; a process whose op ended in ``info`` is never reused (Jepsen)."""
    type: OpType
    f: OpF
    key: str
    value: bytes | tuple[bytes, ...] | None
    """Writes: the new token. Ok reads: the raw sibling values. Otherwise None."""
    time: float
    node: str | None = None
    """Name of the node the client talked to, when known."""
    consistency: str | None = None
    ctx: int | None = None
    """For writes: index of the ok read whose context was sent (None: a blind write)."""
    error: str | None = None
    """For fail and info: the error code (or exception name) that ended the op."""
    read_first: bool = False
    """For writes: a delete without a context or a put with ``overwrite``, which the node
    serves by reading the key first and writing with what it read; what that read saw is not
    in the history, so the checkers treat its past as unknown (see ``checkers``)."""


@dataclass(frozen=True, slots=True)
class FaultEvent:
    time: float
    kind: EventKind
    nodes: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    """Directed (source, destination) pairs cut by a PARTITION."""
    amount: float = 0.0
    """Probability for LOSS, DUPLICATE, REORDER; seconds for DELAY, SLOW and clock faults."""
    detail: str = ""
    ends: bool = False
    """This event ends a fault of the same kind started earlier on the same nodes."""


@dataclass(frozen=True, slots=True)
class Observation:
    """A liveness change node ``observer`` reported about ``subject``.

    Runners record a change (including the first time an observer learns a subject), not
    every poll; the membership checker treats the view as constant between changes.
    """

    time: float
    observer: str
    subject: str
    liveness: Liveness
    accuser: str | None = None
    """For suspect and dead: the node whose verdict the observer holds (itself, or one it
    heard by gossip)."""


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """What one replica holds for one key, sampled after the last fault (convergence).

    Replicas of a key are converged in a sampling ``round`` when every sample of that round
    has the same ``clock`` and the same ``values`` (order ignored). A replica that holds
    nothing for the key is sampled with empty values and clock, never left out.
    """

    time: float
    round: int
    node: str
    key: str
    values: tuple[bytes, ...]
    clock: bytes


@dataclass(frozen=True, slots=True)
class CopyLoss:
    """A crash destroyed this node's durable copy of some tokens of one key.

    Only copies that had been committed count (a write still in flight was never
    acknowledged by this node), so a loss here is one a correct node may suffer: its disk
    was wiped, or it ran without fsync and lost power. ``gone`` are the tokens of
    ``tokens`` that no disk held any more afterwards (records and hints). The lost-writes
    and resurrection checkers excuse an acknowledged write only when its token is gone and
    at least as many nodes lost a copy as the write's consistency had acknowledge it.
    """

    time: float
    node: str
    key: str
    tokens: tuple[bytes, ...]
    gone: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RunMeta:
    """Everything needed to rerun: the seed and every option (not just the seed)."""

    seed: int | None
    options: Mapping[str, Any] = field(default_factory=dict)


Record = Op | FaultEvent | Observation | ReplicaState | CopyLoss


class History:
    """An append-only record of a run; iterate it for every record in append order."""

    __slots__ = (
        "_faults",
        "_keys",
        "_losses",
        "_observations",
        "_ops",
        "_records",
        "_replicas",
        "meta",
    )

    def __init__(self, meta: RunMeta | None = None, records: Iterable[Record] = ()) -> None:
        self.meta = meta
        self._records: list[Record] = []
        self._ops: list[Op] = []
        self._keys: dict[str, None] = {}
        """Every key an op touched, in first-use order (samplers ask for it every second)."""
        self._faults: list[FaultEvent] = []
        self._observations: list[Observation] = []
        self._replicas: list[ReplicaState] = []
        self._losses: list[CopyLoss] = []
        for record in records:
            self.append(record)

    def append(self, record: Record) -> Record:
        """Add one record; op indexes must increase so references stay unambiguous."""
        if isinstance(record, Op):
            if self._ops and record.index <= self._ops[-1].index:
                raise ValueError(
                    f"op index {record.index} does not follow the last index {self._ops[-1].index}"
                )
            if record.index < 0:
                raise ValueError(f"op index {record.index} is negative")
            self._ops.append(record)
            self._keys[record.key] = None
        elif isinstance(record, FaultEvent):
            self._faults.append(record)
        elif isinstance(record, Observation):
            self._observations.append(record)
        elif isinstance(record, ReplicaState):
            self._replicas.append(record)
        elif isinstance(record, CopyLoss):
            self._losses.append(record)
        else:
            raise TypeError(f"not a history record: {record!r}")
        self._records.append(record)
        return record

    def invoke(
        self,
        process: int,
        f: OpF,
        key: str,
        value: bytes | None = None,
        *,
        time: float,
        node: str | None = None,
        consistency: str | None = None,
        ctx: int | None = None,
        read_first: bool = False,
    ) -> Op:
        """Append the invocation of an op under the next free index."""
        if read_first and (f not in (OpF.PUT, OpF.DELETE) or ctx is not None):
            raise ValueError("only a put or delete without a context reads first")
        op = Op(
            self.next_index,
            process,
            OpType.INVOKE,
            f,
            key,
            value,
            time,
            node,
            consistency,
            ctx,
            read_first=read_first,
        )
        self.append(op)
        return op

    def complete(
        self,
        invocation: Op,
        type: OpType,
        *,
        time: float,
        value: bytes | tuple[bytes, ...] | None = None,
        error: str | None = None,
    ) -> Op:
        """Append the completion of ``invocation``; writes keep their token as value."""
        if type is OpType.INVOKE:
            raise ValueError("a completion must be ok, fail or info")
        if invocation.f in WRITES:
            value = invocation.value
        op = Op(
            self.next_index,
            invocation.process,
            type,
            invocation.f,
            invocation.key,
            value,
            time,
            invocation.node,
            invocation.consistency,
            invocation.ctx,
            error,
            invocation.read_first,
        )
        self.append(op)
        return op

    @property
    def next_index(self) -> int:
        return self._ops[-1].index + 1 if self._ops else 0

    @property
    def ops(self) -> list[Op]:
        return self._ops

    @property
    def faults(self) -> list[FaultEvent]:
        return self._faults

    @property
    def observations(self) -> list[Observation]:
        return self._observations

    @property
    def replicas(self) -> list[ReplicaState]:
        return self._replicas

    @property
    def losses(self) -> list[CopyLoss]:
        return self._losses

    def keys(self) -> list[str]:
        """Every key an op touched, in first-use order."""
        return list(self._keys)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    # --- serialisation ---------------------------------------------------------------------

    def to_lines(self) -> Iterator[str]:
        if self.meta is not None:
            yield json.dumps(
                {"kind": "meta", "seed": self.meta.seed, "options": dict(self.meta.options)},
                sort_keys=True,
            )
        for record in self._records:
            yield json.dumps(_encode(record), separators=(",", ":"))

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> History:
        numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        try:
            documents = json.loads("[" + ",".join(line for _, line in numbered) + "]")
        except ValueError:
            documents = None
        history = cls()
        for position, (number, line) in enumerate(numbered):
            try:
                document = json.loads(line) if documents is None else documents[position]
                if document.get("kind") == "meta":
                    history.meta = RunMeta(document["seed"], document["options"])
                else:
                    history.append(_decode(document))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"history line {number} is not a valid record: {exc}") from exc
        return history

    def save(self, path: str | Path) -> None:
        with Path(path).open("w", encoding="utf-8") as out:
            for line in self.to_lines():
                out.write(line)
                out.write("\n")

    @classmethod
    def load(cls, path: str | Path) -> History:
        with Path(path).open(encoding="utf-8") as source:
            return cls.from_lines(source)


def _encode(record: Record) -> dict[str, Any]:
    if isinstance(record, Op):
        document: dict[str, Any] = {
            "kind": "op",
            "index": record.index,
            "process": record.process,
            "type": record.type.value,
            "f": record.f.value,
            "key": record.key,
            "time": record.time,
        }
        if isinstance(record.value, bytes):
            document["value"] = record.value.hex()
        elif record.value is not None:
            document["value"] = [v.hex() for v in record.value]
        for name in ("node", "consistency", "ctx", "error"):
            attribute = getattr(record, name)
            if attribute is not None:
                document[name] = attribute
        if record.read_first:
            document["read_first"] = True
        return document
    if isinstance(record, FaultEvent):
        return {
            "kind": "fault",
            "time": record.time,
            "fault": record.kind.value,
            "nodes": list(record.nodes),
            "links": [list(link) for link in record.links],
            "amount": record.amount,
            "detail": record.detail,
            "ends": record.ends,
        }
    if isinstance(record, Observation):
        return {
            "kind": "obs",
            "time": record.time,
            "observer": record.observer,
            "subject": record.subject,
            "liveness": record.liveness.value,
            **({"accuser": record.accuser} if record.accuser is not None else {}),
        }
    if isinstance(record, CopyLoss):
        return {
            "kind": "loss",
            "time": record.time,
            "node": record.node,
            "key": record.key,
            "tokens": [t.hex() for t in record.tokens],
            "gone": [t.hex() for t in record.gone],
        }
    return {
        "kind": "replica",
        "time": record.time,
        "round": record.round,
        "node": record.node,
        "key": record.key,
        "values": [v.hex() for v in record.values],
        "clock": record.clock.hex(),
    }


_OP_TYPES = {t.value: t for t in OpType}
_OP_FS = {f.value: f for f in OpF}
"""Lookups instead of Enum calls: loading spends a third of its time there otherwise."""


def _decode(document: dict[str, Any]) -> Record:
    kind = document["kind"]
    if kind == "op":
        raw = document.get("value")
        value: bytes | tuple[bytes, ...] | None
        if raw is None:
            value = None
        elif isinstance(raw, str):
            value = bytes.fromhex(raw)
        else:
            value = tuple(bytes.fromhex(v) for v in raw)
        return Op(
            int(document["index"]),
            int(document["process"]),
            _OP_TYPES[document["type"]],
            _OP_FS[document["f"]],
            str(document["key"]),
            value,
            float(document["time"]),
            document.get("node"),
            document.get("consistency"),
            document.get("ctx"),
            document.get("error"),
            document.get("read_first") is True,
        )
    if kind == "fault":
        return FaultEvent(
            float(document["time"]),
            EventKind(document["fault"]),
            tuple(document["nodes"]),
            tuple((str(a), str(b)) for a, b in document["links"]),
            float(document["amount"]),
            str(document["detail"]),
            bool(document.get("ends", False)),
        )
    if kind == "obs":
        return Observation(
            float(document["time"]),
            str(document["observer"]),
            str(document["subject"]),
            Liveness(document["liveness"]),
            None if document.get("accuser") is None else str(document["accuser"]),
        )
    if kind == "replica":
        return ReplicaState(
            float(document["time"]),
            int(document["round"]),
            str(document["node"]),
            str(document["key"]),
            tuple(bytes.fromhex(v) for v in document["values"]),
            bytes.fromhex(document["clock"]),
        )
    if kind == "loss":
        return CopyLoss(
            float(document["time"]),
            str(document["node"]),
            str(document["key"]),
            tuple(bytes.fromhex(t) for t in document["tokens"]),
            tuple(bytes.fromhex(t) for t in document["gone"]),
        )
    raise ValueError(f"unknown record kind {kind!r}")


def shorten(history: History, keys: Iterable[str], nodes: Iterable[str] = ()) -> History:
    """The smallest slice that still shows a violation and lets a runner replay it.

    Keeps the ops and replica samples of ``keys`` (with their original indexes, so every
    ``ctx`` reference still resolves), every fault event (the schedule to replay), and the
    liveness observations made by or about ``nodes``.
    """
    wanted_keys = set(keys)
    wanted_nodes = set(nodes)
    short = History(history.meta)
    for record in history:
        if isinstance(record, Op | ReplicaState | CopyLoss):
            keep = record.key in wanted_keys
        elif isinstance(record, Observation):
            keep = record.observer in wanted_nodes or record.subject in wanted_nodes
        else:
            keep = True
        if keep:
            short.append(record)
    return short


def describe_value(value: bytes | tuple[bytes, ...] | None) -> str:
    """A human-readable rendering: tokens are ASCII, anything else shows as escapes."""
    if value is None:
        return "-"
    if isinstance(value, bytes):
        return _show(value)
    return "[" + ", ".join(_show(v) for v in value) + "]"


def _show(raw: bytes) -> str:
    text = raw.decode("ascii", "backslashreplace")
    return "{" + text + "}" if text.isprintable() else repr(raw)


def format_history(history: History) -> str:
    """One line per record, for failure reports (the JSON lines are for machines)."""
    lines = []
    for record in history:
        if isinstance(record, Op):
            extra = [
                f"{name}={getattr(record, name)}"
                for name in ("node", "consistency", "ctx", "error")
                if getattr(record, name) is not None
            ] + (["read_first"] if record.read_first else [])
            lines.append(
                f"{record.time:10.3f} #{record.index:<6} p{record.process:<4} "
                f"{record.type.value:6} {record.f.value:6} {record.key} "
                f"{describe_value(record.value)} {' '.join(extra)}".rstrip()
            )
        elif isinstance(record, FaultEvent):
            name = record.kind.value.upper() + (" END" if record.ends else "")
            parts = [name, ",".join(record.nodes)]
            if record.links:
                parts.append(" ".join(f"{a}->{b}" for a, b in record.links))
            if record.amount:
                parts.append(f"amount={record.amount:g}")
            if record.detail:
                parts.append(record.detail)
            lines.append(f"{record.time:10.3f} FAULT   " + " ".join(p for p in parts if p))
        elif isinstance(record, Observation):
            lines.append(
                f"{record.time:10.3f} VIEW    {record.observer} sees {record.subject} "
                f"{record.liveness.value}"
            )
        elif isinstance(record, CopyLoss):
            gone = " ".join(t.decode("ascii", "backslashreplace") for t in record.gone)
            lines.append(
                f"{record.time:10.3f} LOSS    {record.node} {record.key} lost "
                f"{describe_value(record.tokens)} gone everywhere: {{{gone}}}"
            )
        else:
            lines.append(
                f"{record.time:10.3f} REPLICA round {record.round} {record.node} {record.key} "
                f"{describe_value(record.values)} clock={record.clock.hex()}"
            )
    return "\n".join(lines)
