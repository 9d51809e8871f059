"""The coordinator: runs client requests (put, get, delete) at the consistency asked for.

The coordinator of a write is one of the key's replicas (or a fallback standing in for one),
so the version actor is always a node that holds the data. It computes the new version,
commits it locally first (a version leaves this node only once its dot is durable here),
then sends it to the other replicas and answers after W acknowledgements. Reads take the
value from this node's own copy and ask the other targets for a digest of theirs
(``core.digest_read``), fetching a replica's record only when its digest differs; they
answer after R replies and repair stale replicas in the background once the stragglers have
answered. A read at ONE touches this node alone and falls back to the other replicas, one at
a time, only when that fails.

There is one pipeline: requests that arrived together are planned, then coordinated
together, each answered the moment its round is decided; a single request is a batch of
one. When to answer is decided by the pure ``core.quorum.Round`` of each request; this
module only moves bytes and time.

Failure reporting follows the error tree: too few usable targets before anything is sent is
``Unavailable`` (definite); a deadline passing or a quorum lost after the write started is
indeterminate (``Timeout`` / ``QuorumFailed``): some replica may hold the write.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import outcome
import trio

from p2pindex.config import Limits, NodeConfig
from p2pindex.core.batching import sized_groups
from p2pindex.core.digest_read import Verdict, plan_read, verdict, version_digest
from p2pindex.core.placement import Target
from p2pindex.core.quorum import Outcome, ReadQuorum, Round, WriteQuorum, next_deadline
from p2pindex.errors import (
    InvalidRequest,
    Overloaded,
    P2PIndexError,
    StorageFailure,
    Timeout,
    Unavailable,
)
from p2pindex.net.channel import Respond
from p2pindex.node import read_first, relay, replies
from p2pindex.node import request_plan as plan
from p2pindex.node import trace as trace_seam
from p2pindex.node.in_flight import (
    Answer,
    Answers,
    ClientRequest,
    InFlight,
    record_size,
    replying,
    value_of,
)
from p2pindex.node.index_terms import write_terms
from p2pindex.node.peers import PeerPool
from p2pindex.node.replica import IndexManager
from p2pindex.node.replica_calls import ReplicaCalls, unwrapped
from p2pindex.node.stats import StatisticsStore
from p2pindex.node.trace import RequestTrace
from p2pindex.types import Address
from p2pindex.wire import messages as wm

BATCH_BYTES = Limits().max_frame // 2
"""Most record bytes one ReplicaWriteMany carries (the rest go in further messages)."""


class ClusterView(plan.TargetView, Protocol):
    """What the coordinator needs to know about the cluster, supplied by the node."""

    def address_of(self, node_id: str) -> Address: ...

    def note_unreachable(self, node_id: str) -> None: ...

    def note_behind(self, node_id: str) -> None:
        """``node_id`` did not take a write it was sent (anti-entropy visits it first)."""
        ...

    def storage_failed(self, error: StorageFailure) -> None: ...

    async def keep_hint(self, target: str, key: bytes, record: bytes) -> None:
        """Durably keep ``record`` for ``target`` (hinted handoff delivers it later)."""
        ...


Aside = Callable[[], Awaitable[wm.Message]]
Plan = Callable[[int, Any, "RequestTrace | None"], "InFlight | Aside"]
"""Plans one request: coordinated here (a ``InFlight``), or served aside (a relay, or a
write that reads first) by the returned coroutine function."""


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
        self._calls = ReplicaCalls(
            node_id,
            view.address_of,
            view.note_unreachable,
            peers,
            index,
            stats,
            spawn,
            config.replica_timeout,
        )

    async def put(self, request: wm.PutRequest | wm.DeleteRequest) -> wm.Message:
        """Coordinate one write (a batch of one); a failure is raised."""
        return await _one(request, self._serve_writes)

    async def get(self, request: wm.GetRequest) -> wm.Message:
        """Coordinate one read (a batch of one); a failure is raised."""
        return await _one(request, self._serve_reads)

    async def put_batch(self, requests: list[wm.Message], respond: Respond) -> None:
        """Coordinate writes that arrived together with one local commit for all of them
        and no task, cancel scope or event per write; each is answered through ``respond``
        the moment its quorum is decided, so a slow replica of one key holds back no other."""
        await self._serve_writes(requests, replying(respond))

    async def get_batch(self, requests: list[wm.Message], respond: Respond) -> None:
        """Coordinate reads that arrived together, each answered once its quorum is decided."""
        await self._serve_reads(requests, replying(respond))

    async def _serve_writes(self, requests: Sequence[wm.Message], answer: Answer) -> None:
        await self._serve(requests, answer, self._plan_write, self._coordinate_writes)

    async def _serve_reads(self, requests: Sequence[wm.Message], answer: Answer) -> None:
        await self._serve(requests, answer, self._plan_read, self._coordinate_reads)

    async def _serve(
        self,
        requests: Sequence[wm.Message],
        answer: Answer,
        plan_one: Plan,
        coordinate: Callable[[list[InFlight], Answer], Awaitable[None]],
    ) -> None:
        """Plan every request of a batch; coordinate the planned ones together. A request
        served aside (relayed, or read first) runs on its own, a refused one is answered
        at once.

        Only a batch with requests served aside opens a nursery: a client routing by the
        ring sends almost every request to a replica, and a nursery per batch costs CPU.
        """
        trace = trace_seam.current()  # one look per batch: only a single request has one
        planned: list[InFlight] = []
        aside: list[tuple[int, Aside]] = []
        for position, request in enumerate(requests):
            try:
                item = plan_one(position, request, trace)
            except P2PIndexError as exc:
                answer(position, exc)
                continue
            if isinstance(item, InFlight):
                planned.append(item)
            else:
                aside.append((position, item))
        if not aside:
            if planned:
                await coordinate(planned, answer)
            return
        async with trio.open_nursery() as nursery:
            for position, serve in aside:
                nursery.start_soon(_answer_aside, serve, position, answer)
            if planned:
                await coordinate(planned, answer)

    # --- planning ---------------------------------------------------------------------------

    def _plan_write(
        self, position: int, request: wm.PutRequest | wm.DeleteRequest, trace: RequestTrace | None
    ) -> InFlight | Aside:
        terms = write_terms(request, self._config.term_limits, self._stats)
        n = self._config.n_replicas
        needed = plan.required(request.consistency, n)
        context = plan.context(request.context, request.key)
        targets, timeout, relayed = self._place(request, needed, trace)
        if relayed is not None:
            return relayed
        if read_first.needs_read_first(request):
            if request.context is not None:
                raise InvalidRequest("a put that overwrites takes no context; drop one of them")
            holders = min(n, len(self._view.ring.nodes))
            unseen = read_first.may_leave_unseen(needed, targets, holders)
            if trace is not None:  # the read's and the write's own steps follow
                trace.step("read_first", delete=isinstance(request, wm.DeleteRequest))
            return functools.partial(
                read_first.read_then_write, request, self.get, self.put, unseen
            )
        quorum = WriteQuorum([t.node for t in targets], needed)
        round_ = Round(quorum, len(targets) - 1, trio.current_time() + timeout)
        return InFlight(position, request, targets, round_, timeout, trace, context, terms)

    def _plan_read(
        self, position: int, request: wm.GetRequest, trace: RequestTrace | None
    ) -> InFlight | Aside:
        needed = plan.required(request.consistency, self._config.n_replicas)
        targets, timeout, relayed = self._place(request, needed, trace, read=True)
        if relayed is not None:
            return relayed
        nodes = [t.node for t in targets]
        order = self._calls.rank(nodes) if needed == 1 else nodes  # only ONE has spares
        read_plan = plan_read(nodes, needed, self._node_id, order)
        round_ = Round(
            ReadQuorum(nodes, needed), len(read_plan.digests), trio.current_time() + timeout
        )
        read = InFlight(position, request, targets, round_, timeout, trace, plan=read_plan)
        read.spares = read_plan.spares
        return read

    def _place(
        self, request: ClientRequest, needed: int, trace: RequestTrace | None, *, read: bool = False
    ) -> tuple[list[Target], float, Aside | None]:
        """The request's targets and timeout, and its relay when this node does not
        coordinate it."""
        timeout = plan.timeout(request.timeout_ms, self._config.request_timeout)
        n, key, strict = self._config.n_replicas, request.key, request.strict
        try:
            targets = plan.targets(self._view, self._node_id, key, n, strict, needed, read=read)
        except Unavailable as refused:
            if trace is not None:  # else a traced refusal shows no step at all
                trace.step("unavailable", required=needed, reason=str(refused))
            raise
        if trace is not None:
            trace.step("targets", required=needed, nodes=plan.describe(targets))
        if plan.coordinates(self._view, self._node_id, request, targets):
            return targets, timeout, None
        others = {t.node: t for t in targets if t.node != self._node_id}
        ranked = [others[node] for node in self._calls.rank(list(others))]  # the fastest first
        relaying = (request, ranked, timeout, self._peers, self._view.address_of, self._stats)
        attempt = self._config.replica_timeout
        return targets, timeout, functools.partial(relay.forward, *relaying, attempt=attempt)

    # --- writes -----------------------------------------------------------------------------

    async def _coordinate_writes(self, writes: list[InFlight], answer: Answer) -> None:
        made = self._index.new_versions(
            [(w.request.key, w.context, value_of(w.request), w.terms) for w in writes]
        )
        started: list[InFlight] = []
        for write, version in zip(writes, made, strict=True):
            if isinstance(version, InvalidRequest):  # sibling, record or context limits
                answer(write.position, version)
            else:
                write.obj, write.record = version
                started.append(write)
        if not started:
            return
        answers = Answers(len(started), answer)
        for write in started:
            write.answers = answers
        # Our own commit comes first: a version leaves this node only once its dot is
        # durable here, so a failed commit or a crash can never let this node hand the
        # same (actor, counter) to a different value later. Nothing was sent if it fails.
        with trio.move_on_at(max(w.round.deadline for w in started)):
            try:
                await self._index.commit_many([(w.request.key, w.record) for w in started])
                kept = await self._keep_own_hints(started)
            except StorageFailure as exc:
                self._view.storage_failed(exc)
                for write in started:
                    self._stats.incr("writes.local_failures")
                    failure = replies.local_commit_failed(exc, write.round.quorum.required)
                    answer(write.position, failure)
                return
            self._replicate(kept)
        await self._until_answered(started, answers)

    async def _keep_own_hints(self, writes: list[InFlight]) -> list[InFlight]:
        """A coordinator standing in for an unusable primary keeps a hint for it, as a remote
        fallback does on a ReplicaWrite; without one the write would sit on a node outside
        the key's preference list, where neither repair nor anti-entropy ever finds it.
        Returns the writes to replicate: one whose hint store is full is answered here (its
        version is committed on this node, so the failure is indeterminate), and the node
        serves on, since a spent hint budget is no storage failure."""
        kept: list[InFlight] = []
        for write in writes:
            try:
                for target in write.targets:
                    if target.node == self._node_id and target.hint_for is not None:
                        key, record = write.request.key, write.record
                        await self._view.keep_hint(target.hint_for, key, record)
            except Overloaded as full:
                if write.round.answer() and write.answers is not None:
                    required = write.round.quorum.required
                    write.answers.give(write.position, replies.hint_refused(full, required))
                continue
            kept.append(write)
        return kept

    def _replicate(self, writes: list[InFlight]) -> None:
        """Send the committed writes to their other targets: what one replica gets from
        this batch travels as one ReplicaWriteMany (one frame, one commit, one ack there);
        a hinted write to a fallback goes alone, since the fallback must keep its hint."""
        by_node: dict[str, list[InFlight]] = {}
        for write in writes:
            write.round.quorum.record_ack(self._node_id)
            if write.trace is not None:
                write.trace.step("committed_locally", node=self._node_id)
            for target in write.targets:
                if target.node == self._node_id:
                    continue
                if target.hint_for is None:
                    by_node.setdefault(target.node, []).append(write)
                else:
                    hinted = wm.ReplicaWrite(write.request.key, write.record, target.hint_for)
                    self._calls.send(target.node, hinted, write.timeout, self._on_writes, [write])
        for node, carried in (
            (node, group)  # a frame's worth each: a peer closes a link on a larger one
            for node, all_carried in by_node.items()
            for group in sized_groups(all_carried, record_size, BATCH_BYTES)
        ):
            message: wm.Message
            if len(carried) == 1:
                message = wm.ReplicaWrite(carried[0].request.key, carried[0].record)
            else:
                message = wm.ReplicaWriteMany([(w.request.key, w.record) for w in carried])
            self._calls.send(
                node, message, min(w.timeout for w in carried), self._on_writes, carried
            )
        for write in writes:
            if write.round.ready():
                self._answer(write)

    def _on_writes(self, node: str, result: outcome.Outcome, carried: list[InFlight]) -> None:
        """One replica's answer for every write its message carried."""
        answer = unwrapped(result)
        for write in carried:
            if write.trace is not None and not write.round.answered:  # the trace ends at "decided"
                write.trace.replica(node, result)
            quorum = write.round.quorum
            if isinstance(answer, wm.ReplicaAck):
                quorum.record_ack(node)
            else:
                self._stats.incr("replica.write_failures")
                if not isinstance(answer, Timeout):
                    # A replica silent until the deadline has not refused: were the quorum
                    # then short, the write timed out (``Timeout``), it did not fail.
                    quorum.record_failure(node)
                self._view.note_behind(node)
                if isinstance(answer, OSError | P2PIndexError):
                    self._calls.note_failure(node, answer)
            if write.round.heard():
                self._answer(write)

    # --- reads ------------------------------------------------------------------------------

    async def _coordinate_reads(self, reads: list[InFlight], answer: Answer) -> None:
        answers = Answers(len(reads), answer)
        for read in reads:
            read.answers = answers
        try:
            local = self._index.read_records([read.request.key for read in reads])
        except StorageFailure as exc:
            for read in reads:
                if read.spares:  # a read at ONE falls back to another replica
                    read.round.quorum.record_failure(self._node_id)
                    self._fall_back(read)
                else:  # the read fails with the error
                    read.round.answer()
                    answers.give(read.position, exc)
        else:
            # What one replica is asked by this batch travels as one ReplicaDigestMany.
            by_node: dict[str, list[InFlight]] = {}
            for read, value in zip(reads, local, strict=True):
                assert read.plan is not None and read.plan.value == self._node_id
                read.value = value
                read.round.quorum.record_reply(self._node_id, None if value is None else value[1])
                if read.plan.digests:
                    read.digest = version_digest(
                        read.request.key, None if value is None else value[0]
                    )
                for node in read.plan.digests:
                    by_node.setdefault(node, []).append(read)
            for node, carried in by_node.items():
                message = wm.ReplicaDigestMany([r.request.key for r in carried])
                timeout = min(r.timeout for r in carried)
                self._calls.send(node, message, timeout, self._on_digests, carried)
            for read in reads:
                if read.round.ready():
                    self._answer(read)
        await self._until_answered(reads, answers)

    def _on_digests(self, node: str, result: outcome.Outcome, carried: list[InFlight]) -> None:
        """One replica's digests for the reads its ReplicaDigestMany carried: one equal to
        this node's record counts as that replica's copy; any other answer, or a reply
        that is not a digest for each key, is settled by fetching the replica's record."""
        answer = unwrapped(result)
        digests: list[bytes | None] | None = None
        if isinstance(answer, wm.ReplicaDigestManyReply) and len(answer.digests) == len(carried):
            digests = answer.digests
        elif not isinstance(answer, OSError | P2PIndexError):
            self._stats.incr("reads.digest_replies_unusable")
        fetch: list[InFlight] = []
        for position, read in enumerate(carried):
            if read.trace is not None and not read.round.answered:  # the trace ends at "decided"
                read.trace.replica(node, result)
            if isinstance(answer, OSError | P2PIndexError):
                self._read_failed(node, read, answer)
            else:
                if digests is None or verdict(read.digest, digests[position]) is Verdict.FETCH:
                    fetch.append(read)  # heard once the fetch is answered
                    continue
                value = read.value
                read.round.quorum.record_reply(node, None if value is None else value[1])
            self._heard(read)
        if fetch:
            self._stats.incr("reads.digest_fetches", len(fetch))
            message: wm.Message
            if len(fetch) == 1:
                message = wm.ReplicaRead(fetch[0].request.key)
            else:
                message = wm.ReplicaReadMany([r.request.key for r in fetch])
            self._calls.send(node, message, min(r.timeout for r in fetch), self._on_reads, fetch)

    def _on_reads(self, node: str, result: outcome.Outcome, carried: list[InFlight]) -> None:
        """One replica's answer to a ReplicaRead or ReplicaReadMany (a fetch after a digest
        differed, or a spare's read), shared out to the reads it carried."""
        answer = unwrapped(result)
        records: list[bytes | None] | None = None
        if isinstance(answer, wm.ReplicaReadReply) and len(carried) == 1:
            records = [answer.record]
        elif isinstance(answer, wm.ReplicaReadManyReply) and len(answer.records) == len(carried):
            records = answer.records
        for position, read in enumerate(carried):
            if read.trace is not None and not read.round.answered:  # the trace ends at "decided"
                read.trace.replica(node, result)
            if records is not None:
                self._record_read(node, read, records[position])
            elif isinstance(answer, OSError | P2PIndexError):
                self._read_failed(node, read, answer)
            else:
                unexpected = f"unexpected reply {type(answer).__name__} to a replica read"
                self._read_failed(node, read, InvalidRequest(unexpected))
            round_ = read.round
            if read.spares and not round_.answered and round_.quorum.outcome is Outcome.PENDING:
                self._fall_back(read)  # a read at ONE: this replica failed, ask the next
            self._heard(read)

    def _fall_back(self, read: InFlight) -> None:
        """Ask a read's next spare replica for its record (the replica asked failed)."""
        node, *rest = read.spares
        read.spares = tuple(rest)
        read.round.ask()
        self._stats.incr("reads.fallbacks")
        self._calls.send(
            node, wm.ReplicaRead(read.request.key), read.timeout, self._on_reads, [read]
        )

    def _heard(self, read: InFlight) -> None:
        """One replica asked has answered ``read`` (recorded): answer it if that decides
        it, or repair the stale replicas once the last straggler is in."""
        round_ = read.round
        if round_.heard():
            self._answer(read)
        elif round_.answered and round_.all_heard:
            self._calls.repair_if_stale(read.request.key, round_.quorum)

    def _record_read(self, node: str, read: InFlight, record: bytes | None) -> None:
        try:
            obj = None if record is None else self._index.decode(read.request.key, record)
        except ValueError as exc:
            self._read_failed(node, read, exc)
        else:
            read.round.quorum.record_reply(node, obj)

    def _read_failed(self, node: str, read: InFlight, error: BaseException) -> None:
        self._stats.incr("replica.read_failures")
        read.round.quorum.record_failure(node)
        self._calls.note_failure(node, error)

    # --- rounds -----------------------------------------------------------------------------

    def _answer(self, item: InFlight) -> None:
        """Answer ``item``'s caller as its round stands (decided, or out of time), once."""
        round_ = item.round
        if not round_.answer():
            return
        quorum = round_.quorum
        reply: wm.Message | P2PIndexError
        try:
            if isinstance(quorum, ReadQuorum):
                if round_.all_heard:
                    self._calls.repair_if_stale(item.request.key, quorum)
                if item.trace is not None:
                    stale = sorted(quorum.stale_replicas()) if quorum.merged is not None else []
                    item.trace.step("decided", **_decided(quorum), read_repair_to=stale)
                reply = replies.read_reply(quorum, item.request.key, self._stats)
            else:
                if item.trace is not None:
                    item.trace.step("decided", **_decided(quorum), acks=quorum.acks)
                assert item.obj is not None
                is_delete = isinstance(item.request, wm.DeleteRequest)
                limits = self._config.limits
                key = item.request.key
                reply = replies.write_reply(quorum, key, item.obj, is_delete, self._stats, limits)
        except P2PIndexError as exc:
            reply = exc
        assert item.answers is not None
        item.answers.give(item.position, reply)

    async def _until_answered(self, items: list[InFlight], answers: Answers) -> None:
        """Wait for the quorums, each until its own deadline; a round whose deadline passed
        (during a commit, or waiting for replicas) is answered as it stands (a timeout)."""
        rounds = [item.round for item in items]
        while True:
            now = trio.current_time()
            for item in items:
                if item.round.expired(now):
                    self._answer(item)
            deadline = next_deadline(rounds)
            if deadline is None:
                return
            with trio.move_on_at(deadline):
                await answers.wait()


async def _one(
    request: ClientRequest, serve: Callable[[Sequence[wm.Message], Answer], Awaitable[None]]
) -> wm.Message:
    """Serve one request as a batch of one; a failure is raised, as a caller of one expects."""
    answers: list[wm.Message | P2PIndexError] = []
    await serve([request], lambda _position, answer: answers.append(answer))
    (answer,) = answers
    if isinstance(answer, P2PIndexError):
        raise answer
    return answer


async def _answer_aside(serve: Aside, position: int, answer: Answer) -> None:
    try:
        reply: wm.Message | P2PIndexError = await serve()
    except P2PIndexError as exc:
        reply = exc
    answer(position, reply)


def _decided(quorum: ReadQuorum | WriteQuorum) -> dict[str, Any]:
    """How a round ended, for its trace: ``timed_out`` when answered at its deadline, and
    the replicas that had not answered by then (not failed: they may yet apply a write),
    which the trace would otherwise never mention, since it ends here."""
    decided = "timed_out" if quorum.outcome is Outcome.PENDING else quorum.outcome.name.lower()
    unanswered = quorum.pending
    return (
        {"outcome": decided, "unanswered": list(unanswered)} if unanswered else {"outcome": decided}
    )
