"""What a client call returns: values with their causal context, never bare bytes.

Dynamo-style stores can hold several concurrent values (siblings) for one key. Returning
them all, with the context that covers them, lets the application merge them and write
the merge back with that context, which replaces every sibling it saw.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from p2pindex.errors import DefiniteError, InvalidRequest, P2PIndexError, ProtocolError

T = TypeVar("T")


class SiblingConflict(P2PIndexError):
    """The caller asked for the single value of a key that holds concurrent siblings."""

    code = "sibling_conflict"

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            f"the key has {count} concurrent values (siblings); read them from .values, "
            "merge them, and put the result with this result's .context to resolve them"
        )


@dataclass(frozen=True, slots=True)
class Context:
    """An opaque causal context: pass it back with the next put or delete of the same key.

    Its text form (URL-safe base64 without padding) is what the command line prints and
    accepts, so a context can travel through a shell or a JSON document unchanged.
    """

    data: bytes = b""

    def __str__(self) -> str:
        return base64.urlsafe_b64encode(self.data).rstrip(b"=").decode("ascii")

    def __bool__(self) -> bool:
        return bool(self.data)

    @classmethod
    def from_str(cls, text: str) -> Context:
        """Parse the text form; raises InvalidRequest (a ValueError) naming the problem."""
        stripped = text.strip()
        if not stripped:
            return cls(b"")
        if not all(c.isalnum() or c in "-_" for c in stripped):
            raise InvalidRequest(f"bad context {text!r}: expected URL-safe base64 text")
        try:
            data = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"bad context {text!r}: not valid base64") from None
        return cls(data)


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One step of the coordinator: what happened (``step``), when (ms after the request
    reached the coordinator), how long since the previous step, and its details (``node``,
    ``nodes``, ``outcome``, ``read_repair_to``, ...), as the node recorded them."""

    step: str
    at_ms: float
    took_ms: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_document(self) -> dict[str, Any]:
        return {"step": self.step, "at_ms": self.at_ms, "took_ms": self.took_ms, **self.details}


@dataclass(frozen=True, slots=True)
class Trace:
    """The coordinator's steps for one request (asked with ``trace=True``)."""

    request_id: str
    steps: tuple[TraceStep, ...]

    def as_document(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "steps": [s.as_document() for s in self.steps]}

    @classmethod
    def from_document(cls, doc: object) -> Trace:
        """Check the node's document; raises ProtocolError naming what is wrong."""
        if not isinstance(doc, Mapping):
            raise ProtocolError("the node's trace is not a document")
        request_id = doc.get("request_id")
        raw_steps = doc.get("steps")
        if not isinstance(request_id, str) or not isinstance(raw_steps, list):
            raise ProtocolError("the node's trace lacks a request id or its steps")
        steps = []
        for number, raw in enumerate(raw_steps, 1):
            if not isinstance(raw, Mapping):
                raise ProtocolError(f"step {number} of the node's trace is not a document")
            step, at_ms, took_ms = (
                raw.get("step"),
                _time(raw.get("at_ms")),
                _time(raw.get("took_ms")),
            )
            if not isinstance(step, str) or at_ms is None or took_ms is None:
                raise ProtocolError(f"step {number} of the node's trace lacks its name or times")
            details = {k: v for k, v in raw.items() if k not in ("step", "at_ms", "took_ms")}
            steps.append(TraceStep(step, at_ms, took_ms, details))
        return cls(request_id, tuple(steps))


def _time(value: object) -> float | None:
    """A step's time in milliseconds, or None unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class PutResult:
    context: Context
    """Covers the value just written and every value the key held beside it on the node
    that coordinated the write (``siblings`` counts them): pass it to the next write of
    this key while ``siblings`` is 1. With more, read the key and write with the read's
    context, or that write replaces concurrent values this caller never saw."""
    warning: str | None = None
    """Set when the write succeeded but something needs attention (many siblings)."""
    siblings: int = 1
    """Live values the key holds after this write (on the node that coordinated it). More
    than one means concurrent values: read them, merge, and put the merge with the read's
    context, or put with ``overwrite=True`` to replace them all."""
    overwrote: bool = False
    """The put was an overwrite: the node read the key first and superseded what it read."""
    unseen_may_remain: bool = False
    """Only for an overwrite: replicas that did not answer its read may hold a version it
    did not replace, which would show up as a sibling (read at ``all`` to rule that out)."""
    trace: Trace | None = None
    """The coordinator's steps, when the call asked for them (``trace=True``)."""

    @property
    def has_siblings(self) -> bool:
        return self.siblings > 1


