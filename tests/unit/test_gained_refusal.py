"""A node that gained arcs from a removal refuses reads and scans of those arcs only."""

from __future__ import annotations

from p2pindex.core.ring import Ring
from p2pindex.node.cluster_view import ClusterView
from p2pindex.node.gained import GainedRanges
from p2pindex.types import Address

NODES = [c * 16 for c in "abcde"]
REMOVED = NODES[4]
ME = NODES[0]


def gaining_node() -> tuple[GainedRanges, ClusterView, Ring]:
    before = Ring(NODES, 64)
    view = ClusterView(ME, Address("127.0.0.1", 7000))
    view.ring = Ring(NODES[:4], 64)
    gained = GainedRanges(view, None, None, None, 3)  # type: ignore[arg-type]
    arcs = gained.begin(REMOVED, before)
    assert arcs, "with five nodes, removing one gives this node arcs"
    return gained, view, before


def test_reads_of_gained_keys_are_refused_and_others_served() -> None:
    gained, view, before = gaining_node()
    keys = [b"k%d" % i for i in range(400)]
    gained_keys = [
        k
        for k in keys
        if ME in view.ring.preference_list(k, 3) and ME not in before.preference_list(k, 3)
    ]
    others = [k for k in keys if k not in gained_keys]
    assert gained_keys and others
    for key in gained_keys:
        refusal = gained.refusal([key])
        assert refusal is not None and REMOVED in refusal and "read" in refusal
    for key in others:
        assert gained.refusal([key]) is None
    assert gained.refusal([others[0], gained_keys[0]]) is not None  # one gained key is enough


def test_scans_are_refused_only_where_they_touch_gained_arcs() -> None:
    gained, view, before = gaining_node()
    arcs = gained.begin(REMOVED, before)
    start, end, _ = arcs[0]
    assert gained.scan_refusal([(start, end)]) is not None
    assert gained.scan_refusal([]) is not None  # the whole ring
    kept = [
        (s, e)
        for s, e, pref in view.ring.arcs_in_order(3)
        if ME in pref and ME in before.preference_list_for_token(e, 3)
    ]
    assert kept
    assert gained.scan_refusal(kept[:1]) is None


def test_a_removal_that_gains_nothing_refuses_nothing() -> None:
    view = ClusterView(ME, Address("127.0.0.1", 7000))
    view.ring = Ring(NODES[:2], 64)
    gained = GainedRanges(view, None, None, None, 3)  # type: ignore[arg-type]
    assert gained.begin(NODES[2], Ring(NODES[:3], 64)) == []  # it held every key already
    assert not view.gaining
    assert gained.refusal([b"any"]) is None
