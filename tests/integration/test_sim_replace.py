"""Replacements (`serve --replace`) on the simulated network, under churn and faults."""

from __future__ import annotations

import json
from pathlib import Path

from p2pindex.sim.plan import plan_run
from p2pindex.sim.runner import run_simulation
from p2pindex.sim.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "p2pindex/sim/scenarios/replace-under-churn.toml"


def test_a_replaced_member_loses_nothing_under_churn_and_faults(tmp_path: Path) -> None:
    """Seed 1 replaces n3 by n7 at 64 s, among joins, leaves, removals, partitions and
    crashes: every checker passes (no acknowledged write lost, replicas converge), and the
    checkers' ring places n7 at n3's tokens (else the convergence sample would look at the
    wrong replicas)."""
    result = run_simulation(plan_run(load_scenario(SCENARIO), 1), output=tmp_path)
    assert result.passed, [str(v) for v in result.violations]
    events = [
        json.loads(line)
        for line in (Path(result.output_dir) / "history.jsonl").read_text().splitlines()
        if '"kind":"fault"' in line
    ]
    replaced = [e for e in events if e["fault"] == "remove" and e["detail"].startswith("replaced")]
    assert replaced, "the seed replaced nobody"