@dataclass(frozen=True, slots=True)
class DeleteResult:
    context: Context
    """Covers the tombstone; a put with it replaces the deleted key."""
    read_first: bool = False
    """The delete came without a context, so the node read the key first and the tombstone
    supersedes what it read."""
    unseen_may_remain: bool = False
    """Replicas that did not answer that read may hold a version the delete did not cover,
    which a later read would still return (delete at ``all`` to rule that out)."""
    trace: Trace | None = None
    """The coordinator's steps, when the call asked for them (``trace=True``)."""


@dataclass(frozen=True, slots=True)
class GetResult:
    values: list[bytes]
    """Every live concurrent value; empty when the key is missing or deleted."""
    context: Context
    """Covers every value returned (also for a deleted key): write it back to resolve."""
    trace: Trace | None = None
    """The coordinator's steps, when the call asked for them (``trace=True``)."""

    @property
    def found(self) -> bool:
        return bool(self.values)

    @property
    def value(self) -> bytes | None:
        """The value, or None for a missing key; raises SiblingConflict with siblings."""
        if not self.values:
            return None
        if len(self.values) > 1:
            raise SiblingConflict(len(self.values))
        return self.values[0]


# --- batches (put_many, get_many, delete_many) ----------------------------------------------

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class KeyOutcome(Generic[R]):
    """What one key of a batch came to: its ``result``, or the ``error`` it failed with.

    Each key fails on its own, so one failure never hides another's outcome. ``definite``
    says what the caller may conclude from a failure, as the single calls' errors do:
    True means nothing was done for this key (safe to retry), False that a write may or
    may not have been applied (read before retrying). A failed read (``read``, from
    ``get_many``) is always definite, however it failed: a read changes nothing, as the
    CLI's exit codes also say. A batch call gives each failed key
    an ``error`` of its own whose message names the key: when a whole frame failed, each
    of its keys gets a copy of the frame's error (same class and attributes, the frame's
    error as its ``__cause__``)."""

    key: bytes
    result: R | None = None
    error: P2PIndexError | None = None
    read: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def definite(self) -> bool:
        return self.error is None or self.read or isinstance(self.error, DefiniteError)

    def unwrap(self) -> R:
        """The result; raises this key's error if it failed."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[R]):
    """The outcome of every key of a batch call, in the order the keys were given."""

    outcomes: tuple[KeyOutcome[R], ...]

    def __len__(self) -> int:
        return len(self.outcomes)

    def __iter__(self) -> Iterator[KeyOutcome[R]]:
        return iter(self.outcomes)

    def __getitem__(self, position: int) -> KeyOutcome[R]:
        return self.outcomes[position]

    @property
    def ok(self) -> bool:
        """Whether every key succeeded."""
        return all(outcome.error is None for outcome in self.outcomes)

    @property
    def failed(self) -> tuple[KeyOutcome[R], ...]:
        return tuple(outcome for outcome in self.outcomes if outcome.error is not None)

    @property
    def results(self) -> dict[bytes, R]:
        """The result of every key that succeeded, by key."""
        return {o.key: o.result for o in self.outcomes if o.error is None and o.result is not None}


# --- cluster documents ----------------------------------------------------------------------

Document = Mapping[str, object]
"""A document as a node sent it (JSON-like: text, numbers, booleans, lists, maps)."""


def _field(doc: Document, name: str, kind: type[T], what: str) -> T:
    value = doc.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise ProtocolError(f"the node's {what} has no valid {name!r}")
    return value


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _optional_text(doc: Document, name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value else None


def _documents(doc: Document, name: str) -> list[Document]:
    value = doc.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ProtocolError(f"the node's {name} is not a list of documents")
    return [_string_keyed(item) for item in value]


def _string_keyed(value: Mapping[object, object]) -> Document:
    return {str(k): v for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the cluster as the answering node sees it (what ``members()`` returns)."""

    node_id: str
    address: str
    liveness: str
    """SWIM's view: alive, suspect, dead or left."""
    state: str
    """What the member says it is doing: active, syncing or degraded."""
    incarnation: int
    in_ring: bool
    """Whether keys are placed on it (a removed or departed member is not)."""
    tokens_of: str = ""
    """The id its ring tokens come from: its own id, or that of the member it replaced
    (`serve --replace`), whose ranges it holds."""

    @classmethod
    def from_document(cls, doc: Document) -> Member:
        return cls(*_member_fields(doc))


@dataclass(frozen=True, slots=True)
class RingView:
    """What ``ring_view()`` returns: the members as one node sees them, with the ring's
    settings (N and virtual nodes per member) that placement plans are computed from."""

    members: tuple[Member, ...]
    n_replicas: int
    vnodes: int


