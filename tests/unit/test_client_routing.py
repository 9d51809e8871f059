"""Token-aware routing and failover order, without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.client.routing import DOWN_FOR, Router
from p2pindex.core.ring import Ring
from p2pindex.errors import ProtocolError
from p2pindex.types import Address
from p2pindex.wire.messages import MembersReply

VNODES = 16


def member(i: int, liveness: str = "alive", **extra: object) -> dict:
    return {
        "node_id": f"n{i}",
        "address": f"127.0.0.1:{7000 + i}",
        "liveness": liveness,
        "state": "active",
        "incarnation": 1,
        **extra,
    }


def addr(i: int) -> Address:
    return Address("127.0.0.1", 7000 + i)


def router_with(docs: list[dict], seeds: list[Address] | None = None, n: int = 3) -> Router:
    router = Router(seeds or [addr(0)])
    router.update(MembersReply(n, VNODES, docs))
    return router


def test_before_any_member_list_only_seeds_are_tried() -> None:
    router = Router([addr(1), addr(2)])
    assert list(router.candidates(b"k", 0.0)) == [addr(1), addr(2)]
    assert router.replicas(b"k") == ()


def test_key_replicas_come_first_in_preference_order() -> None:
    router = router_with([member(i) for i in range(6)])
    ring = Ring([f"n{i}" for i in range(6)], VNODES)
    for key in (b"a", b"b", b"user42"):
        expected = [addr(int(n[1:])) for n in ring.preference_list(key, 3)]
        assert list(router.candidates(key, 0.0))[:3] == expected


def test_dead_and_recently_failed_nodes_are_tried_last() -> None:
    router = router_with([member(0), member(1, "dead"), member(2), member(3, "suspect")])
    router.mark_down(addr(2), now=10.0)
    order = list(router.candidates(None, 10.0))
    assert order[0] == addr(0)
    assert set(order[-3:]) == {addr(1), addr(2), addr(3)}
    assert sorted(order) == [addr(i) for i in range(4)]
    # Once the grace period is over a failed node is an ordinary candidate again.
    assert list(router.candidates(None, 10.0 + DOWN_FOR))[:2] == [addr(0), addr(2)]


def test_departed_members_leave_the_ring_and_the_candidates() -> None:
    router = router_with([member(0), member(1, "left"), member(2, in_ring=False), member(3)])
    assert set(router.replicas(b"k")) == {"n0", "n3"}
    assert addr(1) not in list(router.candidates(b"k", 0.0))


def test_seeds_follow_members_without_repeats() -> None:
    router = router_with([member(0), member(1)], seeds=[addr(1), addr(9)])
    assert list(router.candidates(b"k", 0.0))[-1] == addr(9)
    assert len(list(router.candidates(b"k", 0.0))) == 3


@pytest.mark.parametrize(
    "doc",
    [
        {"address": "127.0.0.1:1", "liveness": "alive"},
        {"node_id": "x", "address": "nowhere", "liveness": "alive"},
        {"node_id": "x", "address": "127.0.0.1:1", "liveness": "asleep"},
    ],
)
def test_malformed_member_lists_are_protocol_errors_and_change_nothing(doc: dict) -> None:
    router = router_with([member(0)])
    with pytest.raises(ProtocolError):
        router.update(MembersReply(3, VNODES, [doc]))
    assert router.replicas(b"k") == ("n0",)
    with pytest.raises(ProtocolError):
        router.update(MembersReply(3, 0, [member(1)]))
    assert router.replicas(b"k") == ("n0",)


@settings(max_examples=50, deadline=None)
@given(
    liveness=st.lists(
        st.sampled_from(["alive", "suspect", "dead", "left"]), min_size=1, max_size=8
    ),
    down=st.sets(st.integers(0, 7)),
    key=st.binary(min_size=1, max_size=16),
)
def test_candidates_cover_every_reachable_address_once(
    liveness: list[str], down: set[int], key: bytes
) -> None:
    docs = [member(i, state) for i, state in enumerate(liveness)]
    router = router_with(docs, seeds=[addr(0), addr(99)])
    for i in down:
        router.mark_down(addr(i), now=0.0)
    order = list(router.candidates(key, 1.0))
    assert len(order) == len(set(order))
    expected = {addr(i) for i, state in enumerate(liveness) if state != "left"} | {addr(99)}
    if liveness[0] == "left":
        expected.discard(addr(0))
    assert set(order) == expected
    replicas = router.replicas(key)

    def usable(address: Address) -> bool:
        i = address.port - 7000
        if i == 99:
            return True
        state = liveness[i]
        fresh = i not in down
        return fresh and (state == "alive" or (state == "suspect" and f"n{i}" in replicas))

    flags = [usable(a) for a in order]
    assert flags == sorted(flags, reverse=True), "every usable address precedes the rest"
    usable_replicas = [addr(int(n[1:])) for n in replicas if usable(addr(int(n[1:])))]
    assert order[: len(usable_replicas)] == usable_replicas


def test_a_slow_replica_stops_coordinating_and_is_probed_again_later() -> None:
    router = router_with([member(i) for i in range(6)])
    ring = Ring([f"n{i}" for i in range(6)], VNODES)
    key = b"user42"
    preferred = [addr(int(n[1:])) for n in ring.preference_list(key, 3)]
    now = 0.0
    for address in preferred:  # every replica answers in 1 ms...
        router.sent(address, now)
        router.ended(address, 0.001, now + 0.001)
    assert list(router.candidates(key, now + 0.01))[:3] == preferred
    router.sent(preferred[0], 0.01)  # ...until the first one takes 60 ms
    router.ended(preferred[0], 0.06, 0.07)
    assert list(router.candidates(key, 0.07))[:3] == [*preferred[1:], preferred[0]]
    # A stalled one (a request out, no answer) moves back too.
    router.sent(preferred[1], 0.07)
    assert list(router.candidates(key, 0.2))[:3] == [preferred[2], preferred[0], preferred[1]]
    # A second after its last answer, the slow one gets a probe: the next request for no
    # key (a member refresh), never a user's read.
    assert next(iter(router.candidates(key, 1.2))) != preferred[0]
    assert next(iter(router.candidates(None, 1.2))) == preferred[0]


def test_a_member_list_update_while_a_request_fails_over_keeps_its_order_whole() -> None:
    router = router_with([member(i) for i in range(6)])
    remaining = router.candidates(b"user42", 0.0)
    first = next(remaining)
    router.update(MembersReply(3, VNODES, [member(i) for i in range(3)]))  # three left
    rest = list(remaining)
    assert sorted([first, *rest]) == sorted({first, *rest})
    assert {first, *rest} >= {addr(i) for i in range(6)}


def test_a_replacement_is_routed_to_as_the_member_whose_tokens_it_holds() -> None:
    """Keys the dead member held go first to the member that took its tokens."""
    before = router_with([member(0), member(1), member(2), member(3)])
    after = router_with([member(0), member(1), member(2), member(9, tokens_of="n3")])
    ring = Ring(["n0", "n1", "n2", "n3"], VNODES)
    moved = [
        k for k in (b"key-%d" % i for i in range(400)) if ring.preference_list(k, 3)[0] == "n3"
    ]
    assert moved
    for key in moved:
        assert next(iter(before.candidates(key, 0.0))) == addr(3)
        assert next(iter(after.candidates(key, 0.0))) == addr(9)
