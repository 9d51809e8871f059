"""The simulation engine with small fake endpoints: network faults, disk durability, clocks.

Every test runs under a MockClock (virtual time), so timeouts and partitions of many seconds
cost nothing. The node is not involved: two tasks exchange bytes over SimTransport.
"""

from __future__ import annotations

import errno
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from p2pindex.errors import StorageFailure
from p2pindex.sim.determinism import EPOCH, SimWallClock, Trace
from p2pindex.sim.disk import SimDisk
from p2pindex.sim.faults import DiskMode
from p2pindex.sim.network import DatagramFaults, Delay, DelayKind, SimNetwork, SimTransport
from p2pindex.types import Address

A = Address("n1", 7000)
B = Address("n2", 7000)
C = Address("n3", 7000)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@asynccontextmanager
async def network(seed: int = 1, **options: object) -> AsyncIterator[SimNetwork]:
    net = SimNetwork(random.Random(seed), Trace(), **options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        yield net
        nursery.cancel_scope.cancel()


async def echo(stream: trio.abc.Stream, peer: Address) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def serve_echo(nursery: trio.Nursery, transport: SimTransport) -> None:
    await nursery.start(transport.serve, echo)


# --- streams ----------------------------------------------------------------------------------


async def test_stream_round_trip_takes_the_link_delay(autojump_clock: object) -> None:
    delay = Delay(DelayKind.CONSTANT, 0.01, 0.01)
    async with network(delay=delay) as net, trio.open_nursery() as nursery:
        client, server = net.transport_for(A), net.transport_for(B)
        await serve_echo(nursery, server)
        stream = await client.connect(B)
        start = trio.current_time()
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"
        assert trio.current_time() - start == pytest.approx(0.02, abs=0.0021)
        nursery.cancel_scope.cancel()


async def test_stream_keeps_order_under_random_delays(autojump_clock: object) -> None:
    delay = Delay(DelayKind.PARETO, 0.001, 0.05, shape=1.5)
    async with network(seed=3, delay=delay) as net, trio.open_nursery() as nursery:
        received = bytearray()

        async def collect(stream: trio.abc.Stream, peer: Address) -> None:
            while data := await stream.receive_some():
                received.extend(data)

        client, server = net.transport_for(A), net.transport_for(B)
        await nursery.start(server.serve, collect)
        stream = await client.connect(B)
        expected = b"".join(i.to_bytes(2, "big") for i in range(500))
        for i in range(500):
            await stream.send_all(i.to_bytes(2, "big"))
        await stream.aclose()
        with trio.fail_after(60):
            while len(received) < len(expected):
                await trio.sleep(0.1)
        assert bytes(received) == expected
        nursery.cancel_scope.cancel()


async def test_connect_across_a_partition_fails_with_unreachable(autojump_clock: object) -> None:
    async with network() as net, trio.open_nursery() as nursery:
        client, server = net.transport_for(A), net.transport_for(B)
        await serve_echo(nursery, server)
        net.block("p", [("n2", "n1")])
        with pytest.raises(OSError) as info:
            await client.connect(B)
        assert info.value.errno == errno.EHOSTUNREACH
        net.clear("p")
        stream = await client.connect(B)
        await stream.send_all(b"x")
        assert await stream.receive_some() == b"x"
        nursery.cancel_scope.cancel()


async def test_connect_to_a_host_without_listener_is_refused(autojump_clock: object) -> None:
    async with network() as net:
        client = net.transport_for(A)
        net.transport_for(B)
        with pytest.raises(ConnectionRefusedError):
            await client.connect(B)
        with pytest.raises(ConnectionRefusedError):
            await client.connect(Address("nowhere", 1))


async def test_short_partition_stalls_a_stream_then_it_resumes(autojump_clock: object) -> None:
    async with network(stream_break_after=15.0) as net, trio.open_nursery() as nursery:
        client, server = net.transport_for(A), net.transport_for(B)
        await serve_echo(nursery, server)
        stream = await client.connect(B)
        net.block("p", [("n1", "n2"), ("n2", "n1")])
        await stream.send_all(b"held")
        with trio.move_on_after(5) as waited:
            await stream.receive_some()
        assert waited.cancelled_caught
        net.clear("p")
        assert await stream.receive_some() == b"held"
        nursery.cancel_scope.cancel()


async def test_long_partition_breaks_the_sender_like_a_tcp_timeout(autojump_clock: object) -> None:
    async with network(stream_break_after=10.0) as net, trio.open_nursery() as nursery:
        client, server = net.transport_for(A), net.transport_for(B)
        await serve_echo(nursery, server)
        stream = await client.connect(B)
        net.block("p", [("n1", "n2")])
        start = trio.current_time()
        await stream.send_all(b"lost")
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        assert 10.0 <= trio.current_time() - start < 10.1
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"more")
        nursery.cancel_scope.cancel()


