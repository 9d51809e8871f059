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

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import outcome
import trio

from p2pindex.config import Limits, NodeConfig
from p2pindex.core import versions
from p2pindex.core.batching import sized_groups
from p2pindex.core.placement import Target, select_targets
from p2pindex.core.quorum import Outcome, ReadQuorum, WriteQuorum
from p2pindex.core.ring import Ring
from p2pindex.core.versions import VersionedObject, VersionVector
from p2pindex.errors import (
    ConnectionLost,
    InvalidRequest,
    NotReady,
    P2PIndexError,
    QuorumFailed,
    StorageFailure,
    Timeout,
    Unavailable,
)
from p2pindex.net.channel import BatchHandler, FastPath, Respond
from p2pindex.node import read_first
from p2pindex.node import trace as trace_seam
from p2pindex.node.index_terms import write_terms
from p2pindex.node.peers import PeerPool
from p2pindex.node.replica import IndexManager, ReplicaService
from p2pindex.node.stats import StatisticsStore
from p2pindex.types import Address, consistency_from_wire, required_replies
from p2pindex.wire.errors import reply_for_error
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
    ReplicaReadMany,
    ReplicaReadManyReply,
    ReplicaReadReply,
    ReplicaWrite,
    ReplicaWriteMany,
)

MAX_TIMEOUT_MS = 600_000
MAX_CONTEXT_ACTORS = 256
"""A real context names the nodes that coordinated writes of one key; far fewer than this.
The cap stops a forged context from bloating the stored clock forever."""

EMPTY_CONTEXT = versions.encode_context(VersionVector())
BATCH_BYTES = Limits().max_frame // 2
"""Most record bytes one ReplicaWriteMany carries (the rest go in further messages)."""


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

    @property
    def leaving(self) -> bool:
        """True while the node drains: it relays requests instead of coordinating them."""
        ...

    @property
    def membership_confirmed(self) -> bool:
        """False until the node learnt the membership from a live member since it started."""
        ...

    def storage_failed(self, error: StorageFailure) -> None: ...

    async def keep_hint(self, target: str, key: bytes, record: bytes) -> None:
        """Durably keep ``record`` for ``target`` (hinted handoff delivers it later)."""
        ...


@dataclass(slots=True)
class _Round:
    """One coordinated request in flight: its quorum record and who is still to answer."""

    remaining: int
    done: trio.Event = field(default_factory=trio.Event)
    answered: bool = False
    key: bytes = b""


class _Group:
    """The requests of one batch: wakes the batch's task when the last one is answered."""

    __slots__ = ("_done", "_open", "_respond")

    def __init__(self, size: int, respond: Respond) -> None:
        self._open = size
        self._respond = respond
        self._done = trio.Event()

    def answer(self, position: int, reply: Message) -> None:
        self._respond(position, reply)
        self._open -= 1
        if self._open == 0:
            self._done.set()

    async def wait(self) -> None:
        await self._done.wait()


@dataclass(slots=True, eq=False)
class _Write:
    """One write of a batch from plan to answer."""

    position: int
    request: PutRequest | DeleteRequest
    context: VersionVector
    targets: list[Target]
    tracker: WriteQuorum
    timeout: float
    deadline: float
    obj: VersionedObject | None = None
    record: bytes = b""
    remaining: int = 0
    group: _Group | None = None
    answered: bool = False

    def respond_now(self, reply: Message) -> None:
        assert self.group is not None
        self.group.answer(self.position, reply)


