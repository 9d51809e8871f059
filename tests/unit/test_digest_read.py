"""Digest reads (``core.digest_read``): who is asked for the value, who for a digest, and
when a digest reply lets the value stand for a replica's copy.

The safety property: a digest agrees only when the replica holds exactly the record the
value replica sent, so counting the value as its copy changes nothing a read returns.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.core import versions
from p2pindex.core.digest import DIGEST_SIZE, key_digest
from p2pindex.core.digest_read import Verdict, plan_read, verdict, version_digest
from p2pindex.core.quorum import ReadQuorum, Round
from p2pindex.core.versions import VersionVector, update

NODES = ("n1", "n2", "n3", "n4", "n5")


def record(value: bytes, actor: str = "n1", counter: int = 1) -> bytes:
    """The record after ``counter`` writes by ``actor``, the last of ``value``."""
    obj = None
    for _ in range(counter):
        obj = update(obj, VersionVector() if obj is None else obj.context, actor, value)
    assert obj is not None
    return versions.encode_object(obj)


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[str], int, str, list[str]]:
    size = draw(st.integers(1, len(NODES)))
    targets = list(draw(st.permutations(NODES))[:size])
    required = draw(st.integers(1, size))
    local = draw(st.sampled_from(NODES))
    order = draw(st.lists(st.sampled_from(NODES), max_size=8))
    return targets, required, local, order


@given(plans())
def test_every_target_is_asked_once_or_kept_as_a_spare(plan: tuple) -> None:
    targets, required, local, order = plan
    read = plan_read(targets, required, local, order)
    everyone = [read.value, *read.digests, *read.spares]
    assert sorted(everyone) == sorted(targets)
    if required == 1:  # ONE touches one replica; the rest are spares
        assert read.digests == ()
    else:  # every other target still answers, as before, so read repair sees it
        assert read.spares == ()


@given(plans())
def test_the_value_comes_from_this_node_when_it_is_a_target_else_the_best_ranked(
    plan: tuple,
) -> None:
    targets, required, local, order = plan
    read = plan_read(targets, required, local, order)
    ranked = [node for node in order if node in targets]
    if local in targets:
        assert read.value == local
    elif ranked:
        assert read.value == ranked[0]
    else:
        assert read.value == targets[0]
    others = [*read.digests, *read.spares]
    ranked_others = [node for node in dict.fromkeys(ranked) if node != read.value]
    assert others[: len(ranked_others)] == ranked_others  # best first, the unranked after


def test_a_plan_refuses_what_no_read_can_be() -> None:
    with pytest.raises(ValueError, match="at least one target"):
        plan_read([], 1, "n1", [])
    with pytest.raises(ValueError, match="twice"):
        plan_read(["n1", "n1"], 1, "n1", [])
    with pytest.raises(ValueError, match="outside"):
        plan_read(["n1", "n2"], 3, "n1", [])


VALUES = st.binary(max_size=40)


@given(st.binary(min_size=1, max_size=20), VALUES, st.integers(1, 4), VALUES, st.integers(1, 4))
def test_a_digest_agrees_exactly_when_the_records_are_equal(
    key: bytes, value_a: bytes, count_a: int, value_b: bytes, count_b: int
) -> None:
    mine = record(value_a, counter=count_a)
    theirs = record(value_b, counter=count_b)
    agrees = verdict(version_digest(key, mine), version_digest(key, theirs)) is Verdict.AGREES
    assert agrees == (mine == theirs)


@given(st.binary(min_size=1, max_size=20), VALUES)
def test_no_copy_agrees_only_with_no_copy(key: bytes, value: bytes) -> None:
    mine = record(value)
    assert version_digest(key, None) is None
    assert verdict(None, None) is Verdict.AGREES
    assert verdict(version_digest(key, mine), None) is Verdict.FETCH  # the replica lacks it
    assert verdict(None, version_digest(key, mine)) is Verdict.FETCH  # it has a version


@given(
    st.binary(min_size=1, max_size=20),
    VALUES,
    st.one_of(st.binary(max_size=40), st.integers(), st.text()),
)
def test_a_garbled_digest_never_agrees(key: bytes, value: bytes, garbage: object) -> None:
    mine = record(value)
    if garbage == key_digest(key, mine):
        return  # the one right answer
    assert verdict(version_digest(key, mine), garbage) is Verdict.FETCH


def test_a_digest_of_another_key_does_not_agree() -> None:
    mine = record(b"v")
    assert verdict(version_digest(b"a", mine), key_digest(b"b", mine)) is Verdict.FETCH
    assert len(key_digest(b"a", mine)) == DIGEST_SIZE


def test_a_spare_is_asked_before_the_failure_is_heard_so_the_read_waits_for_it() -> None:
    targets = ["n1", "n2", "n3"]
    round_ = Round(ReadQuorum(targets, 1), 0, 10.0)
    round_.quorum.record_failure("n1")  # this node's copy failed: ask a spare
    round_.ask()
    round_.quorum.record_failure("n2")
    round_.ask()  # the coordinator asks the next spare first...
    assert not round_.heard()  # ...so n2's failure does not end the read
    round_.quorum.record_reply("n3", None)
    assert round_.heard()


def test_no_more_replicas_are_asked_than_there_are_besides_the_coordinator() -> None:
    round_ = Round(ReadQuorum(["n1", "n2", "n3"], 1), 2, 10.0)
    with pytest.raises(ValueError, match="more replicas asked"):
        round_.ask()
