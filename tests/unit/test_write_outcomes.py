"""What a failed write tells its caller: definite only when nothing can have been applied.

Seeds 24, 110 and 168 of the `ci` simulation caught a relayed write answered ``unavailable``
(definite) although an earlier relay attempt had reached a replica that applied it: the
relay refused by one target, sent to the next, and the deadline passed while that target
held it. These tests drive the real Coordinator over a scripted peer pool.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pindex.config import Limits, NodeConfig
from p2pindex.core import versions
from p2pindex.core.ring import Ring
from p2pindex.core.versions import VersionVector
from p2pindex.errors import (
    ConnectionLost,
    DefiniteError,
    IndeterminateError,
    StorageFailure,
    Unavailable,
)
from p2pindex.node.coordinator import Coordinator
from p2pindex.node.replica import IndexManager, ReplicaService
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage
from p2pindex.types import Address
from p2pindex.wire.messages import (
    DeleteRequest,
    Message,
    PutReply,
    PutRequest,
    ReplicaReadMany,
    ReplicaReadManyReply,
    ReplicaReadSettled,
    ReplicaWrite,
)

NODES = ["n0", "n1", "n2", "n3", "n4"]
TIMEOUT_MS = 2000


class View:
    """The cluster as the coordinator sees it: every node up."""

    membership_confirmed = True

    def __init__(self) -> None:
        self.ring = Ring(NODES)

    def address_of(self, node_id: str) -> Address:
        return Address(node_id, 7000)

    def usable(self, node_id: str) -> bool:
        return True

    def serves_reads(self, node_id: str, key: bytes | None = None) -> bool:
        return True

    def note_unreachable(self, node_id: str) -> None:
        pass

    def storage_failed(self, error: StorageFailure) -> None:
        pass

    async def keep_hint(self, target: str, key: bytes, record: bytes) -> None:
        pass


class ScriptedPeers:
    """A peer pool whose every address behaves as scripted.

    ``refuse``: no connection (OSError, nothing sent); ``hang``: the request is sent and
    never answered; ``lost``: the request is sent and the link breaks; ``ok``: a PutReply.
    """

    def __init__(self, behaviour: dict[str, str]) -> None:
        self.behaviour = behaviour
        self.sent: list[str] = []

    async def request(self, address: Address, message: Message, timeout: float) -> Message:
        what = self.behaviour[address.host]
        await trio.sleep(0.01)
        if what == "refuse":
            raise OSError(111, f"{address} refused the connection")
        self.sent.append(address.host)
        if what == "hang":
            await trio.sleep_forever()
        if what == "lost":
            raise ConnectionLost(f"peer {address}: closed by peer")
        return PutReply(b"", None)


def outsider_key() -> tuple[bytes, tuple[str, ...]]:
    """A key whose replicas leave n0 out, so n0 relays its writes."""
    ring = Ring(NODES)
    for number in range(1000):
        key = f"key-{number}".encode()
        replicas = ring.preference_list(key, 3)
        if "n0" not in replicas:
            return key, replicas
    raise AssertionError("no key left n0 out")


def coordinator(peers: ScriptedPeers) -> Coordinator:
    config = NodeConfig(data_dir=None, listen=Address("n0", 7000), n_replicas=3)
    stats = StatisticsStore()
    index = IndexManager(MemoryStorage(), "n0.e1", Limits(), stats)

    def spawn(*_args: object) -> None:
        raise AssertionError("a relayed write starts no background task")

    return Coordinator("n0", View(), index, peers, config, stats, spawn)  # type: ignore[arg-type]


def put(key: bytes, consistency: str) -> PutRequest:
    return PutRequest(key, b"v", None, consistency, TIMEOUT_MS, False)


@pytest.mark.parametrize("consistency", ["one", "quorum"])
async def test_a_relay_refused_by_one_replica_then_held_by_the_next_is_indeterminate(
    autojump_clock: trio.abc.Clock, consistency: str
) -> None:
    key, replicas = outsider_key()
    peers = ScriptedPeers({replicas[0]: "refuse", replicas[1]: "hang", replicas[2]: "hang"})
    with pytest.raises(IndeterminateError) as caught:
        await coordinator(peers).put(put(key, consistency))
    assert peers.sent == [replicas[1]]
    assert not isinstance(caught.value, DefiniteError)


async def test_a_relay_whose_link_breaks_after_sending_is_indeterminate(
    autojump_clock: trio.abc.Clock,
) -> None:
    key, replicas = outsider_key()
    peers = ScriptedPeers({replicas[0]: "refuse", replicas[1]: "lost", replicas[2]: "refuse"})
    with pytest.raises(IndeterminateError):
        await coordinator(peers).put(put(key, "one"))
    assert peers.sent == [replicas[1]]


async def test_a_relayed_delete_refused_then_held_is_indeterminate(
    autojump_clock: trio.abc.Clock,
) -> None:
    key, replicas = outsider_key()
    peers = ScriptedPeers({replicas[0]: "refuse", replicas[1]: "refuse", replicas[2]: "hang"})
    with pytest.raises(IndeterminateError):
        await coordinator(peers).put(DeleteRequest(key, None, "one", TIMEOUT_MS, False))


async def test_a_relay_that_no_replica_accepted_is_definitely_unavailable(
    autojump_clock: trio.abc.Clock,
) -> None:
    key, replicas = outsider_key()
    peers = ScriptedPeers(dict.fromkeys(replicas, "refuse"))
    with pytest.raises(Unavailable) as caught:
        await coordinator(peers).put(put(key, "quorum"))
    assert peers.sent == []
    assert "could be reached" in str(caught.value)


async def test_a_relay_the_second_replica_answers_succeeds(autojump_clock: trio.abc.Clock) -> None:
    key, replicas = outsider_key()
    peers = ScriptedPeers({replicas[0]: "refuse", replicas[1]: "ok", replicas[2]: "hang"})
    reply = await coordinator(peers).put(put(key, "quorum"))
    assert isinstance(reply, PutReply)
    assert peers.sent == [replicas[1]]


def test_the_scripted_ring_really_relays() -> None:
    """Negative control for the fixtures: n0 is outside the key's replicas."""
    _key, replicas = outsider_key()
    assert "n0" not in replicas and len(set(replicas)) == 3


