"""Every message of the protocol, as frozen dataclasses.

Each class has a ``TYPE`` code that is part of the protocol: append new codes, never reuse
one. Field annotations are the schema: ``p2pindex.wire.codec`` validates every decoded field
against them (type and size) and against ``Limits`` for keys and values, so handlers receive
only well-formed messages. Records are encoded ``VersionedObject`` bytes and contexts are
encoded version vectors (both owned by ``p2pindex.core.versions``).

Consistency fields carry ``"one" | "quorum" | "all"`` or a positive integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

PROTOCOL_VERSION = 1

UNSET_OMITTED = frozenset({"trace", "datagram_sequence"})
"""Fields added to version 1 after it shipped, which travel only when set (not False, not
None). A frame that does not use one is byte for byte what a node without them sends and
accepts, so clients and nodes that never ask behave exactly as before; a node that predates
a field refuses a frame carrying it as an unexpected field (an ErrorReply: nothing done),
which is the client's clear answer that the node cannot do it. The codec enforces that
every such field defaults to False or None."""


@dataclass(frozen=True, slots=True)
class Message:
    TYPE: ClassVar[int] = 0


# --- client -> any node ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRequest:
    """What a put, get or delete of one key carries besides its own fields: how nodes pass
    it on. Keyword only, so each request's own fields keep their positions; a field's
    place in the class never shows on the wire (a frame holds fields by name). Not a
    message itself: it has no type code."""

    forwarded: bool = False
    """Set when a node relays a client request to a replica; a relayed request is never
    relayed again, so routing cannot loop."""
    trace: bool = False
    """Ask the coordinator for its steps (``p2pindex.node.trace``): the reply, or the
    ErrorReply of a failure, carries them in its ``trace``. Sent only when True."""


@dataclass(frozen=True, slots=True)
class PutRequest(Message, KeyRequest):
    TYPE: ClassVar[int] = 1
    key: bytes
    value: bytes
    context: bytes | None
    consistency: str | int
    timeout_ms: int
    strict: bool = False
    overwrite: bool = False
    """Replace what the cluster holds now: the coordinator reads the key first and writes
    with the context it read (``context`` must be None)."""
    index: bytes | None = None
    """The write's index terms, encoded by ``p2pindex.core.terms.encode`` (None: none)."""


@dataclass(frozen=True, slots=True)
class GetRequest(Message, KeyRequest):
    TYPE: ClassVar[int] = 2
    key: bytes
    consistency: str | int
    timeout_ms: int
    strict: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRequest(Message, KeyRequest):
    TYPE: ClassVar[int] = 3
    key: bytes
    context: bytes | None
    consistency: str | int
    timeout_ms: int
    strict: bool = False


@dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    TYPE: ClassVar[int] = 4
    leaving_only: bool = False
    """Ask only whether the node is leaving (a leaving node asks its peers, handoff's
    ``others_leaving``): the whole status carries timings and load figures that are not
    the simulator's to decide, and a reply that varies makes a seed run differently."""


@dataclass(frozen=True, slots=True)
class ExplainRequest(Message):
    TYPE: ClassVar[int] = 5
    key: bytes


@dataclass(frozen=True, slots=True)
class LeaveRequest(Message):
    TYPE: ClassVar[int] = 6


@dataclass(frozen=True, slots=True)
class RemoveRequest(Message):
    """Take a dead node out of the ring (an operator's decision, spread to every member)."""

    TYPE: ClassVar[int] = 7
    node_id: str
    relayed: bool = False
    """Set on the copies the receiving node sends to the other members."""
    replaced_by: str | None = None
    """Set by `serve --replace`: the new node standing in; a second one is refused."""
    incarnation: int | None = None
    """On relayed copies: the removed node's incarnation when it was removed. A member
    seen alive at a higher one since was admitted again and keeps its place."""


@dataclass(frozen=True, slots=True)
class AdmitRequest(Message):
    """Let a removed node join again (undoes ``RemoveRequest``, spread to every member)."""

    TYPE: ClassVar[int] = 9
    node_id: str
    relayed: bool = False


@dataclass(frozen=True, slots=True)
class MembersRequest(Message):
    """Ask for the member list and ring parameters (clients route keys with it)."""

    TYPE: ClassVar[int] = 8


@dataclass(frozen=True, slots=True)
class LimitsRequest(Message):
    """Ask for the node's request limits, so a client checks requests against the limits
    the cluster really has rather than the defaults. A node that predates this message
    answers it with an ErrorReply (unknown type), and the client keeps its own limits.

    Its code is far from the others so that new requests can keep taking the next code.
    """

    TYPE: ClassVar[int] = 19


