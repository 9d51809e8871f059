"""A request relayed to a node that is no replica of its key either (the views of the ring
disagree while it changes) is refused as NotReady, the refusal a client answers by trying
its next node, and is not relayed again."""

from __future__ import annotations

import pytest

from p2pindex.core.placement import Target
from p2pindex.errors import NotReady
from p2pindex.node.relay import forward
from p2pindex.node.stats import StatisticsStore
from p2pindex.wire.messages import PutRequest


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
