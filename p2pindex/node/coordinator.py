"""The coordinator: runs one client request (put, get, delete) at the consistency asked for.

The coordinator of a write is one of the key's replicas (or a fallback standing in for one),
so the version actor is always a node that holds the data. It computes the new version,
starts the remote replica writes and its own commit together, and answers after W
acknowledgements. Reads ask every target, answer after R replies, and repair stale replicas
in the background once the stragglers have answered.

Failure reporting follows the error tree: too few usable targets before anything is sent is
``Unavailable`` (definite); a deadline passing or a quorum lost after the write started is
indeterminate (``Timeout`` / ``QuorumFailed``): some replica may hold the write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import outcome
import trio

from p2pindex.config import NodeConfig
from p2pindex.core import versions
from p2pindex.core.placement import Target, select_targets
from p2pindex.core.quorum import Outcome, ReadQuorum, WriteQuorum
from p2pindex.core.ring import Ring
from p2pindex.core.versions import VersionedObject, VersionVector
from p2pindex.errors import (
    ConnectionLost,
    InvalidRequest,
    P2PIndexError,
    QuorumFailed,
    StorageFailure,
    Timeout,
    Unavailable,
)
from p2pindex.node.peers import PeerPool
from p2pindex.node.replica import IndexManager
from p2pindex.node.stats import StatisticsStore
from p2pindex.types import Address, consistency_from_wire, required_replies
from p2pindex.wire.messages import (
    DeleteReply,
    DeleteRequest,
    GetReply,
    GetRequest,
    Message,
    PutReply,
    PutRequest,
    ReplicaAck,
    ReplicaRead,
    ReplicaReadReply,
    ReplicaWrite,
)

MAX_TIMEOUT_MS = 600_000
MAX_CONTEXT_ACTORS = 256
"""A real context names the nodes that coordinated writes of one key; far fewer than this.
The cap stops a forged context from bloating the stored clock forever."""

EMPTY_CONTEXT = versions.encode_context(VersionVector())


class ClusterView(Protocol):
    """What the coordinator needs to know about the cluster, supplied by the node."""

    @property
    def ring(self) -> Ring: ...

    def address_of(self, node_id: str) -> Address: ...

    def usable(self, node_id: str) -> bool: ...

    def readable(self, node_id: str) -> bool:
        """Usable and holding its data: a SYNCING node takes writes but serves no reads."""
        ...

    def note_unreachable(self, node_id: str) -> None: ...

    def storage_failed(self, error: StorageFailure) -> None: ...


@dataclass(slots=True)
class _Round:
    """One coordinated request in flight: its quorum record and who is still to answer."""

    remaining: int
    done: trio.Event = field(default_factory=trio.Event)
    answered: bool = False
    key: bytes = b""


class Coordinator:
    def __init__(
        self,
        node_id: str,
        view: ClusterView,
        index: IndexManager,
        peers: PeerPool,
        config: NodeConfig,
        stats: StatisticsStore,
        spawn: Callable[..., None],
    ) -> None:
        self._node_id = node_id
        self._view = view
        self._index = index
        self._peers = peers
        self._config = config
        self._stats = stats
        self._spawn = spawn

    # --- writes -----------------------------------------------------------------------------

    async def put(self, request: PutRequest | DeleteRequest) -> Message:
        is_delete = isinstance(request, DeleteRequest)
        value = None if is_delete else request.value
        n = self._config.n_replicas
        required = self._required(request.consistency, n)
        context = self._context(request.context)
        timeout = self._timeout(request.timeout_ms)
        targets = self._targets(request.key, n, request.strict, required)
        if not any(t.node == self._node_id for t in targets):
            return await self._forward(request, targets, timeout)

        with trio.move_on_after(timeout):
            obj, record = self._index.new_version(request.key, context, value)
            tracker = WriteQuorum([t.node for t in targets], required)
            round_ = _Round(remaining=len(targets) - 1)
            # Our own commit comes first: a version leaves this node only once its dot is
            # durable here, so a failed commit or a crash can never let this node hand the
            # same (actor, counter) to a different value later. Nothing was sent if it fails.
            try:
                await self._index.commit(request.key, record)
            except StorageFailure as exc:
                self._stats.incr("writes.local_failures")
                self._view.storage_failed(exc)
                # Indeterminate, not definite: while the commit was pending the version was
                # visible locally, and a concurrent write to the key may have merged it in.
                raise QuorumFailed(
                    f"the coordinator's storage failed ({exc}); nothing was sent to other "
                    "replicas, but a concurrent write may carry this one",
                    required=required,
                    acknowledged=0,
                ) from exc
            tracker.record_ack(self._node_id)
            for target in targets:
                if target.node != self._node_id:
                    message = ReplicaWrite(request.key, record, target.hint_for)
                    self._send(
                        target.node, message, timeout, self._on_write_result, tracker, round_
                    )
            self._settle(round_, tracker.outcome)
            await round_.done.wait()
        round_.answered = True
        if tracker.outcome is Outcome.SUCCEEDED:
            self._stats.incr("requests.delete" if is_delete else "requests.put")
            context_bytes = versions.encode_context(obj.clock)
            if is_delete:
                return DeleteReply(context_bytes)
            return PutReply(context_bytes, self._sibling_warning(obj))
        self._stats.incr("requests.write_indeterminate")
        if tracker.outcome is Outcome.FAILED:
            raise QuorumFailed(
                f"only {tracker.acks} of {required} replicas stored the write; it may still be "
                "visible on them",
                required=required,
                acknowledged=tracker.acks,
            )
        raise Timeout(required=required, acknowledged=tracker.acks)

    def _send(
        self,
        node: str,
        message: Message,
        timeout: float,
        on_result: Callable[..., None],
        tracker: WriteQuorum | ReadQuorum,
        round_: _Round,
    ) -> None:
        """Send one replica request; ``on_result(node, outcome, tracker, round_)`` follows.

        Over an open connection this costs no task; the first request to a peer connects
        in a task of its own. A connection that breaks under the request (a peer restarting
        its sessions, say) gets one retry on a fresh connection: replica reads and writes
        are idempotent, since a replica merges what it receives.
        """
        address = self._view.address_of(node)
        replica_timeout = min(timeout, self._config.replica_timeout)
        retried = False

        def deliver(result: outcome.Outcome) -> None:
            nonlocal retried
            lost = isinstance(result, outcome.Error) and isinstance(result.error, ConnectionLost)
            if lost and not retried:
                retried = True
                self._stats.incr("replica.retries")
                self._spawn(self._send_connecting, address, message, replica_timeout, deliver)
                return
            on_result(node, result, tracker, round_)

        if not self._peers.send_nowait(address, message, deliver, replica_timeout):
            self._spawn(self._send_connecting, address, message, replica_timeout, deliver)

    async def _send_connecting(
        self,
        address: Address,
        message: Message,
        timeout: float,
        deliver: Callable[[outcome.Outcome], None],
    ) -> None:
        try:
            reply = await self._peers.request(address, message, timeout)
        except (OSError, P2PIndexError) as exc:
            deliver(outcome.Error(exc))
        else:
            deliver(outcome.Value(reply))

    def _on_write_result(
        self, node: str, result: outcome.Outcome, tracker: WriteQuorum, round_: _Round
    ) -> None:
        try:
            reply = result.unwrap()
        except (OSError, P2PIndexError) as exc:
            self._stats.incr("replica.write_failures")
            tracker.record_failure(node)
            self._note_failure(node, exc)
        else:
            if isinstance(reply, ReplicaAck):
                tracker.record_ack(node)
            else:
                self._stats.incr("replica.write_failures")
                tracker.record_failure(node)
        round_.remaining -= 1
        self._settle(round_, tracker.outcome)

    def _sibling_warning(self, obj: VersionedObject) -> str | None:
        if obj.sibling_count >= self._config.limits.sibling_warn:
            self._stats.incr("writes.sibling_warnings")
            return (
                f"key has {obj.sibling_count} siblings (warning at "
                f"{self._config.limits.sibling_warn}, refused above "
                f"{self._config.limits.sibling_max}); read and write with the context to resolve"
            )
        return None

    # --- reads ------------------------------------------------------------------------------

    async def get(self, request: GetRequest) -> Message:
        n = self._config.n_replicas
        required = self._required(request.consistency, n)
        timeout = self._timeout(request.timeout_ms)
        targets = self._targets(request.key, n, request.strict, required, read=True)
        if not any(t.node == self._node_id for t in targets):
            return await self._forward(request, targets, timeout)

        tracker = ReadQuorum([t.node for t in targets], required)
        round_ = _Round(remaining=len(targets) - 1)
        round_.key = request.key
        with trio.move_on_after(timeout):
            for target in targets:
                if target.node != self._node_id:
                    self._send(
                        target.node,
                        ReplicaRead(request.key),
                        timeout,
                        self._on_read_result,
                        tracker,
                        round_,
                    )
            tracker.record_reply(self._node_id, self._index.read(request.key))
            self._settle(round_, tracker.outcome)
            await round_.done.wait()
        round_.answered = True
        if round_.remaining == 0:
            self._repair_if_stale(request.key, tracker)
        if tracker.outcome is Outcome.SUCCEEDED:
            self._stats.incr("requests.get")
            merged = tracker.merged
            if merged is None:
                return GetReply([], EMPTY_CONTEXT)
            return GetReply(merged.values, versions.encode_context(merged.clock))
        if tracker.outcome is Outcome.FAILED:
            raise Unavailable(required, tracker.replies, "replicas failed to answer the read")
        raise Timeout(required=required, acknowledged=tracker.replies)

    def _on_read_result(
        self, node: str, result: outcome.Outcome, tracker: ReadQuorum, round_: _Round
    ) -> None:
        try:
            reply = result.unwrap()
            if not isinstance(reply, ReplicaReadReply):
                raise InvalidRequest(f"unexpected reply {type(reply).__name__} to a replica read")
            obj = None if reply.record is None else versions.decode_object(reply.record)
        except (OSError, P2PIndexError, ValueError) as exc:
            self._stats.incr("replica.read_failures")
            tracker.record_failure(node)
            self._note_failure(node, exc)
        else:
            tracker.record_reply(node, obj)
        round_.remaining -= 1
        self._settle(round_, tracker.outcome)
        if round_.remaining == 0 and round_.answered:
            self._repair_if_stale(round_.key, tracker)

    def _repair_if_stale(self, key: bytes, tracker: ReadQuorum) -> None:
        if tracker.merged is not None and tracker.stale_replicas():
            self._spawn(self._repair, key, tracker)

    async def _repair(self, key: bytes, tracker: ReadQuorum) -> None:
        """Read repair: send the merged version to every replica that answered with less."""
        merged = tracker.merged
        if merged is None:
            return
        for node in tracker.stale_replicas():
            self._stats.incr("repairs.read")
            if node == self._node_id:
                try:
                    await self._index.apply(key, merged)
                except StorageFailure:
                    self._stats.incr("repairs.failed")
                continue
            try:
                await self._peers.request(
                    self._view.address_of(node),
                    ReplicaWrite(key, versions.encode_object(merged)),
                    self._config.replica_timeout,
                )
            except (OSError, P2PIndexError):
                self._stats.incr("repairs.failed")

    # --- shared -----------------------------------------------------------------------------

    def _settle(self, round_: _Round, outcome: Outcome) -> None:
        if outcome is not Outcome.PENDING or round_.remaining == 0:
            round_.done.set()

    def _required(self, consistency: str | int, n: int) -> int:
        try:
            return required_replies(consistency_from_wire(consistency), n)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    def _context(self, raw: bytes | None) -> VersionVector:
        if raw is None:
            return VersionVector()
        try:
            context = versions.decode_context(raw)
        except ValueError as exc:
            raise InvalidRequest(f"bad context: {exc}") from None
        if len(context) > MAX_CONTEXT_ACTORS:
            raise InvalidRequest(
                f"context names {len(context)} actors (at most {MAX_CONTEXT_ACTORS}); pass the "
                "context a read returned, unmodified"
            )
        return context

    def _timeout(self, timeout_ms: int) -> float:
        if timeout_ms <= 0:
            return self._config.request_timeout
        return min(timeout_ms, MAX_TIMEOUT_MS) / 1000.0

    def _targets(
        self, key: bytes, n: int, strict: bool, required: int, *, read: bool = False
    ) -> list[Target]:
        ring = self._view.ring
        if len(ring.nodes) < n:
            raise InvalidRequest(
                f"the cluster keeps N={n} replicas but has only {len(ring.nodes)} node(s); "
                "add nodes or lower n_replicas"
            )
        usable = self._view.readable if read else self._view.usable
        targets = select_targets(ring, key, n, usable, strict=strict)
        if len(targets) < required:
            kind = "primary replicas" if strict else "replicas or fallbacks"
            raise Unavailable(required, len(targets), f"too few {kind} are up")
        return targets

    async def _forward(
        self,
        request: PutRequest | GetRequest | DeleteRequest,
        targets: list[Target],
        timeout: float,
    ) -> Message:
        """Relay a request that reached a node outside the key's targets to one of them."""
        if request.forwarded:
            raise Unavailable(
                0,
                0,
                "the node this request was relayed to does not hold the key either; the "
                "membership views disagree, retry shortly",
            )
        relayed = _as_forwarded(request)
        last_error: Exception | None = None
        with trio.move_on_after(timeout):
            for target in targets:
                try:
                    self._stats.incr("requests.forwarded")
                    return await self._peers.request(
                        self._view.address_of(target.node), relayed, timeout
                    )
                except OSError as exc:
                    last_error = exc
        if last_error is not None and not isinstance(request, GetRequest):
            raise Unavailable(1, 0, f"no replica took the relayed write: {last_error}")
        raise Timeout(f"no replica answered the relayed request within {timeout:g}s")

    def _note_failure(self, node: str, error: BaseException) -> None:
        """A refused connection is evidence the node is down: skip it until SWIM decides."""
        self._stats.incr(f"replica.errors.{type(error).__name__}")
        if isinstance(error, OSError):
            self._view.note_unreachable(node)


def _as_forwarded(request: PutRequest | GetRequest | DeleteRequest) -> Message:
    if isinstance(request, PutRequest):
        return PutRequest(
            request.key,
            request.value,
            request.context,
            request.consistency,
            request.timeout_ms,
            request.strict,
            True,
        )
    if isinstance(request, DeleteRequest):
        return DeleteRequest(
            request.key,
            request.context,
            request.consistency,
            request.timeout_ms,
            request.strict,
            True,
        )
    return GetRequest(request.key, request.consistency, request.timeout_ms, request.strict, True)
