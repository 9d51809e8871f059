"""Simulation seeds that once failed, replayed whole.

Each names what went wrong. A replay proves the fix only while the schedule still reaches
the fault, so each also has a focused test next to the code it fixed; the replay guards
the seed itself, which users and CI may rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

from p2pindex.cli.simulate import PACKAGED_SCENARIOS
from p2pindex.sim.plan import plan_run
from p2pindex.sim.runner import run_simulation
from p2pindex.sim.scenario import load_scenario

SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"


def test_seed_52084_a_death_taken_over_by_gossip_is_recorded_with_its_accuser(
    tmp_path: Path,
) -> None:
    """n6 declared n5 dead while it was paused and gossiped it once it resumed; n3 took
    the death over and heard the refutation before its view caught up. The harness paired
    the view's "dead" with the SWIM table's "alive, no accuser", so n3 was judged as if it
    had decided on its own (tests/unit/test_swim_core.py has the mechanism)."""
    plan = plan_run(load_scenario(PACKAGED_SCENARIOS / "ci.toml"), 52084)
    result = run_simulation(plan, output=tmp_path)
    assert result.violations == []
    history = tmp_path / "history.jsonl"
    verdicts = [
        record
        for record in map(json.loads, history.read_text().splitlines())
        if record["kind"] == "obs" and record["liveness"] in ("suspect", "dead")
    ]
    assert verdicts
    assert all(record.get("accuser") for record in verdicts)


def test_supersede_seed_272_a_leaving_fallback_hands_its_hinted_writes_over(
    tmp_path: Path,
) -> None:
    """n1 was leaving when it took two writes at ONE as a fallback (the key's replicas were
    paused, out of disk space and failing fsync), and it left holding the only copies: its
    range push skipped the key, which it did not replicate, and its hints left with it
    (tests/unit/test_hint_departures.py has the mechanism)."""
    plan = plan_run(load_scenario(SIMULATIONS / "supersede.toml"), 272)
    result = run_simulation(plan, output=tmp_path)
    assert result.violations == []