@dataclass(slots=True, eq=False)
class _Read:
    """One read of a batch from plan to answer (and read repair once all replied)."""

    position: int
    key: bytes
    targets: list[Target]
    tracker: ReadQuorum
    timeout: float
    deadline: float
    remaining: int = 0
    group: _Group | None = None
    answered: bool = False


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
        terms = write_terms(request, self._config.term_limits, self._stats)
        n = self._config.n_replicas
        required = self._required(request.consistency, n)
        context = self._context(request.context)
        timeout = self._timeout(request.timeout_ms)
        targets = self._targets(request.key, n, request.strict, required)
        trace = trace_seam.current()
        on_result = self._on_write_result
        if trace is not None:
            trace.step("targets", required=required, nodes=_describe(targets))
            on_result = trace.observing(on_result)
        if not self._coordinates(request, targets):
            others = [t for t in targets if t.node != self._node_id]
            return await self._forward(request, others, timeout)
        if read_first.needs_read_first(request):
            if request.context is not None:
                raise InvalidRequest("a put that overwrites takes no context; drop one of them")
            holders = min(n, len(self._view.ring.nodes))
            unseen = read_first.may_leave_unseen(required, targets, holders)
            return await read_first.read_then_write(request, self.get, self.put, unseen)

        with trio.move_on_after(timeout):
            obj, record = self._index.new_version(request.key, context, value, terms)
            tracker = WriteQuorum([t.node for t in targets], required)
            round_ = _Round(remaining=len(targets) - 1)
            # Our own commit comes first: a version leaves this node only once its dot is
            # durable here, so a failed commit or a crash can never let this node hand the
            # same (actor, counter) to a different value later. Nothing was sent if it fails.
            try:
                await self._index.commit(request.key, record)
                await self._keep_own_hints([(request.key, record, targets)])
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
            if trace is not None:
                trace.step("committed_locally", node=self._node_id)
            for target in targets:
                if target.node != self._node_id:
                    message = ReplicaWrite(request.key, record, target.hint_for)
                    self._send(target.node, message, timeout, on_result, tracker, round_)
            self._settle(round_, tracker.outcome)
            await round_.done.wait()
        round_.answered = True
        if trace is not None:
            trace.step("decided", outcome=tracker.outcome.name.lower(), acks=tracker.acks)
        return self._write_reply(is_delete, obj, tracker)

    async def _keep_own_hints(self, writes: list[tuple[bytes, bytes, list[Target]]]) -> None:
        """A coordinator standing in for an unusable primary keeps a hint for it, as a remote
        fallback does on a ReplicaWrite; without one the write would sit on a node outside
        the key's preference list, where neither repair nor anti-entropy ever finds it."""
        for key, record, targets in writes:
            for target in targets:
                if target.node == self._node_id and target.hint_for is not None:
                    await self._view.keep_hint(target.hint_for, key, record)

    def _write_reply(self, is_delete: bool, obj: VersionedObject, tracker: WriteQuorum) -> Message:
        """The answer to a coordinated write whose quorum is decided or whose time ran out."""
        if tracker.outcome is Outcome.SUCCEEDED:
            self._stats.incr("requests.delete" if is_delete else "requests.put")
            context_bytes = versions.encode_context(obj.clock)
            if is_delete:
                return DeleteReply(context_bytes)
            return PutReply(context_bytes, self._sibling_warning(obj), len(obj.values))
        self._stats.incr("requests.write_indeterminate")
        failure: QuorumFailed | Timeout
        if tracker.outcome is Outcome.FAILED:
            failure = QuorumFailed(
                f"only {tracker.acks} of {tracker.required} replicas stored the write; it may "
                "still be visible on them",
                required=tracker.required,
                acknowledged=tracker.acks,
            )
        else:
            failure = Timeout(required=tracker.required, acknowledged=tracker.acks)
        raise failure

    # --- writes that arrived together -------------------------------------------------------

    async def put_batch(self, requests: list[Message], respond: Respond) -> None:
        """Coordinate writes that arrived together, as ``put`` would one by one, but with one
        local commit for all of them and no task, cancel scope or event per write.

        Each write is answered through ``respond`` the moment its quorum is decided, so a
        slow replica of one key does not hold back the others.
        """
        await self._serve_batch(
            requests,
            respond,
            self._plan_write,
            self.put,
            lambda writes: self._coordinate_writes(writes, respond),
        )

    async def _serve_batch(
        self,
        requests: list[Message],
        respond: Respond,
        plan: Callable[[int, Any], Any],
        one_by_one: Callable[[Any], Awaitable[Message]],
        coordinate: Callable[[list[Any]], Awaitable[None]],
    ) -> None:
        """Plan every request of a batch; coordinate the planned ones together. A request
        this node is not a target for is relayed on its own, a refused one answered at once.

        Only a batch that relays opens a nursery: a client routing by the ring sends almost
        every request to a replica, and a nursery per batch cost about 2% of a node's CPU.
        """
        planned: list[Any] = []
        relayed: list[tuple[int, Message]] = []
        for position, request in enumerate(requests):
            try:
                item = plan(position, request)
            except P2PIndexError as exc:
                respond(position, reply_for_error(exc))
                continue
            if item is None:
                relayed.append((position, request))
            else:
                planned.append(item)
        if not relayed:
            if planned:
                await coordinate(planned)
            return
        async with trio.open_nursery() as nursery:
            for position, request in relayed:
                nursery.start_soon(self._answer_one, one_by_one, position, request, respond)
            if planned:
                await coordinate(planned)

    @staticmethod
    async def _answer_one(
        handler: Callable[[Any], Awaitable[Message]],
        position: int,
        request: Message,
        respond: Respond,
    ) -> None:
        try:
            reply = await handler(request)
        except P2PIndexError as exc:
            reply = reply_for_error(exc)
        respond(position, reply)

    def _plan_write(self, position: int, request: PutRequest | DeleteRequest) -> _Write | None:
        write_terms(request, self._config.term_limits, self._stats)  # refuse bad terms here
        n = self._config.n_replicas
        required = self._required(request.consistency, n)
        context = self._context(request.context)
        timeout = self._timeout(request.timeout_ms)
        targets = self._targets(request.key, n, request.strict, required)
        if not self._coordinates(request, targets) or read_first.needs_read_first(request):
            return None  # relayed, or read first: served one by one by ``put``
        tracker = WriteQuorum([t.node for t in targets], required)
        deadline = trio.current_time() + timeout
        return _Write(position, request, context, targets, tracker, timeout, deadline)

    async def _coordinate_writes(self, writes: list[_Write], respond: Respond) -> None:
        made = self._index.new_versions(
            [
                (
                    w.request.key,
                    w.context,
                    None if isinstance(w.request, DeleteRequest) else w.request.value,
                    write_terms(w.request, self._config.term_limits, self._stats),
                )
                for w in writes
            ]
        )
        started: list[_Write] = []
        for write, version in zip(writes, made, strict=True):
            if isinstance(version, InvalidRequest):  # sibling, record or context limits
                respond(write.position, reply_for_error(version))
            else:
                write.obj, write.record = version
                started.append(write)
        if not started:
            return
        group = _Group(len(started), respond)
        for write in started:
            write.group = group
        # Our own commit first, as in ``put``: nothing leaves before its dot is durable here.
        with trio.move_on_at(max(w.deadline for w in started)):
            try:
                await self._index.commit_many([(w.request.key, w.record) for w in started])
                await self._keep_own_hints([(w.request.key, w.record, w.targets) for w in started])
            except StorageFailure as exc:
                self._view.storage_failed(exc)
                for write in started:
                    self._stats.incr("writes.local_failures")
                    failure = QuorumFailed(
                        f"the coordinator's storage failed ({exc}); nothing was sent to other "
                        "replicas, but a concurrent write may carry this one",
                        required=write.tracker.required,
                        acknowledged=0,
                    )
                    respond(write.position, reply_for_error(failure))
                return
            self._replicate(started)
        await self._until_answered(started, group, self._answer_write)

    async def _until_answered(
        self,
        rounds: Sequence[_Write | _Read],
        group: _Group,
        answer: Callable[[Any], None],
    ) -> None:
        """Wait for the quorums, each until its own deadline; a round whose deadline passed
        (during a commit, or waiting for replicas) is answered as it stands (a timeout)."""
        while True:
            now = trio.current_time()
            for round_ in rounds:
                if not round_.answered and round_.deadline <= now:
                    answer(round_)
            remaining = [r.deadline for r in rounds if not r.answered]
            if not remaining:
                return
            with trio.move_on_at(min(remaining)):
                await group.wait()

    def _replicate(self, writes: list[_Write]) -> None:
        """Send the committed writes to their other targets: what one replica gets from
        this batch travels as one ReplicaWriteMany (one frame, one commit, one ack there);
        a hinted write to a fallback goes alone, since the fallback must keep its hint."""
        by_node: dict[str, list[_Write]] = {}
        for write in writes:
            write.tracker.record_ack(self._node_id)
            write.remaining = len(write.targets) - 1
            for target in write.targets:
                if target.node == self._node_id:
                    continue
                if target.hint_for is None:
                    by_node.setdefault(target.node, []).append(write)
                else:
                    message = ReplicaWrite(write.request.key, write.record, target.hint_for)
                    self._send(
                        target.node, message, write.timeout, self._on_grouped_write, None, [write]
                    )
        for node, carried in (
            (node, group)  # a frame's worth each: a peer closes a link on a larger one
            for node, all_carried in by_node.items()
            for group in sized_groups(all_carried, _record_size, BATCH_BYTES)
        ):
            if len(carried) == 1:
                only = carried[0]
                message: Message = ReplicaWrite(only.request.key, only.record)
            else:
                message = ReplicaWriteMany([(w.request.key, w.record) for w in carried])
            timeout = min(w.timeout for w in carried)
            self._send(node, message, timeout, self._on_grouped_write, None, carried)
        for write in writes:
            self._settle_write(write)

    def _on_grouped_write(
        self, node: str, result: outcome.Outcome, _tracker: None, carried: list[_Write]
    ) -> None:
        """One replica's answer for every write its message carried."""
        answer = _unwrapped(result)
        for write in carried:
            self._count_write_answer(node, answer, write.tracker)
            write.remaining -= 1
            self._settle_write(write)

    def _settle_write(self, write: _Write) -> None:
        if write.tracker.outcome is not Outcome.PENDING or write.remaining == 0:
            self._answer_write(write)

    def _answer_write(self, write: _Write) -> None:
        if write.answered:
            return
        write.answered = True
        assert write.obj is not None
        try:
            reply = self._write_reply(
                isinstance(write.request, DeleteRequest), write.obj, write.tracker
            )
        except P2PIndexError as exc:
            reply = reply_for_error(exc)
        write.respond_now(reply)

    def _send(
        self,
        node: str,
        message: Message,
        timeout: float,
        on_result: Callable[..., None],
        tracker: WriteQuorum | ReadQuorum | None,
        round_: object,
    ) -> None:
        """Send one replica request; ``on_result(node, outcome, tracker, round_)`` follows.

        Over an open connection this costs no task; the first request to a peer connects
        in a task of its own. A connection that breaks under the request (a peer restarting
        its sessions, say) gets one retry on a fresh connection: replica reads and writes
        are idempotent, since a replica merges what it receives.
        """
        address = self._view.address_of(node)
        replica_timeout = min(timeout, self._config.replica_timeout)
        deliver = _Delivery(
            self, node, address, message, replica_timeout, on_result, tracker, round_
        )
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
        self._record_write_result(node, result, tracker)
        round_.remaining -= 1
        self._settle(round_, tracker.outcome)

    def _record_write_result(
        self, node: str, result: outcome.Outcome, tracker: WriteQuorum
    ) -> None:
        self._count_write_answer(node, _unwrapped(result), tracker)

    def _count_write_answer(
        self, node: str, answer: Message | OSError | P2PIndexError, tracker: WriteQuorum
    ) -> None:
        if isinstance(answer, OSError | P2PIndexError):
            self._stats.incr("replica.write_failures")
            tracker.record_failure(node)
            self._note_failure(node, answer)
        elif isinstance(answer, ReplicaAck):
            tracker.record_ack(node)
        else:
            self._stats.incr("replica.write_failures")
            tracker.record_failure(node)

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
        trace = trace_seam.current()
        on_result = self._on_read_result
        if trace is not None:
            trace.step("targets", required=required, nodes=_describe(targets))
            on_result = trace.observing(on_result)
        if not self._coordinates(request, targets):
            others = [t for t in targets if t.node != self._node_id]
            return await self._forward(request, others, timeout)

        tracker = ReadQuorum([t.node for t in targets], required)
        round_ = _Round(remaining=len(targets) - 1)
        round_.key = request.key
        with trio.move_on_after(timeout):
            for target in targets:
                if target.node != self._node_id:
                    self._send(
                        target.node, ReplicaRead(request.key), timeout, on_result, tracker, round_
                    )
            tracker.record_reply(self._node_id, self._index.read(request.key))
            self._settle(round_, tracker.outcome)
            await round_.done.wait()
        round_.answered = True
        if round_.remaining == 0:
            self._repair_if_stale(request.key, tracker)
        if trace is not None:
            stale = sorted(tracker.stale_replicas()) if tracker.merged is not None else []
            trace.step("decided", outcome=tracker.outcome.name.lower(), read_repair_to=stale)
        return self._read_reply(tracker)

    def _read_reply(self, tracker: ReadQuorum) -> Message:
        """The answer to a coordinated read whose quorum is decided or whose time ran out."""
        if tracker.outcome is Outcome.SUCCEEDED:
            self._stats.incr("requests.get")
            merged = tracker.merged
            if merged is None:
                return GetReply([], EMPTY_CONTEXT)
            return GetReply(merged.values, versions.encode_context(merged.clock))
        if tracker.outcome is Outcome.FAILED:
            raise Unavailable(
                tracker.required, tracker.replies, "replicas failed to answer the read"
            )
        raise Timeout(required=tracker.required, acknowledged=tracker.replies)

    def _on_read_result(
        self, node: str, result: outcome.Outcome, tracker: ReadQuorum, round_: _Round
    ) -> None:
        self._record_read_result(node, round_.key, result, tracker)
        round_.remaining -= 1
        self._settle(round_, tracker.outcome)
        if round_.remaining == 0 and round_.answered:
            self._repair_if_stale(round_.key, tracker)

    def _record_read_result(
        self, node: str, key: bytes, result: outcome.Outcome, tracker: ReadQuorum
    ) -> None:
        try:
            reply = result.unwrap()
            if not isinstance(reply, ReplicaReadReply):
                raise InvalidRequest(f"unexpected reply {type(reply).__name__} to a replica read")
            obj = None if reply.record is None else self._index.decode(key, reply.record)
        except (OSError, P2PIndexError, ValueError) as exc:
            self._stats.incr("replica.read_failures")
            tracker.record_failure(node)
            self._note_failure(node, exc)
        else:
            tracker.record_reply(node, obj)

    # --- reads that arrived together ----------------------------------------------------------

    async def get_batch(self, requests: list[Message], respond: Respond) -> None:
        """Coordinate reads that arrived together, as ``get`` would one by one, without a
        task, cancel scope or event per read; each is answered once its quorum is decided."""
        await self._serve_batch(
            requests,
            respond,
            self._plan_read,
            self.get,
            lambda reads: self._coordinate_reads(reads, _Group(len(reads), respond)),
        )

    def _plan_read(self, position: int, request: GetRequest) -> _Read | None:
        n = self._config.n_replicas
        required = self._required(request.consistency, n)
        timeout = self._timeout(request.timeout_ms)
        targets = self._targets(request.key, n, request.strict, required, read=True)
        if not self._coordinates(request, targets):
            return None
        tracker = ReadQuorum([t.node for t in targets], required)
        deadline = trio.current_time() + timeout
        return _Read(position, request.key, targets, tracker, timeout, deadline)

    async def _coordinate_reads(self, reads: list[_Read], group: _Group) -> None:
        # What one replica is asked by this batch travels as one ReplicaReadMany.
        by_node: dict[str, list[_Read]] = {}
        for read in reads:
            read.group = group
            read.remaining = len(read.targets) - 1
            for target in read.targets:
                if target.node != self._node_id:
                    by_node.setdefault(target.node, []).append(read)
        for node, carried in by_node.items():
            timeout = min(r.timeout for r in carried)
            if len(carried) == 1:
                only = carried[0]
                message: Message = ReplicaRead(only.key)
                self._send(node, message, timeout, self._on_batched_read, only.tracker, only)
            else:
                message = ReplicaReadMany([r.key for r in carried])
                self._send(node, message, timeout, self._on_reads_result, None, carried)
        try:
            local = self._index.read_many([read.key for read in reads])
        except StorageFailure as exc:  # as ``get`` does: the reads fail with the error
            for read in reads:
                read.answered = True
                group.answer(read.position, reply_for_error(exc))
        else:
            for read in reads:
                read.tracker.record_reply(self._node_id, local.get(read.key))
                self._settle_read(read)
        await self._until_answered(reads, group, self._answer_read)

    def _on_batched_read(
        self, node: str, result: outcome.Outcome, tracker: ReadQuorum, read: _Read
    ) -> None:
        self._record_read_result(node, read.key, result, tracker)
        read.remaining -= 1
        self._settle_read(read)
        if read.remaining == 0 and read.answered:
            self._repair_if_stale(read.key, tracker)

    def _on_reads_result(
        self, node: str, result: outcome.Outcome, _tracker: None, carried: list[_Read]
    ) -> None:
        """One replica's answer to a ReplicaReadMany, shared out to the reads it carried."""
        answer = _unwrapped(result)
        records: list[bytes | None] | None = None
        if isinstance(answer, ReplicaReadManyReply) and len(answer.records) == len(carried):
            records = answer.records
        for position, read in enumerate(carried):
            if records is None:
                failure = (
                    answer
                    if isinstance(answer, OSError | P2PIndexError)
                    else InvalidRequest(f"unexpected reply {type(answer).__name__} to reads")
                )
                single: outcome.Outcome = outcome.Error(failure)
            else:
                single = outcome.Value(ReplicaReadReply(records[position]))
            self._on_batched_read(node, single, read.tracker, read)

    def _settle_read(self, read: _Read) -> None:
        if read.tracker.outcome is not Outcome.PENDING or read.remaining == 0:
            self._answer_read(read)

    def _answer_read(self, read: _Read) -> None:
        if read.answered:
            return
        read.answered = True
        if read.remaining == 0:
            self._repair_if_stale(read.key, read.tracker)
        try:
            reply = self._read_reply(read.tracker)
        except P2PIndexError as exc:
            reply = reply_for_error(exc)
        assert read.group is not None
        read.group.answer(read.position, reply)

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
        except ValueError:
            raise InvalidRequest(
                "the context is not one p2pindex gave out: pass the context a get or put "
                "returned, unmodified"
            ) from None
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

    def _coordinates(
        self, request: PutRequest | GetRequest | DeleteRequest, targets: list[Target]
    ) -> bool:
        """Whether this node coordinates ``request`` itself rather than relaying it: only
        for keys it is a target of, and not while it leaves (draining), unless the request
        was already relayed here (relaying it again would bounce it between nodes)."""
        if not any(t.node == self._node_id for t in targets):
            return False
        if not self._view.leaving or request.forwarded:
            return True
        return all(t.node == self._node_id for t in targets)  # nobody else to relay it to

    def _targets(
        self, key: bytes, n: int, strict: bool, required: int, *, read: bool = False
    ) -> list[Target]:
        if not self._view.membership_confirmed:
            raise NotReady(
                f"node {self._node_id} has not reached any member since it started, so it "
                "does not know the whole ring yet; another node can serve this request"
            )
        ring = self._view.ring
        usable = self._view.readable if read else self._view.usable
        targets = select_targets(ring, key, n, usable, strict=strict)
        if len(targets) < required:
            raise Unavailable(required, len(targets), _too_few(len(ring.nodes), n, strict))
        return targets

    async def _forward(
        self,
        request: PutRequest | GetRequest | DeleteRequest,
        targets: list[Target],
        timeout: float,
    ) -> Message:
        """Relay a request that reached a node outside the key's targets to one of them.

        A target that cannot be reached (an OSError from the peer pool: nothing was sent)
        is skipped for the next. Once the relayed request went out, whatever happens next
        (a broken link, the deadline passing while a target holds it) may follow a write
        that target applied, so only a relay that every target refused is definite.
        """
        if request.forwarded:
            raise Unavailable(
                0,
                0,
                "the node this request was relayed to does not hold the key either; the "
                "membership views disagree, retry shortly",
            )
        trace = trace_seam.current()
        relayed = _as_forwarded(request, trace=trace is not None)
        refused: list[str] = []
        with trio.move_on_after(timeout):
            for target in targets:
                try:
                    if trace is not None:
                        trace.step("relayed", node=target.node)
                    self._stats.incr("requests.forwarded")
                    reply = await self._peers.request(
                        self._view.address_of(target.node), relayed, timeout
                    )
                    if trace is not None:
                        remote = getattr(reply, "trace", None) or {}
                        trace.step("relay_answered", node=target.node, steps=remote.get("steps"))
                    return reply
                except OSError as exc:  # not connected: this target got nothing
                    refused.append(f"{target.node} ({exc})")
            tried = "; ".join(refused)
            raise Unavailable(1, 0, f"no replica could be reached to relay to: {tried}")
        raise Timeout(f"no replica answered the relayed request within {timeout:g}s")

    def _note_failure(self, node: str, error: BaseException) -> None:
        """A refused connection is evidence the node is down: skip it until SWIM decides."""
        self._stats.incr(f"replica.errors.{type(error).__name__}")
        if isinstance(error, OSError):
            self._view.note_unreachable(node)


