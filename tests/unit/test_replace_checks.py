"""`serve --replace`: the checks made against the cluster before anything changes."""

from __future__ import annotations

import pytest

from p2pindex.node.replace import Takeover, arbiter, replace_refusal
from p2pindex.types import Address

MEMBERS = [
    {"node_id": "bb", "address": "127.0.0.1:2", "liveness": "alive", "in_ring": True},
    {"node_id": "aa", "address": "127.0.0.1:1", "liveness": "alive", "in_ring": True},
    {"node_id": "dd", "address": "127.0.0.1:4", "liveness": "dead", "in_ring": True},
    {"node_id": "ee", "address": "127.0.0.1:5", "liveness": "dead", "in_ring": False},
    {"node_id": "cc", "address": "127.0.0.1:3", "liveness": "suspect", "in_ring": True},
]


def test_a_dead_ring_member_may_be_replaced_through_the_lowest_live_id():
    assert replace_refusal("dd", "new", MEMBERS) is None
    assert arbiter(MEMBERS, "dd") == Address("127.0.0.1", 1)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("new", "cannot replace itself"),
        ("zz", "no member has the id zz"),
        ("aa", "node aa is alive: only a dead member can be replaced"),
        ("cc", "node cc is suspect"),
        ("ee", "no longer in the ring"),
    ],
)
def test_bad_replacements_are_refused_with_the_reason(target, reason):
    refusal = replace_refusal(target, "new", MEMBERS)
    assert refusal is not None and reason in refusal


def test_a_saved_takeover_is_read_back_in_either_format():
    taken = Takeover("dd", 7, "cc")
    assert Takeover.decode(taken.encode(), "dd") == taken
    assert Takeover.decode(b"dd", "dd") == Takeover("dd", 0, "dd"), "the first format: the id"
    assert Takeover.decode(taken.encode(), "ee") is None, "a mark for another member"
    for garbage in (b"", b"[", b'["dd", "x", "cc"]', b"{}", b"[1, 2]"):
        assert Takeover.decode(garbage, "dd") is None
