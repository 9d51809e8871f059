"""Writes destroyed by faults: the seed-146 case, and every way the excuse must not stretch.

Seed 146 of `ci`: four writes at ONE were acknowledged by n3 alone (its other replicas were
down or failing their commits), and n3's disk was wiped a few milliseconds later. The
writes were lost by design; what they replaced came back. The runner now records, per
crash, the committed copies destroyed (``CopyLoss``), and the checkers excuse exactly such
a write and nothing else.
"""

from __future__ import annotations

import random

import trio
import trio.testing

from p2pindex.core import versions
from p2pindex.core.versions import VersionVector
from p2pindex.sim.checkers import (
    CheckConfig,
    Violation,
    check_lost_writes,
    check_resurrection,
)
from p2pindex.sim.checkers import check_all as check_every
from p2pindex.sim.disk import SimDisk
from p2pindex.sim.faults import DiskMode
from p2pindex.sim.history import CopyLoss, History, OpF, OpType, RunMeta
from p2pindex.sim.losses import copy_losses, record_tokens


def check_all(history: History) -> list[Violation]:
    return check_every(history, CheckConfig(convergence_bound=None))


class Run:
    """A history with a clock that ticks on every record."""

    def __init__(self) -> None:
        self.history = History(RunMeta(146, {"replicas": 3}))
        self.t = 0.0

    def tick(self) -> float:
        self.t += 1.0
        return self.t

    def read(self, p: int, key: str, *values: str, f: OpF = OpF.READ) -> int:
        op = self.history.invoke(p, f, key, time=self.tick())
        value = tuple(v.encode() for v in values)
        return self.history.complete(op, OpType.OK, time=self.tick(), value=value).index

    def write(
        self, p: int, f: OpF, key: str, token: str, consistency: str, ctx: int | None = None
    ) -> int:
        op = self.history.invoke(
            p, f, key, token.encode(), time=self.tick(), consistency=consistency, ctx=ctx
        )
        self.history.complete(op, OpType.OK, time=self.tick())
        return op.index

    def loss(self, node: str, key: str, tokens: str, gone: str) -> None:
        self.history.append(
            CopyLoss(
                self.tick(),
                node,
                key,
                tuple(t.encode() for t in tokens.split()),
                tuple(t.encode() for t in gone.split()),
            )
        )


def seed_146(consistency: str = "one") -> Run:
    """r2 overwrites r1 at ``consistency``; the only node holding r2 is wiped."""
    run = Run()
    run.write(0, OpF.PUT, "register-2", "r1", "quorum")
    seen = run.read(1, "register-2", "r1")
    run.write(1, OpF.PUT, "register-2", "r2", consistency, ctx=seen)
    run.loss("n3", "register-2", "r2", gone="r2")
    return run


def test_a_write_at_one_whose_only_copy_was_wiped_is_not_required_to_survive() -> None:
    run = seed_146()
    run.read(9, "register-2", "r1", f=OpF.FINAL)
    assert check_all(run.history) == []


def test_without_the_loss_record_the_same_history_is_a_lost_write_and_a_resurrection() -> None:
    run = Run()
    run.write(0, OpF.PUT, "register-2", "r1", "quorum")
    seen = run.read(1, "register-2", "r1")
    run.write(1, OpF.PUT, "register-2", "r2", "one", ctx=seen)
    run.read(9, "register-2", "r1", f=OpF.FINAL)
    assert [v.checker for v in check_lost_writes(run.history)] == ["lost_writes"]
    assert [v.checker for v in check_resurrection(run.history)] == ["resurrection"]


def test_a_copy_lost_while_another_disk_still_held_it_excuses_nothing() -> None:
    run = Run()
    run.write(0, OpF.PUT, "register-2", "r1", "one")
    run.loss("n3", "register-2", "r1", gone="")
    run.read(9, "register-2", f=OpF.FINAL)
    assert [v.checker for v in check_lost_writes(run.history)] == ["lost_writes"]


