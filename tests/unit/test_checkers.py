"""Checkers on hand-built histories: each must pass clean runs and name each violation kind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pindex.core.versions import VersionVector, encode_context
from p2pindex.sim.checkers import (
    CheckConfig,
    MembershipBounds,
    check_all,
    check_convergence,
    check_lost_writes,
    check_membership,
    check_resurrection,
    check_siblings,
    check_unexpected_values,
    failure_report,
)
from p2pindex.sim.history import (
    EventKind,
    FaultEvent,
    History,
    Observation,
    OpF,
    OpType,
    ReplicaState,
    RunMeta,
)
from p2pindex.types import Liveness

OK, FAIL, INFO = OpType.OK, OpType.FAIL, OpType.INFO


class Builder:
    """Sequential ops with a clock that ticks on every record."""

    def __init__(self) -> None:
        self.history = History(RunMeta(42, {"nodes": 3, "faults": "crash"}))
        self.t = 0.0

    def tick(self) -> float:
        self.t += 1.0
        return self.t

    def read(self, p: int, key: str, *values: str, f: OpF = OpF.READ, type=OK) -> int:
        op = self.history.invoke(p, f, key, time=self.tick())
        done = self.history.complete(
            op,
            type,
            time=self.tick(),
            value=tuple(v.encode() for v in values) if type is OK else None,
        )
        return done.index

    def final(self, key: str, *values: str) -> int:
        return self.read(99, key, *values, f=OpF.FINAL)

    def invoke(self, p: int, f: OpF, key: str, token: str | None, ctx: int | None = None):
        value = token.encode() if token else None
        return self.history.invoke(p, f, key, value, time=self.tick(), ctx=ctx)

    def complete(self, op, type=OK) -> int:
        self.history.complete(op, type, time=self.tick())
        return op.index

    def write(self, p, f, key, token, ctx=None, type=OK) -> int:
        return self.complete(self.invoke(p, f, key, token, ctx), type)

    def read_first(self, p, f, key, token=None, type=OK) -> int:
        """A delete without a context or a put with overwrite: the node reads first."""
        value = token.encode() if token else None
        op = self.history.invoke(p, f, key, value, time=self.tick(), read_first=True)
        return self.complete(op, type)


# --- lost writes ---------------------------------------------------------------------------


def test_concurrent_adds_that_all_survive_pass() -> None:
    b = Builder()
    r = b.read(0, "s")
    b.write(0, OpF.ADD, "s", "a2", ctx=r)
    r1 = b.read(1, "s", "a2")
    r2 = b.read(2, "s", "a2")
    b.write(1, OpF.ADD, "s", "a7", ctx=r1)
    b.write(2, OpF.ADD, "s", "a10", ctx=r2)
    b.final("s", "a7 a2", "a10 a2")
    assert check_all(b.history, CheckConfig(convergence_bound=None)) == []


def test_a_concurrent_add_overwritten_by_last_write_wins_is_lost() -> None:
    b = Builder()
    r = b.read(0, "s")
    b.write(0, OpF.ADD, "s", "a2", ctx=r)
    r1 = b.read(1, "s", "a2")
    r2 = b.read(2, "s", "a2")
    lost = b.write(1, OpF.ADD, "s", "a7", ctx=r1)
    b.write(2, OpF.ADD, "s", "a10", ctx=r2)
    final = b.final("s", "a10 a2")
    violations = check_lost_writes(b.history)
    assert [v.checker for v in violations] == ["lost_writes"]
    assert "a7" in violations[0].message
    assert violations[0].op_indexes == (lost, final)
    assert violations[0].keys == ("s",)


def test_unknown_and_failed_writes_may_be_missing() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0", type=INFO)
    b.write(1, OpF.PUT, "k", "r2", type=FAIL)
    b.write(2, OpF.PUT, "k", "r4")
    b.final("k", "r4")
    assert check_lost_writes(b.history) == []


def test_a_write_replaced_by_an_acknowledged_or_unknown_overwrite_may_be_missing() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    r = b.read(0, "k", "r0")
    b.write(0, OpF.PUT, "k", "r4", ctx=r, type=INFO)
    b.final("k")
    assert check_lost_writes(b.history) == []


def test_a_definitely_failed_overwrite_replaces_nothing() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    r = b.read(0, "k", "r0")
    b.write(0, OpF.DELETE, "k", None, ctx=r, type=FAIL)
    b.final("k")
    assert [v.checker for v in check_lost_writes(b.history)] == ["lost_writes"]


def test_what_came_before_a_read_first_delete_may_be_gone_and_may_stay() -> None:
    for final in ((), ("r0",), ("r0", "r1")):
        b = Builder()
        b.write(0, OpF.PUT, "k", "r0")
        b.write(1, OpF.PUT, "k", "r1")
        b.read_first(2, OpF.DELETE, "k")
        b.final("k", *final)
        assert check_all(b.history, CheckConfig(convergence_bound=None)) == [], final


def test_a_write_after_a_read_first_delete_must_survive_it() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    b.read_first(1, OpF.DELETE, "k")
    b.write(2, OpF.PUT, "k", "r5")
    b.final("k")
    violations = check_lost_writes(b.history)
    assert [v.checker for v in violations] == ["lost_writes"]
    assert "r5" in violations[0].message and "r0" not in violations[0].message


def test_a_write_in_flight_while_a_read_first_delete_ran_may_be_gone() -> None:
    b = Builder()
    racing = b.invoke(0, OpF.PUT, "k", "r0")
    b.read_first(1, OpF.DELETE, "k")
    b.complete(racing)
    b.final("k")
    assert check_lost_writes(b.history) == []


def test_a_timed_out_read_first_write_may_drop_even_what_came_after_it() -> None:
    """Supersede seed 26: an overwrite sat in a paused node's socket after its client timed
    out, then read the key and replaced writes acknowledged after the timeout."""
    for late in ((OpF.PUT, "o1"), (OpF.DELETE, None)):
        b = Builder()
        b.read_first(1, late[0], "k", late[1], type=INFO)
        b.write(2, OpF.PUT, "k", "r5")
        b.final("k", *(() if late[1] is None else (late[1],)))
        assert check_lost_writes(b.history) == [], late


def test_a_definitely_failed_read_first_delete_removes_nothing() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    b.read_first(1, OpF.DELETE, "k", type=FAIL)
    b.final("k")
    assert [v.checker for v in check_lost_writes(b.history)] == ["lost_writes"]


def test_an_overwrite_token_is_checked_like_any_put() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    b.read_first(1, OpF.PUT, "k", "o2")
    b.final("k", "r0")  # r0 may stay (the overwrite's read may have missed it); o2 may not go
    assert [v.checker for v in check_lost_writes(b.history)] == ["lost_writes"]
    b = Builder()
    b.read_first(1, OpF.PUT, "k", "o0", type=FAIL)
    b.final("k", "o0")
    assert [v.checker for v in check_unexpected_values(b.history)] == ["unexpected_values"]


def test_a_read_first_write_makes_nothing_dead_nor_a_sibling_stale() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    b.read_first(1, OpF.PUT, "k", "o1")
    b.final("k", "r0", "o1")
    assert check_all(b.history, CheckConfig(convergence_bound=None)) == []


def test_only_a_contextless_put_or_delete_reads_first() -> None:
    b = Builder()
    r = b.read(0, "k")
    with pytest.raises(ValueError, match="reads first"):
        b.history.invoke(1, OpF.DELETE, "k", time=b.tick(), ctx=r, read_first=True)
    with pytest.raises(ValueError, match="reads first"):
        b.history.invoke(1, OpF.ADD, "k", b"a1", time=b.tick(), read_first=True)


def test_acknowledged_writes_without_a_final_read_are_reported() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    b.read(99, "k", f=OpF.FINAL, type=FAIL)
    violations = check_lost_writes(b.history)
    assert len(violations) == 1 and "no successful final read" in violations[0].message


# --- unexpected values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "seen", "problem"),
    [
        (lambda b: None, "zz9", "never written"),
        (lambda b: b.write(0, OpF.PUT, "k", "r0", type=FAIL), "r0", "failed definitely"),
        (lambda b: b.write(0, OpF.PUT, "other", "r0"), "r0", "another key"),
        (lambda b: None, "", "empty value"),
    ],
)
def test_values_that_should_not_exist_are_reported(setup, seen, problem) -> None:
    b = Builder()
    setup(b)
    index = b.read(1, "k", seen)
    violations = check_unexpected_values(b.history)
    assert len(violations) == 1
    assert problem in violations[0].message
    assert violations[0].op_indexes == (index,)


def test_a_value_read_before_its_write_was_invoked_is_reported() -> None:
    b = Builder()
    b.read(0, "k", "r9")
    b.write(1, OpF.PUT, "k", "r9")
    violations = check_unexpected_values(b.history)
    assert len(violations) == 1 and "only after" in violations[0].message


def test_a_value_read_while_its_write_is_in_flight_is_fine() -> None:
    b = Builder()
    invocation = b.invoke(1, OpF.PUT, "k", "r0")
    b.read(0, "k", "r0")
    b.complete(invocation, INFO)
    assert check_unexpected_values(b.history) == []


# --- resurrection ---------------------------------------------------------------------------


def test_a_deleted_value_that_comes_back_is_a_resurrection() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "d", "d0")
    r = b.read(0, "d", "d0")
    killer = b.write(0, OpF.DELETE, "d", None, ctx=r)
    r = b.read(0, "d")
    b.write(0, OpF.PUT, "d", "d9", ctx=r)
    final = b.final("d", "d0", "d9")
    violations = check_resurrection(b.history)
    assert len(violations) == 1
    assert violations[0].op_indexes == (killer, final)
    assert "d0" in violations[0].message
    assert check_lost_writes(b.history) == []


def test_a_value_whose_delete_timed_out_may_stay() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "d", "d0")
    r = b.read(0, "d", "d0")
    b.write(0, OpF.DELETE, "d", None, ctx=r, type=INFO)
    b.final("d", "d0")
    assert check_resurrection(b.history) == []


def test_a_concurrent_add_carrying_a_deleted_element_is_not_a_resurrection() -> None:
    b = Builder()
    b.write(0, OpF.ADD, "s", "a0")
    r1 = b.read(0, "s", "a0")
    r2 = b.read(1, "s", "a0")
    b.write(0, OpF.DELETE, "s", None, ctx=r1)
    b.write(1, OpF.ADD, "s", "a9", ctx=r2)
    b.final("s", "a9 a0")
    assert check_all(b.history, CheckConfig(convergence_bound=None)) == []


# --- siblings -------------------------------------------------------------------------------


def test_concurrent_blind_writes_may_be_siblings() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    b.write(1, OpF.PUT, "k", "r2")
    b.final("k", "r0", "r2")
    assert check_siblings(b.history) == []


def test_a_sibling_its_successor_had_read_is_reported_even_through_a_chain() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    r = b.read(0, "k", "r0")
    b.write(0, OpF.PUT, "k", "r4", ctx=r)
    r = b.read(1, "k", "r4")
    b.write(1, OpF.PUT, "k", "r8", ctx=r)
    b.final("k", "r0", "r8")
    violations = check_siblings(b.history)
    assert len(violations) == 1
    assert "r0 < r8" in violations[0].message


def test_set_siblings_contained_in_another_are_reported() -> None:
    b = Builder()
    r = b.read(0, "s")
    b.write(0, OpF.ADD, "s", "a2", ctx=r)
    r = b.read(1, "s", "a2")
    b.write(1, OpF.ADD, "s", "a5", ctx=r)
    b.read(2, "s", "a2", "a5 a2")
    assert [v.checker for v in check_siblings(b.history)] == ["siblings"]


def test_duplicate_siblings_are_reported() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "k", "r0")
    b.final("k", "r0", "r0")
    assert "duplicate < sibling" in check_siblings(b.history)[0].message


# --- convergence ----------------------------------------------------------------------------


def replicas(history: History, t: float, round: int, key: str, states) -> None:
    for node, values, clock in states:
        history.append(ReplicaState(t, round, node, key, values, clock))


def test_replicas_agreeing_within_the_bound_pass() -> None:
    h = History()
    h.append(FaultEvent(10.0, EventKind.HEAL))
    replicas(h, 20.0, 0, "k", [("n1", (b"a", b"b"), b"c"), ("n2", (b"b", b"a"), b"c")])
    assert check_convergence(h, bound=30.0) == []


def test_replicas_still_different_are_reported_with_their_states() -> None:
    h = History()
    h.append(FaultEvent(10.0, EventKind.HEAL))
    replicas(h, 20.0, 0, "k", [("n1", (b"a",), b"c1"), ("n2", (), b"")])
    violations = check_convergence(h, bound=30.0)
    assert len(violations) == 1
    assert "still differ" in violations[0].message
    assert violations[0].nodes == ("n1", "n2")


def test_replicas_that_all_read_as_deleted_agree_whatever_their_clocks() -> None:
    """A tombstone, a reaped tombstone's marker and nothing: reaping passes through these
    one replica at a time; a replica still holding a value is caught as before."""
    h = History()
    h.append(FaultEvent(10.0, EventKind.HEAL))
    replicas(h, 20.0, 0, "k", [("n1", (), b"c2"), ("n2", (), b""), ("n3", (), b"c1")])
    assert check_convergence(h, bound=30.0) == []
    replicas(h, 20.0, 0, "j", [("n1", (), b"c2"), ("n2", (b"a",), b"c1")])
    assert [v.keys for v in check_convergence(h, bound=30.0)] == [("j",)]


def test_replicas_agreeing_only_after_the_bound_are_reported() -> None:
    h = History()
    h.append(FaultEvent(10.0, EventKind.HEAL))
    replicas(h, 20.0, 0, "k", [("n1", (b"a",), b"c1"), ("n2", (), b"")])
    replicas(h, 50.0, 1, "k", [("n1", (b"a",), b"c1"), ("n2", (b"a",), b"c1")])
    assert "only at 50.000" in check_convergence(h, bound=30.0)[0].message
    assert check_convergence(h, bound=45.0) == []


def test_a_stale_replica_shows_every_clock_entry_not_a_truncated_prefix() -> None:
    actor = "0123456789abcdef0123.a1b2c3d4"
    newer = encode_context(VersionVector({actor: 33}))
    older = encode_context(VersionVector({actor: 32}))
    h = History()
    h.append(FaultEvent(10.0, EventKind.HEAL))
    replicas(h, 20.0, 0, "k", [("n1", (b"a", b"b"), newer), ("n2", (b"a",), older)])
    message = check_convergence(h, bound=30.0)[0].message
    assert "n1: [{a}, {b}] clock={012345.a1b2:33}" in message
    assert "n2: [{a}] clock={012345.a1b2:32}" in message


def test_convergence_without_samples_cannot_pass() -> None:
    assert check_convergence(History(), bound=30.0)[0].checker == "convergence"


# --- membership -----------------------------------------------------------------------------

BOUNDS = MembershipBounds(detect_within=5.0, max_pause=2.0, max_loss=0.1, max_delay=0.5, settle=3.0)
NODES = ("n1", "n2", "n3")


def membership(*events) -> History:
    h = History()
    for observer in NODES:
        for subject in NODES:
            if observer != subject:
                h.append(Observation(0.0, observer, subject, Liveness.ALIVE))
    for event in events:
        h.append(event)
    h.append(FaultEvent(100.0, EventKind.HEAL))
    return h


def dead(t: float, observer: str, subject: str) -> Observation:
    return Observation(t, observer, subject, Liveness.DEAD)


def test_a_crash_every_up_member_detects_in_time_passes() -> None:
    h = membership(
        FaultEvent(10.0, EventKind.CRASH, ("n3",)), dead(12.0, "n1", "n3"), dead(14.0, "n2", "n3")
    )
    assert check_membership(h, BOUNDS) == []


def test_a_member_that_misses_a_crash_is_reported() -> None:
    h = membership(
        FaultEvent(10.0, EventKind.CRASH, ("n3",)), dead(12.0, "n1", "n3"), dead(16.0, "n2", "n3")
    )
    violations = check_membership(h, BOUNDS)
    assert len(violations) == 1
    assert "undetected crash" in violations[0].message
    assert violations[0].nodes == ("n3", "n2")


def test_no_detection_is_required_from_a_paused_observer_or_after_a_quick_restart() -> None:
    paused = membership(
        FaultEvent(10.0, EventKind.CRASH, ("n3",)),
        FaultEvent(11.0, EventKind.PAUSE, ("n2",)),
        FaultEvent(12.0, EventKind.RESUME, ("n2",)),
        dead(12.0, "n1", "n3"),
    )
    assert check_membership(paused, BOUNDS) == []
    restarted = membership(
        FaultEvent(10.0, EventKind.CRASH, ("n3",)), FaultEvent(12.0, EventKind.RESTART, ("n3",))
    )
    assert check_membership(restarted, BOUNDS) == []


def test_a_healthy_node_declared_dead_inside_the_envelope_is_a_false_death() -> None:
    h = membership(
        FaultEvent(10.0, EventKind.PAUSE, ("n2",)),
        FaultEvent(11.5, EventKind.RESUME, ("n2",)),
        FaultEvent(20.0, EventKind.LOSS, amount=0.05),
        dead(13.0, "n1", "n2"),
        dead(25.0, "n3", "n1"),
    )
    violations = check_membership(h, BOUNDS)
    assert [v.nodes for v in violations] == [("n1", "n2"), ("n3", "n1")]
    assert all("false death" in v.message for v in violations)


@pytest.mark.parametrize(
    "events",
    [
        [FaultEvent(8.0, EventKind.PAUSE, ("n2",)), FaultEvent(11.0, EventKind.RESUME, ("n2",))],
        [FaultEvent(8.0, EventKind.PAUSE, ("n1",)), FaultEvent(11.0, EventKind.RESUME, ("n1",))],
        [
            FaultEvent(8.0, EventKind.PARTITION, links=(("n1", "n2"),)),
            FaultEvent(11.0, EventKind.HEAL),
        ],
        [FaultEvent(8.0, EventKind.LOSS, amount=0.5), FaultEvent(11.0, EventKind.HEAL)],
        [
            FaultEvent(8.0, EventKind.DELAY, ("n2",), amount=2.0),
            FaultEvent(11.0, EventKind.DELAY, ("n2",), ends=True),
        ],
        [FaultEvent(8.0, EventKind.CRASH, ("n2",)), FaultEvent(11.0, EventKind.RESTART, ("n2",))],
        [FaultEvent(8.0, EventKind.LEAVE, ("n2",))],
    ],
)
def test_deaths_outside_the_envelope_are_excused(events) -> None:
    h = membership(*events, dead(13.0, "n1", "n2"))
    assert [v for v in check_membership(h, BOUNDS) if "false death" in v.message] == []


def test_an_excuse_expires_after_the_settle_time() -> None:
    h = membership(
        FaultEvent(8.0, EventKind.PARTITION, links=(("n1", "n2"),)),
        FaultEvent(11.0, EventKind.HEAL, links=(("n1", "n2"),)),
        dead(14.5, "n1", "n2"),
    )
    assert len(check_membership(h, BOUNDS)) == 1


# --- all together, and the report ------------------------------------------------------------


def test_failure_report_prints_seed_options_and_the_shortened_history() -> None:
    b = Builder()
    b.write(0, OpF.PUT, "good", "r0")
    b.final("good", "r0")
    b.write(1, OpF.PUT, "bad", "r4")
    b.history.append(FaultEvent(b.tick(), EventKind.CRASH, ("n2",)))
    b.final("bad")
    violations = check_all(b.history, CheckConfig(convergence_bound=None))
    assert [v.checker for v in violations] == ["lost_writes"]
    report = failure_report(b.history, violations)
    assert "seed: 42" in report
    assert "faults=crash nodes=3" in report
    assert "CRASH n2" in report
    assert "bad" in report and "good" not in report.split("shortened history")[1]


def test_check_all_runs_the_configured_checkers() -> None:
    h = membership(dead(13.0, "n1", "n2"))
    config = CheckConfig(convergence_bound=10.0, membership=BOUNDS)
    assert {v.checker for v in check_all(h, config)} == {"convergence", "membership"}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda b: b.write(0, OpF.PUT, "k", "r0", ctx=0), "not an ok read"),
        (lambda b: (b.write(0, OpF.PUT, "k", "x"), b.write(0, OpF.PUT, "k", "x")), "already"),
        (lambda b: b.write(0, OpF.PUT, "k", "two words"), "single-word"),
        (lambda b: (b.invoke(0, OpF.PUT, "k", "r0"), b.invoke(0, OpF.PUT, "k", "r1")), "again"),
    ],
)
def test_malformed_histories_are_refused(build, message) -> None:
    b = Builder()
    build(b)
    with pytest.raises(ValueError, match=message):
        check_all(b.history)


# --- the checkers never flag a correct store ---------------------------------------------------


class ModelStore:
    """An atomic store with exact causality: siblings are writes no later write had seen.

    ``lww`` plants last-write-wins, to show the property below can fail.
    """

    def __init__(self, lww: bool = False) -> None:
        self.lww = lww
        self.siblings: dict[str, list[tuple[str, str]]] = {}

    def read(self, key: str) -> list[str]:
        return [value for _, value in self.siblings.get(key, [])]

    def write(self, key: str, token: str | None, seen: set[str], value: str) -> None:
        kept = [s for s in self.siblings.get(key, []) if s[0] not in seen and not self.lww]
        if token is not None:
            kept.append((token, value))
        self.siblings[key] = kept


def run_model(store: ModelStore, steps) -> History:
    b = Builder()
    processes = {p: p for p in range(4)}
    for worker, kind, key, outcome in steps:
        ctx = None
        seen: set[str] = set()
        if kind != "blind":
            values = store.read(key)
            ctx = b.read(processes[worker], key, *values)
            seen = {t for v in values for t in v.split()}
        f = {"add": OpF.ADD, "put": OpF.PUT, "blind": OpF.PUT, "delete": OpF.DELETE}[kind]
        token = None if f is OpF.DELETE else f"w{b.history.next_index}"
        invocation = b.invoke(processes[worker], f, key, token, ctx)
        if outcome is not FAIL:
            value = " ".join([token, *sorted(seen)]) if f is OpF.ADD and token else token
            store.write(key, token, seen, value or "")
        b.complete(invocation, outcome)
        if outcome is INFO:
            processes[worker] += 10
    for key in ("k1", "k2"):
        b.final(key, *store.read(key))
    return b.history


steps = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["add", "put", "blind", "delete"]),
        st.sampled_from(["k1", "k2"]),
        st.sampled_from([OK, OK, OK, FAIL, INFO]),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(steps)
def test_histories_of_a_correct_store_never_violate(steps) -> None:
    history = run_model(ModelStore(), steps)
    assert check_all(history, CheckConfig(convergence_bound=None)) == []


def test_the_model_with_last_write_wins_is_caught() -> None:
    concurrent_blind_puts = [(0, "blind", "k1", OK), (1, "blind", "k1", OK)]
    history = run_model(ModelStore(lww=True), concurrent_blind_puts)
    assert [v.checker for v in check_all(history, CheckConfig(convergence_bound=None))] == [
        "lost_writes"
    ]


def test_a_verdict_taken_over_from_a_cut_off_accuser_is_excused_and_no_other() -> None:
    """ci seed 5096 with reaping on: n2, cut off and then paused, declared n3 dead; when it
    came back its dead record spread and n1 held it for half a second until n3 refuted."""
    cut_off = [
        FaultEvent(10.0, EventKind.PARTITION, links=(("n2", "n3"), ("n3", "n2"))),
        FaultEvent(30.0, EventKind.HEAL),
        Observation(15.0, "n2", "n3", Liveness.DEAD, "n2"),
    ]
    taken_over = Observation(40.0, "n1", "n3", Liveness.DEAD, "n2")
    assert check_membership(membership(*cut_off, taken_over), BOUNDS) == []
    # The same verdict reached by n2 while nothing excused it is a false death, and so is
    # n1's copy of it.
    healthy = Observation(15.0, "n2", "n3", Liveness.DEAD, "n2")
    found = check_membership(membership(healthy, taken_over), BOUNDS)
    assert [v.nodes for v in found] == [("n2", "n3"), ("n1", "n3")]
    # n1's own verdict gets no excuse from n2's.
    own = Observation(40.0, "n1", "n3", Liveness.DEAD, "n1")
    found = check_membership(membership(*cut_off, own), BOUNDS)
    assert [v.nodes for v in found] == [("n1", "n3")]


def test_a_verdict_taken_over_from_an_accuser_whose_own_was_never_seen() -> None:
    """ci seed 8509: n7, back from an 11.9 s pause, declared n5 dead and was told otherwise
    before the next poll of its view; n3 held n7's record a moment longer. n7 was within
    its settle time after the pause, so n3's copy is excused; an accuser that nothing
    excused is not."""
    paused = [
        FaultEvent(15.0, EventKind.PAUSE, ("n7",)),
        FaultEvent(27.0, EventKind.RESUME, ("n7",)),  # excused until 30 (settle 3 s)
    ]
    taken_over = Observation(29.0, "n3", "n5", Liveness.DEAD, "n7")
    assert check_membership(membership(*paused, taken_over), BOUNDS) == []
    found = check_membership(membership(taken_over), BOUNDS)
    assert [v.nodes for v in found] == [("n3", "n5")]