async def test_one_way_cut_of_acks_still_times_the_sender_out(autojump_clock: object) -> None:
    got: list[bytes] = []

    async def sink(stream: trio.abc.Stream, peer: Address) -> None:
        while data := await stream.receive_some():
            got.append(data)

    async with network(stream_break_after=5.0) as net, trio.open_nursery() as nursery:
        client, server = net.transport_for(A), net.transport_for(B)
        await nursery.start(server.serve, sink)
        stream = await client.connect(B)
        net.block("p", [("n2", "n1")])
        await stream.send_all(b"arrives")
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        assert got == [b"arrives"], "data crosses the open direction; only the acks are cut"
        nursery.cancel_scope.cancel()


async def test_crash_gives_the_peer_end_of_file_and_resets_later_sends(
    autojump_clock: object,
) -> None:
    async with network() as net, trio.open_nursery() as nursery:
        client, server = net.transport_for(A), net.transport_for(B)
        accepted: list[trio.abc.Stream] = []

        async def hold(stream: trio.abc.Stream, peer: Address) -> None:
            accepted.append(stream)
            await trio.sleep_forever()

        await nursery.start(server.serve, hold)
        stream = await client.connect(B)
        await trio.sleep(1)
        net.crash("n2")
        assert await stream.receive_some() == b""
        await stream.send_all(b"into the void")
        await trio.sleep(1)
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"again")
        with pytest.raises(ConnectionRefusedError):
            await client.connect(B)
        restarted = net.transport_for(B)
        await serve_echo(nursery, restarted)
        fresh = await client.connect(B)
        await fresh.send_all(b"back")
        assert await fresh.receive_some() == b"back"
        nursery.cancel_scope.cancel()


async def test_a_process_killed_while_starting_is_cancelled_not_failed(
    autojump_clock: object,
) -> None:
    """The simulator kills a starting node by cancelling it and dropping its transport; its
    listen must end in the cancellation (delete-heavy seed 108 took the shut transport's
    OSError for an unhandled error the node died of)."""
    async with network() as net:
        transport = net.transport_for(B)
        net.crash("n2")
        with trio.CancelScope() as scope:
            scope.cancel()
            await transport.serve(echo)
        assert scope.cancelled_caught
        with pytest.raises(OSError, match="shut down"):
            await transport.serve(echo)  # not cancelled: a shut transport is an error


async def test_concurrent_sends_on_one_stream_are_refused(autojump_clock: object) -> None:
    async with network() as net, trio.open_nursery() as nursery:
        client, server = net.transport_for(A), net.transport_for(B)
        await serve_echo(nursery, server)
        stream = await client.connect(B)
        net.pause("n1")
        nursery.start_soon(stream.send_all, b"first")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.send_all(b"second")
        net.resume("n1")
        assert await stream.receive_some() == b"first"
        nursery.cancel_scope.cancel()


# --- pause and slow hosts ---------------------------------------------------------------------


