"""The index checker catches a planted index bug, and the same seed passes without it.

The bug (``p2pindex.sim.index_bugs``: a tombstone leaves its key's index rows behind, as in
Riak's riak_kv#330) is planted through the simulated disk, a seam the simulator owns.
"""

from __future__ import annotations

from pathlib import Path

from p2pindex.sim import runner
from p2pindex.sim.index_bugs import planted
from p2pindex.sim.plan import plan_run
from p2pindex.sim.scenario import load_scenario

SCENARIO = (
    Path(__file__).resolve().parents[2] / "simulations" / ("planted-index-lingering-tombstone.toml")
)
SEED = 1


def run(bug: str | None) -> list:
    plan = plan_run(load_scenario(SCENARIO), SEED)
    if bug is None:
        return runner.run_simulation(plan).violations
    with planted(bug):
        return runner.run_simulation(plan).violations


def test_lingering_index_rows_of_deleted_keys_are_caught_by_the_index_checker() -> None:
    caught = [v for v in run("index-lingering-tombstone") if v.checker == "index"]
    assert caught, "the index checker missed keys that stayed in the index after a delete"
    assert "a delete at all" in caught[0].message


def test_the_same_seed_passes_without_the_bug() -> None:
    assert run(None) == []
