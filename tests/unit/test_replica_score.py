"""Load-aware replica choice (``core.replica_score``): a slow or stalled replica stops being
chosen within about a second, is probed again later, and equal replicas keep their order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.core.replica_score import PROBE_AFTER, ReplicaScores

NODES = ("a", "b", "c")


def serve(scores: ReplicaScores[str], latencies: dict[str, float], now: float, rounds: int):
    """Send ``rounds`` requests one at a time to the best-ranked node; returns who got them
    and the time after."""
    chosen = []
    for _ in range(rounds):
        node = scores.rank(list(NODES), now)[0]
        chosen.append(node)
        scores.sent(node, now)
        now += latencies[node]
        scores.answered(node, latencies[node], now)
    return chosen, now


@given(st.permutations(NODES), st.floats(0.0005, 0.005), st.floats(0.02, 0.5))
def test_a_slow_replica_stops_getting_requests_within_a_second(order, fast, slow) -> None:
    scores: ReplicaScores[str] = ReplicaScores()
    latencies = dict.fromkeys(NODES, fast)
    latencies[order[0]] = slow
    chosen, now = serve(scores, latencies, 0.0, 5)  # every node measured once at most
    chosen, now = serve(scores, latencies, now, 200)
    slow_at = [i for i, node in enumerate(chosen) if node == order[0]]
    # Measured once, then users' requests never go to it (probes do, see below).
    assert slow_at == []


def test_a_slow_replica_is_probed_again_and_comes_back_when_fast() -> None:
    scores: ReplicaScores[str] = ReplicaScores()
    latencies = {"a": 0.2, "b": 0.001, "c": 0.001}
    chosen, now = serve(scores, latencies, 0.0, 50)
    assert chosen.count("a") == 1  # measured once, then avoided
    now += PROBE_AFTER  # no request to it for a while: a probe may go to it...
    assert scores.rank(list(NODES), now)[0] != "a"  # ...but not a user's read
    assert scores.rank(list(NODES), now, probe=True)[0] == "a"
    latencies["a"] = 0.001  # it recovered: the probe shows it at once
    scores.sent("a", now)
    now += 0.001
    scores.answered("a", 0.001, now)
    chosen, now = serve(scores, latencies, now, 400)
    assert chosen.count("a") > 50  # back in the rotation as its EWMA fell


def test_a_stalled_replica_is_passed_over_while_its_requests_wait() -> None:
    scores: ReplicaScores[str] = ReplicaScores()
    for node in NODES:
        scores.sent(node, 0.0)
        scores.answered(node, 0.001, 0.001)
    scores.sent("a", 1.0)  # a goes quiet: SIGSTOP
    assert scores.rank(["a", "b", "c"], 1.0)[0] == "a"  # nothing is known yet
    assert scores.rank(["a", "b", "c"], 1.01)[0] != "a"  # 10 ms without an answer
    assert scores.rank(["a", "b", "c"], 1.9)[-1] == "a"
    # Its request times out after 2 s: it counts as slow, and is probed a second later.
    scores.answered("a", 2.0, 3.0)
    assert scores.rank(["a", "b", "c"], 3.5, probe=True)[-1] == "a"
    assert scores.rank(["a", "b", "c"], 3.0 + PROBE_AFTER, probe=True)[0] == "a"
    assert scores.rank(["a", "b", "c"], 3.0 + PROBE_AFTER)[-1] == "a"


@given(
    st.lists(st.tuples(st.sampled_from(NODES), st.floats(0.001, 0.0014)), max_size=60),
    st.permutations(NODES),
)
def test_replicas_that_are_about_as_fast_keep_the_preferred_order(answers, order) -> None:
    scores: ReplicaScores[str] = ReplicaScores()
    now = 0.0
    for node, latency in [(node, 0.001) for node in NODES] + answers:
        scores.sent(node, now)
        now += 0.001
        scores.answered(node, latency, now)
    assert scores.rank(list(order), now)[0] == order[0]


@given(
    st.lists(st.tuples(st.sampled_from(NODES), st.booleans(), st.floats(0, 5)), max_size=80),
    st.floats(0, 100),
)
def test_a_ranking_is_a_permutation_and_scores_are_never_negative(events, later) -> None:
    scores: ReplicaScores[str] = ReplicaScores()
    now = 0.0
    for node, send, step in events:
        now += step
        if send:
            scores.sent(node, now)
        else:
            scores.answered(node, step, now)
    for query in (now, now + later):
        for probe in (False, True):
            assert sorted(scores.rank(list(NODES), query, probe=probe)) == sorted(NODES)
            assert all(scores.score(node, query, probe=probe) >= 0 for node in NODES)
        assert all(scores.outstanding(node) >= 0 for node in NODES)


def test_more_outstanding_requests_make_an_equally_fast_replica_less_attractive() -> None:
    scores: ReplicaScores[str] = ReplicaScores()
    for node in NODES:
        scores.sent(node, 0.0)
        scores.answered(node, 0.002, 0.002)
    for _ in range(4):
        scores.sent("a", 0.002)
    assert scores.rank(["a", "b", "c"], 0.0021)[0] != "a"


def test_only_so_many_replicas_are_remembered() -> None:
    scores: ReplicaScores[int] = ReplicaScores(max_tracked=3)
    for node in range(10):
        scores.sent(node, float(node))
    assert sum(scores.outstanding(node) for node in range(10)) == 3
    assert scores.outstanding(9) == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ReplicaScores(weight=0)
    with pytest.raises(ValueError):
        ReplicaScores(probe_after=0)