async def test_paused_host_holds_its_traffic_until_resumed(autojump_clock: object) -> None:
    async with network() as net, trio.open_nursery() as nursery:
        client, server = net.transport_for(A), net.transport_for(B)
        await serve_echo(nursery, server)
        stream = await client.connect(B)
        net.pause("n2")
        await stream.send_all(b"wait")
        with trio.move_on_after(3) as waited:
            await stream.receive_some()
        assert waited.cancelled_caught
        await client.send_datagram(B, b"dgram")
        with trio.move_on_after(3) as waited_datagram:
            await server.receive_datagram()
        assert waited_datagram.cancelled_caught
        net.resume("n2")
        assert await stream.receive_some() == b"wait"
        assert await server.receive_datagram() == (b"dgram", A)
        nursery.cancel_scope.cancel()


async def test_slow_host_adds_its_delay_to_every_message(autojump_clock: object) -> None:
    async with network(delay=Delay(DelayKind.CONSTANT, 0.001, 0.001)) as net:
        a, b = net.transport_for(A), net.transport_for(B)
        net.set_slow("n2", Delay(DelayKind.CONSTANT, 0.5, 0.5))
        start = trio.current_time()
        await a.send_datagram(B, b"x")
        await b.receive_datagram()
        assert trio.current_time() - start == pytest.approx(0.501, abs=0.0011)
        net.set_slow("n2", None)
        start = trio.current_time()
        await a.send_datagram(B, b"y")
        await b.receive_datagram()
        assert trio.current_time() - start < 0.01


# --- datagrams ----------------------------------------------------------------------------------


async def exchange(net: SimNetwork, count: int) -> list[bytes]:
    a, b = net.transport_for(A), net.transport_for(B)
    for i in range(count):
        await a.send_datagram(B, i.to_bytes(4, "big"))
    received: list[bytes] = []
    with trio.move_on_after(5):
        while True:
            data, source = await b.receive_datagram()
            assert source == A
            received.append(data)
    return received


async def test_datagram_loss_rate_is_applied(autojump_clock: object) -> None:
    async with network(seed=5) as net:
        net.set_datagram_faults("loss", DatagramFaults(loss=0.3))
        received = await exchange(net, 2000)
    assert 1250 < len(received) < 1550
    assert net.stats["datagram_lost"] == 2000 - len(received)


async def test_datagram_duplication_and_reordering(autojump_clock: object) -> None:
    async with network(seed=6) as net:
        net.set_datagram_faults(
            "dup", DatagramFaults(duplicate=0.2, reorder=0.5, reorder_delay=0.5)
        )
        received = await exchange(net, 1000)
    assert len(received) > 1000
    assert len(set(received)) == 1000
    assert received != sorted(received)


async def test_datagram_to_a_partitioned_or_down_host_is_dropped(autojump_clock: object) -> None:
    async with network() as net:
        a, b = net.transport_for(A), net.transport_for(B)
        net.block("p", [("n1", "n2")])
        await a.send_datagram(B, b"cut")
        await b.send_datagram(A, b"open way")
        assert await a.receive_datagram() == (b"open way", B)
        with trio.move_on_after(2):
            await b.receive_datagram()
            pytest.fail("a datagram crossed a blocked link")
        net.crash("n2")
        net.clear("p")
        await a.send_datagram(B, b"down")
        await trio.sleep(1)
        assert net.stats["datagram_partitioned"] == 1
        assert net.stats["datagram_no_receiver"] == 1


async def test_oversized_datagram_fails_like_a_socket(autojump_clock: object) -> None:
    async with network() as net:
        a = net.transport_for(A)
        with pytest.raises(OSError) as info:
            await a.send_datagram(B, bytes(70_000))
        assert info.value.errno == errno.EMSGSIZE