@dataclass(slots=True, eq=False)
class _Delivery:
    """Where the outcome of one replica request goes (see ``Coordinator._send``).

    A class rather than a closure: the retry hands the callback to a new request, and a
    closure that names itself is a reference cycle, which made every replica request (and
    the writes and quorums it carries) garbage only the cyclic collector could free.
    """

    coordinator: Coordinator
    node: str
    address: Address
    message: Message
    timeout: float
    on_result: Callable[..., None]
    tracker: WriteQuorum | ReadQuorum | None
    round_: object
    retried: bool = False

    def __call__(self, result: outcome.Outcome) -> None:
        lost = isinstance(result, outcome.Error) and isinstance(result.error, ConnectionLost)
        if lost and not self.retried:
            self.retried = True
            coordinator = self.coordinator
            coordinator._stats.incr("replica.retries")
            coordinator._spawn(
                coordinator._send_connecting, self.address, self.message, self.timeout, self
            )
            return
        self.on_result(self.node, result, self.tracker, self.round_)


def _record_size(write: _Write) -> int:
    return len(write.record) + len(write.request.key)


def _too_few(members: int, n: int, strict: bool) -> str:
    """Why a request has too few targets. A cluster smaller than N still serves (every
    member holds every key); only a level needing more replies than it has members fails."""
    if members < n:
        return (
            f"the cluster has {members} member(s), fewer than N={n}; a lower consistency "
            "level is served"
        )
    kind = "primary replicas" if strict else "replicas or fallbacks"
    return f"too few {kind} are up"


