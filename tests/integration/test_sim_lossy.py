"""A network that loses datagrams everywhere at once, on the simulated network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pindex.sim.plan import plan_run
from p2pindex.sim.runner import run_simulation
from p2pindex.sim.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "p2pindex/sim/scenarios/lossy-network.toml"


@pytest.mark.parametrize("seed", [1, 2])
def test_a_network_wide_lossy_spell_does_not_stop_quorum_requests(
    seed: int, tmp_path: Path
) -> None:
    """45% of every datagram lost for 40 s raises every node's local-health score together.
    The nodes must keep serving: no read or write at ONE or QUORUM fails (ALL may, while a
    member is suspected), and every checker passes. When poor local health made a node
    DEGRADED, two of the three dropped out and hundreds of QUORUM requests failed."""
    result = run_simulation(plan_run(load_scenario(SCENARIO), seed), output=tmp_path)
    assert result.passed, [str(v) for v in result.violations]
    ops = [
        json.loads(line)
        for line in (Path(result.output_dir) / "history.jsonl").read_text().splitlines()
        if '"kind":"op"' in line
    ]
    failed = [op for op in ops if op["type"] == "fail" and op["consistency"] != "all"]
    assert len(ops) > 3000 and not failed, failed[:5]