@dataclass(frozen=True, slots=True)
class BatchRequest(Message):
    """Many client requests in one frame (``put_many``, ``get_many``, ``delete_many``).

    Each of ``requests`` is one PutRequest, GetRequest or DeleteRequest encoded by
    ``codec.encode_item`` and decoded (and validated as strictly as a frame) one by one, so
    a bad item is refused on its own while the others are served. A node refuses the whole
    batch (an ErrorReply, nothing done) when ``version`` is not ``BATCH_VERSION`` or it holds
    more than ``MAX_BATCH_ITEMS`` requests; a key may appear at most once (every request of
    a repeated key is refused, since which of them should win is the caller's choice).
    """

    TYPE: ClassVar[int] = 10
    version: int
    requests: list[bytes]


BATCH_VERSION = 1
MAX_BATCH_ITEMS = 1000
"""Most requests one BatchRequest may carry; a client splits larger batches."""


# --- replies -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TracedReply:
    """What the reply to a ``KeyRequest`` (or its ErrorReply) carries besides its own
    fields; keyword only, as ``KeyRequest``'s fields are."""

    trace: dict[str, Any] | None = None
    """The coordinator's steps, only in answer to a request that set ``trace``:
    ``{"request_id": text, "steps": [{"step", "at_ms", "took_ms", ...}, ...]}``."""


@dataclass(frozen=True, slots=True)
class PutReply(Message, TracedReply):
    TYPE: ClassVar[int] = 20
    context: bytes
    warning: str | None = None
    siblings: int = 1
    """Live values the key has on the coordinator after this write; more than one means
    concurrent writes (a put without a context on an existing key makes one)."""
    read_first: bool = False
    """The coordinator read the key and superseded what it read (an overwrite)."""
    unseen_may_remain: bool = False
    """Replicas that did not answer that read may hold a version this write did not
    supersede (it would show up as a sibling)."""


@dataclass(frozen=True, slots=True)
class GetReply(Message, TracedReply):
    TYPE: ClassVar[int] = 21
    values: list[bytes]
    """Live sibling values; empty when the key is missing or deleted."""
    context: bytes
    """Causal context to pass to the next put or delete (also for a deleted key)."""


@dataclass(frozen=True, slots=True)
class DeleteReply(Message, TracedReply):
    TYPE: ClassVar[int] = 22
    context: bytes
    read_first: bool = False
    """The delete came without a context: the coordinator read the key and the tombstone
    supersedes what it read."""
    unseen_may_remain: bool = False
    """Replicas that did not answer that read may hold a version the tombstone did not
    supersede, which a later read would still return."""


@dataclass(frozen=True, slots=True)
class BatchReply(Message):
    TYPE: ClassVar[int] = 28
    replies: list[bytes]
    """One per request of the BatchRequest, in order: its reply (a PutReply, GetReply,
    DeleteReply or ErrorReply) encoded by ``codec.encode_item``."""


@dataclass(frozen=True, slots=True)
class StatusReply(Message):
    TYPE: ClassVar[int] = 23
    status: dict[str, Any]
    """A document: node id, address, state, members, ownership, statistics."""


@dataclass(frozen=True, slots=True)
class OkReply(Message):
    TYPE: ClassVar[int] = 24
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ErrorReply(Message, TracedReply):
    TYPE: ClassVar[int] = 25
    code: str
    """One of ``p2pindex.errors.ERROR_CODES``."""
    message: str
    required: int | None = None
    alive: int | None = None


@dataclass(frozen=True, slots=True)
class ExplainReply(Message):
    TYPE: ClassVar[int] = 26
    explain: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MembersReply(Message):
    TYPE: ClassVar[int] = 27
    n_replicas: int
    vnodes: int
    """Virtual nodes per member: with the member ids this lets a client rebuild the ring."""
    members: list[dict[str, Any]]
    """One document per member: node_id, address, liveness, state, incarnation."""


@dataclass(frozen=True, slots=True)
class LimitsReply(Message):
    """The limits a node enforces on client requests (bytes). ``version`` is the version of
    this reply's meaning: a client adopts a reply only in a version it knows."""

    TYPE: ClassVar[int] = 39
    version: int
    max_key: int
    max_value: int
    max_frame: int
    sibling_max: int


LIMITS_VERSION = 1


# --- node <-> node -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First frame on a node-to-node connection: who is calling, and from which cluster."""

    TYPE: ClassVar[int] = 40
    node_id: str
    address: str
    cluster: str


