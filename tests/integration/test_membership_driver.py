"""Five trio membership drivers on an in-memory network, in virtual time (MockClock)."""

from __future__ import annotations

import contextlib
import random

import trio

from p2pindex.core.swim import MemberChanged, Swim, SwimConfig
from p2pindex.node.membership import MembershipDriver
from p2pindex.types import Address, Liveness


class FakeNetwork:
    """Datagrams between in-memory endpoints; a down address swallows everything."""

    def __init__(self) -> None:
        self.inboxes: dict[Address, trio.MemorySendChannel[tuple[bytes, Address]]] = {}
        self.down: set[Address] = set()
        self.cores: dict[Address, Swim] = {}

    def endpoint(self, address: Address) -> FakeTransport:
        send, receive = trio.open_memory_channel[tuple[bytes, Address]](1000)
        self.inboxes[address] = send
        return FakeTransport(self, address, receive)

    async def exchange(self, address: Address, payload: bytes, join: bool) -> bytes:
        """What the node's RPC does: hand the payload to the peer's core, return its reply."""
        await trio.sleep(0.002)
        if address in self.down or address not in self.cores:
            raise OSError(f"connection to {address} refused")
        return self.cores[address].push_pull_respond(payload, address, trio.current_time())


class FakeTransport:
    def __init__(self, network: FakeNetwork, address: Address, inbox) -> None:
        self._network = network
        self._address = address
        self._inbox = inbox

    @property
    def local_address(self) -> Address:
        return self._address

    async def send_datagram(self, address: Address, data: bytes) -> None:
        network = self._network
        if address in network.down or self._address in network.down:
            return
        inbox = network.inboxes.get(address)
        if inbox is not None:
            with contextlib.suppress(trio.WouldBlock):
                inbox.send_nowait((data, self._address))

    async def receive_datagram(self) -> tuple[bytes, Address]:
        return await self._inbox.receive()


async def test_five_drivers_converge_detect_a_crash_and_see_a_leave(autojump_clock) -> None:
    network = FakeNetwork()
    config = SwimConfig.default()
    events: dict[str, list[MemberChanged]] = {}
    drivers: list[MembershipDriver] = []
    scopes: list[trio.CancelScope] = []
    cores: list[Swim] = []

    async def run_node(index: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
        address = Address(f"127.0.0.{index + 1}", 7000)
        node_id = f"node{index}"
        swim = Swim(config, node_id, address, 1, random.Random(index), trio.current_time())
        network.cores[address] = swim
        events[node_id] = []
        driver = MembershipDriver(
            swim, network.endpoint(address), network.exchange, events[node_id].append
        )
        with trio.CancelScope() as scope:
            cores.append(swim)
            drivers.append(driver)
            scopes.append(scope)
            await driver.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        for index in range(5):
            await nursery.start(run_node, index)
        seed = cores[0].address
        network.down.add(seed)  # the seed is not up yet: joins fail and are retried
        for swim, driver in zip(cores[1:], drivers[1:], strict=True):
            swim.join([seed], trio.current_time())
            driver.notify()
        await trio.sleep(3)
        assert not any(swim.joined for swim in cores[1:])
        assert cores[1].statistics()["push_pulls_failed"] >= 2
        network.down.discard(seed)
        await trio.sleep(10)
        assert all(swim.joined for swim in cores[1:])
        for swim in cores:
            assert {m.liveness for m in swim.members()} == {Liveness.ALIVE}
            assert len(swim.members()) == 5

        crashed = cores[4]
        network.down.add(crashed.address)
        scopes[4].cancel()
        await trio.sleep(30)
        for swim in cores[:4]:
            assert swim.member("node4").liveness is Liveness.DEAD
        assert any(
            e.member.node_id == "node4" and e.member.liveness is Liveness.DEAD
            for e in events["node1"]
        )

        await drivers[3].leave(timeout=5.0)
        assert cores[3].leave_complete(trio.current_time())
        network.down.add(cores[3].address)
        scopes[3].cancel()
        await trio.sleep(5)
        for swim in cores[:3]:
            assert swim.member("node3").liveness is Liveness.LEFT
        nursery.cancel_scope.cancel()