def test_a_quorum_write_needs_two_destroyed_copies() -> None:
    run = seed_146("quorum")
    run.read(9, "register-2", "r1", f=OpF.FINAL)
    assert {v.checker for v in check_all(run.history)} == {"lost_writes", "resurrection"}

    twice = Run()
    twice.write(0, OpF.PUT, "register-2", "r1", "quorum")
    twice.loss("n2", "register-2", "r1", gone="")
    twice.loss("n3", "register-2", "r1", gone="r1")
    twice.read(9, "register-2", f=OpF.FINAL)
    assert check_all(twice.history) == []


def test_a_token_read_again_after_it_was_gone_must_survive() -> None:
    run = seed_146()
    run.read(2, "register-2", "r2")  # it came back from somewhere: then it must stay
    run.read(9, "register-2", "r1", f=OpF.FINAL)
    assert [v.checker for v in check_lost_writes(run.history)] == ["lost_writes"]


def test_an_unacknowledged_or_other_write_is_untouched_by_a_loss() -> None:
    run = Run()
    run.write(0, OpF.ADD, "set", "a1", "one")
    run.write(1, OpF.ADD, "set", "a2", "one")
    run.loss("n3", "set", "a1", gone="a1")
    run.read(9, "set", "a1", f=OpF.FINAL)
    assert [v.message for v in check_lost_writes(run.history)] == [
        "set: 1 acknowledged write(s) missing from the final read #5: a2"
    ]


def test_copy_losses_saved_and_loaded_are_the_same() -> None:
    run = seed_146()
    loaded = History.from_lines(run.history.to_lines())
    assert loaded.losses == run.history.losses


def record(*values: str) -> bytes:
    obj = None
    for value in values:
        obj = versions.update(obj, VersionVector(), "n3.e1", value.encode())
    assert obj is not None
    return versions.encode_object(obj)


async def test_a_wipe_reports_committed_copies_and_which_no_other_disk_holds() -> None:
    rng = random.Random(1)
    wiped, other = SimDisk("n3", rng, latency=0.0), SimDisk("n2", rng, latency=0.0)
    mine = wiped.open()
    await mine.put(b"k", record("r1 r0", "r2"))
    await other.open().put(b"k", record("r1"))
    durable = wiped.durable_records()
    await wiped.crash(DiskMode.WIPED)
    [loss] = copy_losses(5.0, "n3", durable, wiped, [wiped, other])
    assert loss.tokens == (b"r0", b"r1", b"r2")
    assert loss.gone == (b"r0", b"r2")


async def test_a_write_still_in_flight_is_not_a_committed_copy(
    autojump_clock: trio.abc.Clock,
) -> None:
    """What ack-before-commit or an ack after a failed commit loses is never excused."""
    disk = SimDisk("n3", random.Random(1), latency=1.0)
    storage = disk.open()
    await storage.put(b"k", record("r1"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(storage.put, b"k", record("r1", "r2"))
        await trio.testing.wait_all_tasks_blocked()
        assert record_tokens(disk.records()[b"k"]) == {b"r1", b"r2"}
        assert record_tokens(disk.durable_records()[b"k"]) == {b"r1"}
        nursery.cancel_scope.cancel()


async def test_a_removed_node_loses_everything_only_it_held_even_with_its_disk_kept() -> None:
    """Index seed 35: two writes at ONE reached only n4 and n6, which an operator then
    removed; no disk the cluster can read holds them, so they were lost by design."""
    rng = random.Random(1)
    removed, other = SimDisk("n4", rng, latency=0.0), SimDisk("n2", rng, latency=0.0)
    await removed.open().put(b"k", record("r1 r0", "r2"))
    await other.open().put(b"k", record("r1"))
    await removed.crash(DiskMode.KEPT)
    durable = removed.durable_records()
    [loss] = copy_losses(5.0, "n4", durable, None, [other], undeliverable_hints="n4-id")
    assert loss.tokens == (b"r0", b"r1", b"r2")
    assert loss.gone == (b"r0", b"r2")
    # The same crash without the removal destroyed nothing: the disk kept every record.
    assert copy_losses(5.0, "n4", durable, removed, [removed, other]) == []