@dataclass(frozen=True, slots=True)
class ReplicaWrite(Message):
    """Merge ``record`` into the replica's copy of ``key`` (causal merge, never overwrite).

    ``hint_for`` names the unreachable owner when the receiver is a fallback keeping a hint.
    """

    TYPE: ClassVar[int] = 41
    key: bytes
    record: bytes
    hint_for: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicaRead(Message):
    TYPE: ClassVar[int] = 42
    key: bytes


@dataclass(frozen=True, slots=True)
class ReplicaReadReply(Message):
    TYPE: ClassVar[int] = 43
    record: bytes | None


@dataclass(frozen=True, slots=True)
class ReplicaAck(Message):
    TYPE: ClassVar[int] = 44


@dataclass(frozen=True, slots=True)
class ReplicaWriteBatch(Message):
    """Merge many records at once (hint delivery, ownership handoff, repair)."""

    TYPE: ClassVar[int] = 45
    items: list[tuple[bytes, bytes]]
    """(key, record) pairs."""


@dataclass(frozen=True, slots=True)
class ReplicaWriteMany(Message):
    """The replica writes a coordinator has for one replica at once (the hot path): one
    frame, one commit, one ReplicaAck for all of them, or one error when none was stored.
    Unlike ReplicaWriteBatch it is refused by a node that takes no writes."""

    TYPE: ClassVar[int] = 38
    items: list[tuple[bytes, bytes]]
    """(key, record) pairs."""


@dataclass(frozen=True, slots=True)
class ReplicaReadMany(Message):
    """The replica reads a coordinator has for one replica at once (the hot path)."""

    TYPE: ClassVar[int] = 36
    keys: list[bytes]


@dataclass(frozen=True, slots=True)
class ReplicaReadManyReply(Message):
    TYPE: ClassVar[int] = 37
    records: list[bytes | None]
    """One per asked key, in order; None where the replica holds nothing."""


@dataclass(frozen=True, slots=True)
class ReplicaDigestMany(Message):
    """A coordinator's digest reads (``core.digest_read``): the digest of the replica's
    version of each key instead of its record; the value comes from another replica."""

    TYPE: ClassVar[int] = 56
    keys: list[bytes]


@dataclass(frozen=True, slots=True)
class ReplicaDigestManyReply(Message):
    TYPE: ClassVar[int] = 57
    digests: list[bytes | None]
    """One per asked key, in order: ``core.digest_read.version_digest`` of the replica's
    record, None where it holds nothing."""


@dataclass(frozen=True, slots=True)
class ReplicaReadSettled(Message):
    """Replica reads answered with committed records only (a ``ReplicaReadManyReply``).

    A replica answers ordinary reads with a record as soon as it is staged, before its
    commit, which suits a coordinator: a read that sees a write in flight is merely early.
    The tombstone reaper asks with this instead, because it deletes on the strength of the
    answer: a staged tombstone that a crash then loses must not have let the others reap
    theirs (the replica would keep the older value, and nothing would bring the delete back
    to it). The replica waits until no commit of the keys is in flight, then answers."""

    TYPE: ClassVar[int] = 58
    keys: list[bytes]


@dataclass(frozen=True, slots=True)
class RangeScan(Message):
    """Ask an owner for the records whose token lies in the ring arcs (start[i], end[i]], arc
    by arc, starting after key ``after`` in the first arc; at most ``limit`` records.

    Handoff pulls thousands of small arcs (a node owns a few thousand virtual nodes), so many
    go in one round trip."""

    TYPE: ClassVar[int] = 46
    start: list[int]
    end: list[int]
    after: bytes | None
    limit: int


@dataclass(frozen=True, slots=True)
class RangeScanReply(Message):
    TYPE: ClassVar[int] = 47
    items: list[tuple[bytes, bytes]]
    arcs_done: int
    """How many of the requested arcs, from the first, are complete; the next one (if any)
    continues after the last item's key."""


@dataclass(frozen=True, slots=True)
class PushPull(Message):
    """Full membership state exchange over TCP; ``state`` is encoded by the SWIM core."""

    TYPE: ClassVar[int] = 48
    state: bytes
    join: bool = False
    datagram_sequence: int | None = None
    """The sender's signed-datagram sequence floor (security on): the receiver judges its
    datagrams by it instead of by clocks (``security.datagrams``)."""


@dataclass(frozen=True, slots=True)
class PushPullReply(Message):
    TYPE: ClassVar[int] = 49
    state: bytes
    datagram_sequence: int | None = None
    """As in ``PushPull``: the replying node's datagram sequence floor."""


