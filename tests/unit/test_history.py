"""The history format: building, serialising, shortening."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pindex.sim.history import (
    EventKind,
    FaultEvent,
    History,
    Observation,
    Op,
    OpF,
    OpType,
    ReplicaState,
    RunMeta,
    format_history,
    shorten,
)
from p2pindex.types import Liveness


def sample_history() -> History:
    history = History(RunMeta(7, {"nodes": 5, "duration": 60.0, "faults": "partition,crash"}))
    read = history.invoke(0, OpF.READ, "k1", time=0.0, node="n1", consistency="quorum")
    done = history.complete(read, OpType.OK, time=0.1, value=(b"a1 a0", b"\xff\x00"))
    put = history.invoke(
        0, OpF.PUT, "k1", b"r2", time=0.2, node="n1", consistency="one", ctx=done.index
    )
    history.complete(put, OpType.INFO, time=0.3, error="timeout")
    history.append(FaultEvent(0.25, EventKind.PARTITION, links=(("n1", "n2"), ("n2", "n1"))))
    history.append(FaultEvent(0.5, EventKind.LOSS, ("n3",), amount=0.2, ends=True))
    history.append(Observation(0.4, "n1", "n2", Liveness.SUSPECT))
    other = history.invoke(1, OpF.DELETE, "k2", time=0.45, consistency="all", read_first=True)
    history.complete(other, OpType.FAIL, time=0.46, error="unavailable")
    history.append(ReplicaState(1.0, 0, "n2", "k1", (b"r2",), b"\x01\x02"))
    return history


def test_invoke_and_complete_number_ops_and_keep_write_tokens() -> None:
    history = sample_history()
    assert [op.index for op in history.ops] == [0, 1, 2, 3, 4, 5]
    assert history.ops[3].value == b"r2"
    assert history.ops[3].type is OpType.INFO
    assert history.ops[3].ctx == 1
    assert history.ops[3].error == "timeout"
    assert not history.ops[3].read_first
    assert history.ops[4].read_first and history.ops[5].read_first
    assert history.keys() == ["k1", "k2"]
    assert len(history) == 10
    assert [type(r).__name__ for r in history][4:7] == ["FaultEvent", "FaultEvent", "Observation"]


def test_round_trip_through_json_lines(tmp_path) -> None:
    history = sample_history()
    path = tmp_path / "history.jsonl"
    history.save(path)
    loaded = History.load(path)
    assert list(loaded) == list(history)
    assert loaded.meta == history.meta
    assert path.read_text().splitlines()[0].startswith('{"kind": "meta"')


def test_append_rejects_out_of_order_indexes_and_foreign_objects() -> None:
    history = sample_history()
    with pytest.raises(ValueError, match="does not follow"):
        history.append(Op(3, 9, OpType.INVOKE, OpF.READ, "k", None, 1.0))
    with pytest.raises(TypeError):
        history.append("not a record")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ok, fail or info"):
        history.complete(history.ops[0], OpType.INVOKE, time=1.0)
    assert len(history.ops) == 6


def test_bad_lines_name_their_line_number() -> None:
    lines = list(sample_history().to_lines())
    lines[3] = '{"kind": "op", "index": 2}'
    with pytest.raises(ValueError, match="line 4"):
        History.from_lines(lines)
    with pytest.raises(ValueError, match="line 1"):
        History.from_lines(['{"kind": "nonsense"}'])


def test_shorten_keeps_the_keys_ops_all_faults_and_the_nodes_views() -> None:
    history = sample_history()
    short = shorten(history, ["k1"], nodes=["n2"])
    assert [op.index for op in short.ops] == [0, 1, 2, 3]
    assert short.faults == history.faults
    assert short.observations == history.observations
    assert short.replicas == history.replicas
    assert short.meta == history.meta
    assert shorten(history, ["k2"]).observations == []
    assert [op.index for op in shorten(history, ["k2"]).ops] == [4, 5]


def test_format_history_shows_ops_faults_and_unprintable_bytes() -> None:
    text = format_history(sample_history())
    assert "PARTITION" in text and "n1->n2" in text
    assert "LOSS END n3" in text
    assert "{a1 a0}" in text and "\\xff" in text
    assert "error=timeout" in text


tokens = st.binary(min_size=0, max_size=12)
ops = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.sampled_from(list(OpF)),
        st.text(min_size=1, max_size=8),
        st.one_of(st.none(), tokens, st.lists(tokens, max_size=4).map(tuple)),
        st.floats(0, 1e6, allow_nan=False),
        st.one_of(st.none(), st.text(max_size=5)),
    ),
    max_size=20,
)


@given(ops)
def test_any_op_round_trips(raw: list) -> None:
    history = History()
    for index, (process, f, key, value, time, node) in enumerate(raw):
        history.append(Op(index * 2, process, OpType.OK, f, key, value, time, node, None, 3))
    assert list(History.from_lines(history.to_lines())) == list(history)
