"""simulations/soak.py: what makes a soak resumable and its failures replayable."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "simulations" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


soak = load_soak()


def test_finished_seeds_of_the_range_are_read_back_and_a_torn_line_is_skipped(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.jsonl"
    lines = [
        json.dumps({"seed": 5, "passed": True, "trace_hash": "aa"}),
        json.dumps({"seed": 6, "passed": False, "violations": ["[lost_writes] k: r1"], "count": 2}),
        json.dumps({"seed": 99, "passed": True}),
        '{"seed": 7, "pass',
    ]
    state.write_text("\n".join(lines), encoding="utf-8")
    done = soak.load_state(state, range(5, 10))
    assert sorted(done) == [5, 6]
    assert done[6].passed is False and done[6].count == 2
    assert soak.load_state(tmp_path / "missing.jsonl", range(5, 10)) == {}


def test_a_failure_names_its_replay_command_with_the_planted_bugs() -> None:
    result = soak.SeedResult(6, False, "", ("[lost_writes] k: r1",), 3)
    text = soak.describe_failure("ci", result, ["lww"])
    assert text.splitlines() == [
        "seed 6 FAILED (3 violation(s)): p2pindex simulate ci --seed 6 --plant-bug lww",
        "    [lost_writes] k: r1",
        "    ... and 2 more",
    ]


def test_a_run_that_raises_is_a_failure_with_its_error() -> None:
    result = soak.run_seed(("no-such-scenario", 1, None, ()))
    assert not result.passed
    assert result.violations[0].startswith("[run error] ")