# --- anti-entropy (p2pindex.node.antientropy) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestRequest(Message):
    """Digests of the keys the receiver holds in arcs (start[i], end[i]] and shares with
    ``sender`` (both are in the key's preference list)."""

    TYPE: ClassVar[int] = 50
    sender: str
    start: list[int]
    end: list[int]


@dataclass(frozen=True, slots=True)
class DigestReply(Message):
    TYPE: ClassVar[int] = 51
    digests: list[bytes]
    """One per requested arc: the XOR of its key digests (``p2pindex.core.digest``)."""
    counts: list[int]


@dataclass(frozen=True, slots=True)
class KeyDigestRequest(Message):
    """One digest per shared key in arcs (start[i], end[i]], at most ``limit`` of them."""

    TYPE: ClassVar[int] = 52
    sender: str
    start: list[int]
    end: list[int]
    limit: int


@dataclass(frozen=True, slots=True)
class KeyDigestReply(Message):
    TYPE: ClassVar[int] = 53
    items: list[tuple[bytes, bytes]]
    """(key, key digest) pairs."""
    complete: bool
    """False when ``limit`` cut the list short."""


@dataclass(frozen=True, slots=True)
class RecordsRequest(Message):
    """The records of these keys (anti-entropy pulls what differs)."""

    TYPE: ClassVar[int] = 54
    keys: list[bytes]


@dataclass(frozen=True, slots=True)
class RecordsReply(Message):
    TYPE: ClassVar[int] = 55
    items: list[tuple[bytes, bytes]]
    """(key, record) for every asked key the receiver holds."""


# --- security (p2pindex.security) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevocationPush(Message):
    """A signed revocation list; the receiver adopts it if newer and spreads it."""

    TYPE: ClassVar[int] = 60
    document: bytes
    relayed: bool = False
    """Set on copies nodes pass on, so only the node an operator reached fans out to all."""


@dataclass(frozen=True, slots=True)
class CertificateRequest(Message):
    """Ask a node for the certificates it holds of ``node_ids`` (empty: all it holds)."""

    TYPE: ClassVar[int] = 61
    node_ids: list[str]


@dataclass(frozen=True, slots=True)
class CertificateReply(Message):
    TYPE: ClassVar[int] = 62
    certificates: list[bytes]
    """Signed node certificates; the asker verifies each one itself."""


# --- queries: index scans and key listings (p2pindex.node.query) ---------------------------
# Codes 70..79 are kept for queries.


@dataclass(frozen=True, slots=True)
class QueryRequest(Message):
    """One page of an index query (``index`` set) or a key listing (``index`` empty).

    ``lo`` and ``hi`` are terms encoded by ``p2pindex.core.terms.encode_term`` (an exact
    query sends the same term twice); a listing sends neither. Every answer's key starts
    with ``prefix`` (a capability with a prefix must send one inside it). ``continuation``
    is the opaque token of the previous page.
    """

    TYPE: ClassVar[int] = 70
    index: str
    lo: bytes | None
    hi: bytes | None
    prefix: bytes
    limit: int
    continuation: bytes | None
    consistency: str | int
    timeout_ms: int
    values: bool = False
    complete_only: bool = False
    explain: bool = False


@dataclass(frozen=True, slots=True)
class QueryReply(Message):
    TYPE: ClassVar[int] = 71
    rows: list[tuple[bytes, bytes]]
    """(encoded term, key) in (term, key) order; the term is empty in a key listing."""
    row_values: list[list[bytes]]
    """The live values of each row's key when asked for, else empty."""
    continuation: bytes | None
    """None when there is nothing after this page."""
    coverage: dict[str, Any]
    """complete, uncovered_share, replicas_per_arc and (with explain) the plan."""


@dataclass(frozen=True, slots=True)
class IndexScan(Message):
    """A coordinator's sub-query to one replica: the rows of its arcs (start[i], end[i]]
    (none: the whole ring) after the cursor, at most ``limit``; with ``records`` the
    records of the keys named too (for merging by version, or values)."""

    TYPE: ClassVar[int] = 72
    index: str
    lo: bytes | None
    hi: bytes | None
    prefix: bytes
    start: list[int]
    end: list[int]
    after_term: bytes | None
    after_key: bytes | None
    limit: int
    records: bool


@dataclass(frozen=True, slots=True)
class IndexScanReply(Message):
    TYPE: ClassVar[int] = 73
    rows: list[tuple[bytes, bytes]]
    records: list[tuple[bytes, bytes]]
    """(key, record) for each distinct key of ``rows`` when asked."""
    truncated: bool
    """True when ``limit`` rows were found: more may follow the last one."""