def _describe(targets: list[Target]) -> list[dict[str, str | None]]:
    """The targets of a request as a trace shows them (fallbacks name whom they stand in for)."""
    return [{"node": t.node, "hint_for": t.hint_for} for t in targets]


def _unwrapped(result: outcome.Outcome) -> Message | OSError | P2PIndexError:
    """A replica's reply, or the failure that stood in for it (an outcome unwraps once)."""
    try:
        return result.unwrap()
    except (OSError, P2PIndexError) as exc:
        return exc


def _as_forwarded(
    request: PutRequest | GetRequest | DeleteRequest, *, trace: bool = False
) -> Message:
    """The request as relayed; ``trace`` asks the relay's coordinator for its steps too."""
    if isinstance(request, PutRequest):
        return PutRequest(
            request.key,
            request.value,
            request.context,
            request.consistency,
            request.timeout_ms,
            request.strict,
            True,
            request.overwrite,
            request.index,
            trace,
        )
    if isinstance(request, DeleteRequest):
        return DeleteRequest(
            request.key,
            request.context,
            request.consistency,
            request.timeout_ms,
            request.strict,
            True,
            trace,
        )
    return GetRequest(
        request.key, request.consistency, request.timeout_ms, request.strict, True, trace
    )


def data_fast_path(
    coordinator: Coordinator,
    replica: ReplicaService,
    *,
    node_peer: bool,
    authorize: Callable[[Message], None] | None = None,
) -> FastPath:
    """What a connection serves without a task per request (see ``net.channel.FastPath``).

    Replica requests are served only for node peers; a client's writes are batched too,
    each first passing ``authorize`` (which raises for a request the peer may not send).
    """
    answer: dict[type[Message], Callable[[Message], Message]] = {}
    batch: dict[type[Message], BatchHandler] = {}
    if node_peer:
        replica_path = replica.fast_path()
        answer.update(replica_path.answer)
        batch.update(replica_path.batch)
    reads = coordinator.get_batch
    batch[GetRequest] = reads if authorize is None else _authorized(authorize, reads)
    writes = coordinator.put_batch
    batch[PutRequest] = batch[DeleteRequest] = (
        writes if authorize is None else _authorized(authorize, writes)
    )
    return FastPath(answer, batch)


def _authorized(authorize: Callable[[Message], None], serve: BatchHandler) -> BatchHandler:
    async def serve_authorized(messages: list[Message], respond: Respond) -> None:
        allowed: list[int] = []
        for position, message in enumerate(messages):
            try:
                authorize(message)
            except P2PIndexError as exc:
                respond(position, reply_for_error(exc))
            else:
                allowed.append(position)
        if allowed:
            await serve(
                [messages[position] for position in allowed],
                lambda index, reply: respond(allowed[index], reply),
            )

    return serve_authorized