def _member_fields(doc: Document) -> tuple[str, str, str, str, int, bool, str]:
    node_id = _field(doc, "node_id", str, "member document")
    return (
        node_id,
        _field(doc, "address", str, "member document"),
        _field(doc, "liveness", str, "member document"),
        str(doc.get("state", "unknown")),
        _field(doc, "incarnation", int, "member document") if "incarnation" in doc else 0,
        bool(doc.get("in_ring", doc.get("liveness") != "left")),
        _field(doc, "tokens_of", str, "member document") if "tokens_of" in doc else node_id,
    )


@dataclass(frozen=True, slots=True)
class MemberStatus(Member):
    """A member in a status document, with its share of the ring."""

    ownership: float = 0.0
    """Share of the keyspace it holds a replica of (0..1)."""

    @classmethod
    def from_document(cls, doc: Document) -> MemberStatus:
        return cls(*_member_fields(doc), ownership=_number(doc.get("ownership")) or 0.0)


@dataclass(frozen=True, slots=True)
class HintBacklog:
    """Writes a node keeps for a member that could not take them yet (hinted handoff)."""

    target: str
    count: int
    bytes: int
    oldest: float | None

    @classmethod
    def from_document(cls, doc: Document) -> HintBacklog:
        return cls(
            target=_field(doc, "target", str, "hint document"),
            count=_field(doc, "count", int, "hint document"),
            bytes=_field(doc, "bytes", int, "hint document"),
            oldest=_number(doc.get("oldest")),
        )


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``status()`` returns: one node's view of the cluster and its own counters.

    The typed fields are those every node sends; ``document`` is the whole document as
    received (newer nodes may add fields), which is also what ``--format json`` prints.
    """

    node_id: str
    address: str
    cluster: str
    state: str
    state_reason: str | None
    n_replicas: int
    keys: int
    members: tuple[MemberStatus, ...]
    hints: tuple[HintBacklog, ...]
    statistics: Mapping[str, float]
    document: Document

    @property
    def leave_abandoned(self) -> str:
        """Why the node's last leave was abandoned (it serves on as a member); "" if not."""
        handoff = self.document.get("handoff")
        reason = handoff.get("abandoned") if isinstance(handoff, Mapping) else None
        return reason if isinstance(reason, str) else ""

    @classmethod
    def from_document(cls, doc: Document) -> NodeStatus:
        statistics = doc.get("statistics") or {}
        if not isinstance(statistics, Mapping):
            raise ProtocolError("the node's statistics are not a document")
        return cls(
            node_id=_field(doc, "node_id", str, "status"),
            address=_field(doc, "address", str, "status"),
            cluster=_field(doc, "cluster", str, "status"),
            state=_field(doc, "state", str, "status"),
            state_reason=_optional_text(doc, "state_reason"),
            n_replicas=_field(doc, "n_replicas", int, "status"),
            keys=_field(doc, "keys", int, "status"),
            members=tuple(MemberStatus.from_document(m) for m in _documents(doc, "members")),
            hints=tuple(HintBacklog.from_document(h) for h in _documents(doc, "hints")),
            statistics={
                str(name): number
                for name, value in statistics.items()
                if (number := _number(value)) is not None
            },
            document=doc,
        )


@dataclass(frozen=True, slots=True)
class Placement:
    """One node on a key's walk around the ring."""

    node_id: str
    role: str
    """primary, replica, or fallback (stands in when a replica is down)."""
    address: str
    liveness: str
    state: str
    usable: bool
    hints_held_here: int

    @classmethod
    def from_document(cls, doc: Document) -> Placement:
        return cls(
            node_id=_field(doc, "node_id", str, "placement"),
            role=_field(doc, "role", str, "placement"),
            address=str(doc.get("address", "")),
            liveness=str(doc.get("liveness", "unknown")),
            state=str(doc.get("state", "unknown")),
            usable=bool(doc.get("usable", False)),
            hints_held_here=_field(doc, "hints_held_here", int, "placement")
            if "hints_held_here" in doc
            else 0,
        )


@dataclass(frozen=True, slots=True)
class KeyPlacement:
    """What ``explain()`` returns: where a key lives, primary first, then fallbacks."""

    key: bytes
    n_replicas: int
    nodes: tuple[Placement, ...]
    document: Document

    @property
    def replicas(self) -> tuple[Placement, ...]:
        """The key's preference list (primary and replicas), without fallbacks."""
        return tuple(node for node in self.nodes if node.role != "fallback")

    @classmethod
    def from_document(cls, doc: Document) -> KeyPlacement:
        try:
            key = bytes.fromhex(_field(doc, "key", str, "placement"))
        except ValueError:
            raise ProtocolError("the node's placement has a key that is not hex") from None
        return cls(
            key=key,
            n_replicas=_field(doc, "n_replicas", int, "placement"),
            nodes=tuple(Placement.from_document(n) for n in _documents(doc, "nodes")),
            document=doc,
        )