async def test_overlapping_partitions_heal_independently(autojump_clock: object) -> None:
    async with network() as net:
        net.block("one", [("n1", "n2")])
        net.block("two", [("n1", "n2"), ("n1", "n3")])
        net.clear("one")
        assert net.is_blocked("n1", "n2") and net.is_blocked("n1", "n3")
        net.clear("two")
        assert not net.is_blocked("n1", "n2")
        with pytest.raises(KeyError):
            net.clear("two")
        with pytest.raises(ValueError):
            net.block("x", [])
            net.block("x", [])


async def test_delay_distributions_respect_their_minimum_and_mean() -> None:
    rng = random.Random(9)
    for kind in DelayKind:
        delay = Delay(kind, 0.002, 0.01, shape=1.5 if kind is not DelayKind.LOGNORMAL else 0.5)
        samples = [delay.sample(rng) for _ in range(20_000)]
        assert min(samples) >= 0.002
        assert max(samples) <= delay.cap
        mean = sum(samples) / len(samples)
        if kind is not DelayKind.LOGNORMAL:
            assert mean == pytest.approx(0.01, rel=0.15), kind
    with pytest.raises(ValueError):
        Delay(DelayKind.PARETO, 0.0, 0.01, shape=1.0)


def test_same_seed_same_trace_and_different_seed_different() -> None:
    """Each run is a fresh trio.run (trace times are absolute virtual times)."""

    async def run(seed: int) -> str:
        async with network(seed=seed) as net:
            net.set_datagram_faults("mix", DatagramFaults(loss=0.1, duplicate=0.1, reorder=0.3))
            await exchange(net, 300)
        return net.trace.hexdigest()

    def fresh(seed: int) -> str:
        return trio.run(run, seed, clock=trio.testing.MockClock(autojump_threshold=0))

    first = fresh(4)
    assert first == fresh(4)
    assert first != fresh(5)


# --- disk -----------------------------------------------------------------------------------


async def doomed(write: object) -> None:
    """Run a write that a crash will interrupt: it ends in StorageFailure."""
    with pytest.raises(StorageFailure, match="crashed"):
        await write  # type: ignore[misc]


def disk(*, fsync: bool = True, latency: float = 0.01) -> SimDisk:
    return SimDisk("n1", random.Random(1), latency=latency, fsync=fsync, writeback_interval=5.0)


async def test_write_is_visible_at_once_and_committed_after_latency(
    autojump_clock: object,
) -> None:
    device = disk()
    storage = device.open()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(storage.put, b"k", b"v1")
        await trio.testing.wait_all_tasks_blocked()
        assert storage.get(b"k") == b"v1"
        assert device.stats["commits"] == 0
    assert device.stats["commits"] == 1