# --- a replica acknowledges only what is committed -----------------------------------------


class GatedStorage(MemoryStorage):
    """Writes are visible at once and commit when ``release`` says; a failed commit rolls
    the write back, as the Storage protocol requires."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[tuple[trio.Event, list[bool]]] = []

    async def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        before = {key: self.get(key) for key, _record in items}
        self.put_many_now(items)
        gate, verdict = trio.Event(), [True]
        self.gates.append((gate, verdict))
        await gate.wait()
        if not verdict[0]:
            for key, record in before.items():
                if record is None:
                    self.remove_now(key)
                else:
                    self.put_many_now([(key, record)])
            raise StorageFailure("simulated fsync error")

    def release(self, index: int, *, ok: bool) -> None:
        gate, verdict = self.gates[index]
        verdict[0] = ok
        gate.set()


def replica_record(value: bytes) -> bytes:
    return versions.encode_object(versions.update(None, VersionVector(), "n2.e1", value))


async def test_a_duplicate_replica_write_waits_for_the_pending_commit_that_holds_it() -> None:
    """Seen while auditing seed 146: a replica write arriving twice (a retry on a fresh
    connection, a duplicated message, a repair) found its record pending and was
    acknowledged at once; when the pending commit then failed, the ack outlived the data."""
    storage = GatedStorage()
    index = IndexManager(storage, "n1.e1", Limits(), StatisticsStore())
    record = replica_record(b"v")
    item = (b"k", record, versions.decode_object(record))
    acked: list[str] = []

    async def write(name: str) -> None:
        try:
            await index.apply_many([item])
        except StorageFailure:
            acked.append(f"{name} failed")
        else:
            acked.append(f"{name} acked")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(write, "duplicate")
        await trio.testing.wait_all_tasks_blocked()
        assert acked == []  # the duplicate must not be acknowledged before a commit
        storage.release(0, ok=False)
        await trio.testing.wait_all_tasks_blocked()
        assert acked == ["first failed"]
        storage.release(1, ok=True)  # the duplicate stored the record itself
    assert acked == ["first failed", "duplicate acked"]
    assert storage.get(b"k") == record


async def test_a_write_already_committed_is_acknowledged_without_a_commit() -> None:
    storage = GatedStorage()
    index = IndexManager(storage, "n1.e1", Limits(), StatisticsStore())
    record = replica_record(b"v")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(index.apply, b"k", versions.decode_object(record))
        await trio.testing.wait_all_tasks_blocked()
        storage.release(0, ok=True)
    await index.apply(b"k", versions.decode_object(record))
    assert len(storage.gates) == 1


# --- the reaper confirms only what is committed ------------------------------------------


def replica_on(storage: MemoryStorage) -> ReplicaService:
    stats = StatisticsStore()
    index = IndexManager(storage, "n1.e1", Limits(), stats)
    hints = type("Hints", (), {"keep": None})()
    return ReplicaService(
        index, hints, stats, degraded=lambda: None, storage_failed=lambda _exc: None
    )


@pytest.mark.parametrize("commits", [True, False])
async def test_a_settled_read_answers_only_once_the_staged_tombstone_is_committed_or_gone(
    commits: bool,
) -> None:
    """A replica answers ordinary reads with a staged record; the reaper deletes on the
    strength of its answer, so its read must not see a tombstone a crash or a failed commit
    can still take back (the replica would keep the older value, the others reap theirs)."""
    storage = GatedStorage()
    replica = replica_on(storage)
    live = replica_record(b"v")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica.serve, ReplicaWrite(b"k", live))
        await trio.testing.wait_all_tasks_blocked()
        storage.release(0, ok=True)
    written = versions.decode_object(live)
    tombstone = versions.encode_object(versions.update(written, written.clock, "n2.e1", None))
    answers: list[Message] = []

    async def settled_read() -> None:
        answers.append(await replica.serve(ReplicaReadSettled([b"k", b"absent"])))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica.serve, ReplicaWrite(b"k", tombstone))
        await trio.testing.wait_all_tasks_blocked()
        staged = await replica.serve(ReplicaReadMany([b"k"]))
        assert staged == ReplicaReadManyReply([tombstone])  # what a coordinator may see
        nursery.start_soon(settled_read)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []  # not while the commit is in flight
        storage.release(1, ok=commits)
    assert answers == [ReplicaReadManyReply([tombstone if commits else live, None])]
