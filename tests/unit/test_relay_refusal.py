"""A request relayed to a node that is no replica of its key either (the views of the ring
disagree while it changes) is refused as NotReady, the refusal a client answers by trying
its next node, and is not relayed again."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pindex.core.placement import Target
from p2pindex.errors import NotReady, Timeout, Unavailable
from p2pindex.node.relay import forward
from p2pindex.node.stats import StatisticsStore
from p2pindex.wire.messages import GetRequest, OkReply, PutRequest


class NoPeers:
    async def request(self, *_args: object) -> None:
        raise AssertionError("a relayed request must not be relayed again")


async def test_a_relayed_request_is_refused_as_not_ready_and_not_relayed_again() -> None:
    request = PutRequest(b"k", b"v", None, "quorum", 1000, forwarded=True)
    with pytest.raises(NotReady, match="views of the ring disagree"):
        await forward(
            request,
            [Target("other")],
            1.0,
            NoPeers(),  # type: ignore[arg-type]
            lambda _node: ("127.0.0.1", 1),  # type: ignore[arg-type,return-value]
            StatisticsStore(),
        )


class Stalled:
    """``stalled`` hold a request past any deadline; the others answer at once."""

    def __init__(self, stalled: set[str]) -> None:
        self.stalled, self.asked = stalled, []

    async def request(self, address: object, message: object, timeout: float) -> object:
        host = address[0]  # type: ignore[index]
        self.asked.append(host)
        if host in self.stalled:
            await trio.sleep_forever()
        return OkReply(f"from {host}")


def relay_to(peers: Stalled, request: object, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    return forward(
        request,  # type: ignore[arg-type]
        [Target("a"), Target("b"), Target("c")],
        timeout,
        peers,  # type: ignore[arg-type]
        lambda node: (node, 1),  # type: ignore[arg-type,return-value]
        StatisticsStore(),
        attempt=1.0,
    )


async def test_a_read_relayed_to_a_stalled_replica_goes_on_to_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found by a helper: a GET relayed to a SIGSTOPped replica waited out the whole 5 s
    deadline, two healthy replicas unasked, and answered 'no replica answered'."""
    peers = Stalled({"a"})
    started = trio.current_time()
    reply = await relay_to(peers, GetRequest(b"k", "quorum", 5000))
    assert reply == OkReply("from b") and peers.asked == ["a", "b"]
    assert trio.current_time() - started == pytest.approx(1.0)


async def test_a_read_no_replica_answers_is_definite(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(Unavailable, match="no replica answered the relayed read"):
        await relay_to(Stalled({"a", "b", "c"}), GetRequest(b"k", "quorum", 5000))


async def test_a_write_is_never_relayed_twice(autojump_clock: trio.testing.MockClock) -> None:
    peers = Stalled({"a"})
    with pytest.raises(Timeout):
        await relay_to(peers, PutRequest(b"k", b"v", None, "quorum", 5000))
    assert peers.asked == ["a"]