async def test_kill_loses_only_writes_still_committing(autojump_clock: object) -> None:
    device = disk()
    storage = device.open()
    await storage.put(b"kept", b"1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(doomed, storage.put(b"inflight", b"2"))
        nursery.start_soon(doomed, storage.put(b"kept", b"overwrite"))
        await trio.testing.wait_all_tasks_blocked()
        lost = await device.crash(DiskMode.KEPT)
    assert lost == 2
    restarted = device.open()
    assert restarted.get(b"kept") == b"1"
    assert restarted.get(b"inflight") is None
    with pytest.raises(StorageFailure):
        storage.get(b"kept")


async def test_power_cut_without_fsync_loses_what_the_page_cache_held(
    autojump_clock: object,
) -> None:
    device = disk(fsync=False)
    storage = device.open()
    await storage.put(b"old", b"1")
    await trio.sleep(6)
    await storage.put(b"recent", b"2")
    await storage.set_meta("epoch", b"a")
    assert await device.crash(DiskMode.UNSYNCED_LOST) == 2
    restarted = device.open()
    assert restarted.get(b"old") == b"1"
    assert restarted.get(b"recent") is None
    assert restarted.get_meta("epoch") == b"a", "a first meta value cannot be unset"


async def test_power_cut_with_fsync_keeps_every_committed_write(autojump_clock: object) -> None:
    device = disk(fsync=True)
    storage = device.open()
    await storage.put(b"a", b"1")
    await storage.add_hint("peer", b"a", b"1", 5.0)
    await storage.remove(b"a")
    assert await device.crash(DiskMode.UNSYNCED_LOST) == 0
    restarted = device.open()
    assert restarted.get(b"a") is None
    assert [h.key for h in restarted.hints_for("peer", 10)] == [b"a"]


async def test_in_flight_hint_is_lost_in_a_crash(autojump_clock: object) -> None:
    device = disk()
    storage = device.open()
    await storage.add_hint("peer", b"old", b"1", 1.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(doomed, storage.add_hint("peer", b"new", b"2", 2.0))
        await trio.testing.wait_all_tasks_blocked()
        await device.crash(DiskMode.KEPT)
    assert [h.key for h in device.open().hints_for("peer", 10)] == [b"old"]


async def test_wipe_empties_the_disk(autojump_clock: object) -> None:
    device = disk()
    storage = device.open()
    await storage.put(b"a", b"1")
    await device.crash(DiskMode.WIPED)
    assert device.open().count() == 0


async def test_disk_full_refuses_new_data_but_allows_removal(autojump_clock: object) -> None:
    device = disk()
    storage = device.open()
    await storage.put(b"a", b"1")
    device.full = True
    with pytest.raises(StorageFailure, match="disk full"):
        await storage.put(b"b", b"2")
    assert storage.get(b"b") is None
    await storage.remove(b"a")
    assert storage.get(b"a") is None
    device.full = False
    await storage.put(b"b", b"2")


async def test_fsync_error_rolls_the_write_back(autojump_clock: object) -> None:
    device = disk()
    storage = device.open()
    await storage.put(b"a", b"1")
    device.fsync_error_rate = 1.0
    with pytest.raises(StorageFailure, match="fsync"):
        await storage.put(b"a", b"2")
    assert storage.get(b"a") == b"1"
    with pytest.raises(StorageFailure):
        await storage.set_meta("x", b"y")
    device.fsync_error_rate = 0.0
    await storage.put(b"a", b"3")
    assert storage.get(b"a") == b"3"


async def test_cancelled_caller_does_not_stop_the_commit(autojump_clock: object) -> None:
    device = disk(latency=1.0)
    storage = device.open()
    with trio.move_on_after(0.0001):
        await storage.put(b"a", b"1")
    await trio.sleep(30)
    assert device.stats["commits"] == 1
    assert await device.crash(DiskMode.KEPT) == 0
    assert device.open().get(b"a") == b"1"


async def test_one_process_at_a_time(autojump_clock: object) -> None:
    device = disk()
    device.open()
    with pytest.raises(ValueError, match="already in use"):
        device.open()


async def test_paused_machine_blocks_storage_writes(autojump_clock: object) -> None:
    async with network() as net:
        net.transport_for(A)
        device = SimDisk("n1", random.Random(1), gate=lambda: net.wait_running("n1"))
        storage = device.open()
        net.pause("n1")
        with trio.move_on_after(2) as waited:
            await storage.put(b"a", b"1")
        # Applied (visible, as the Storage promise says) but never acknowledged while paused.
        assert waited.cancelled_caught and storage.get(b"a") == b"1"
        net.resume("n1")
        await storage.put(b"a", b"1")


# --- clocks ---------------------------------------------------------------------------------


async def test_wall_clock_skews_drifts_and_jumps(autojump_clock: object) -> None:
    clock = SimWallClock()
    assert clock() == EPOCH + trio.current_time()
    await trio.sleep(10)
    clock.skew(5.0, 0.1)
    start = clock()
    assert start == pytest.approx(EPOCH + 15.0)
    await trio.sleep(10)
    assert clock() - start == pytest.approx(11.0)
    clock.unskew(5.0)
    assert clock() == pytest.approx(EPOCH + 20.0 + 1.0)
    clock.jump(-100)
    assert clock() == pytest.approx(EPOCH + 21.0 - 100)
