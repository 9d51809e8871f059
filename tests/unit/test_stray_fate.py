"""What the reaper does with a copy held outside a key's replicas, given their answers:
it never hands over a copy a delete superseded, never drops one before every replica
answered (unless all hold it), and hands over only the copy no replica holds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pindex.node.reaper import StrayFate, stray_fate


@st.composite
def answers(draw: st.DrawFn) -> tuple[int, int, int, bool]:
    replicas = draw(st.integers(min_value=1, max_value=7))
    holding = draw(st.integers(min_value=0, max_value=replicas))
    lacking = draw(st.integers(min_value=0, max_value=replicas - holding))
    deleted_above = holding > 0 and draw(st.booleans())
    return replicas, holding, lacking, deleted_above


@given(answers())
def test_a_copy_goes_only_where_it_is_held_or_deleted(case: tuple[int, int, int, bool]) -> None:
    replicas, holding, lacking, deleted_above = case
    fate = stray_fate(replicas, holding, lacking, deleted_above)
    everyone_answered = holding + lacking == replicas
    if fate is StrayFate.DROP:
        assert holding == replicas or (everyone_answered and deleted_above)
    if fate is StrayFate.HAND_OVER:
        assert lacking == replicas and not deleted_above
    if not everyone_answered:
        assert fate is StrayFate.KEEP


@given(answers())
def test_every_fully_answered_case_is_decided_but_a_partly_held_live_copy(
    case: tuple[int, int, int, bool],
) -> None:
    replicas, holding, lacking, deleted_above = case
    if holding + lacking < replicas:
        return
    fate = stray_fate(replicas, holding, lacking, deleted_above)
    if 0 < holding < replicas and not deleted_above:
        assert fate is StrayFate.KEEP  # anti-entropy spreads the newer version first
    else:
        assert fate is not StrayFate.KEEP


def test_the_seed_33177_case_drops_the_copy() -> None:
    # Two replicas answer with the delete's marker, the third forgot it (marker expired).
    assert stray_fate(3, 2, 1, True) is StrayFate.DROP
    # A copy nobody holds may be the last of a write: it goes to the replicas.
    assert stray_fate(3, 0, 3, False) is StrayFate.HAND_OVER
    # Someone did not answer: nothing is decided.
    assert stray_fate(3, 2, 0, True) is StrayFate.KEEP
