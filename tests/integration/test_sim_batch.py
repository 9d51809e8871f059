"""The batch scenario (simulations/batch.toml): get_many, put_many and delete_many through the
real client and nodes, under the CI faults and churn, judged key by key by the checkers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from p2pindex.sim.plan import plan_run
from p2pindex.sim.runner import run_simulation
from p2pindex.sim.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "simulations" / "batch.toml"


def test_a_batch_seed_passes_with_batches_of_every_kind_under_faults(tmp_path: Path) -> None:
    result = run_simulation(plan_run(load_scenario(SCENARIO), 1), output=tmp_path)
    assert result.violations == []
    ops = [
        record
        for record in map(json.loads, (tmp_path / "history.jsonl").read_text().splitlines())
        if record["kind"] == "op" and record["key"].startswith("batch-")
    ]
    invoked = [op for op in ops if op["type"] == "invoke"]
    calls = Counter((op["time"], op["node"], op["f"]) for op in invoked)
    assert max(calls.values()) >= 3, "no batch call carried three keys"
    assert {f for (_, _, f) in calls} == {"read", "put", "delete", "final"}
    ended = Counter(op["type"] for op in ops if op["type"] != "invoke")
    assert ended["ok"] > 1000
    assert ended["info"] > 0, "the faults left no batch key indeterminate"
