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


SHORT_LWW = """\
# planted-lww cut to 4 s of workload: every seed fails (lost_writes) in about half a second.
name = "lww-short"
nodes = 3
replicas = 3
duration = 4.0
quiesce = 8.0

[workload]
processes = 6
think = 0.1
mix = { set_add = 3.0, register = 1.0 }

[checks]
convergence_bound = 8.0
"""


def test_failing_seeds_keep_their_files_each_in_its_own_folder(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    """Two seeds caught by the checker (planted bug lww) share one --output: each seed's
    files go to <output>/<scenario>-<seed>/, as in a simulate batch, and its report line
    names that folder. The seeds run in the soak's spawned worker, which finds the soak
    module (imported here as ``soak``) through the path it inherits."""
    scenario = tmp_path / "lww-short.toml"
    scenario.write_text(SHORT_LWW, encoding="utf-8")
    out_dir = tmp_path / "out"
    state = tmp_path / "state.jsonl"
    monkeypatch.setenv("PYTHONHASHSEED", "0")  # so the soak does not re-execute itself
    monkeypatch.syspath_prepend(str(ROOT / "simulations"))
    seeds = ["--first-seed", "1", "--seeds", "2", "--jobs", "1", "--plant-bug", "lww"]
    code = soak.main([str(scenario), *seeds, "--output", str(out_dir), "--state", str(state)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert sorted(path.name for path in out_dir.iterdir()) == ["lww-short-1", "lww-short-2"]
    for seed in (1, 2):
        folder = out_dir / f"lww-short-{seed}"
        schedule = json.loads((folder / "schedule.json").read_text(encoding="utf-8"))
        assert schedule["seed"] == seed
        with (folder / "history.jsonl").open(encoding="utf-8") as history:
            assert json.loads(history.readline())["seed"] == seed
        summary = (folder / "summary.txt").read_text(encoding="utf-8")
        assert f"--seed {seed} --plant-bug lww" in summary
        lines = [line for line in out.splitlines() if line.startswith(f"seed {seed} FAILED")]
        assert len(lines) == 1, out
        assert f"; files in {folder}): p2pindex simulate {scenario} --seed {seed}" in lines[0]
    # A resumed soak reads the folders back and names them again.
    done = soak.load_state(state, range(1, 3))
    assert {seed: result.output for seed, result in done.items()} == {
        1: str(out_dir / "lww-short-1"),
        2: str(out_dir / "lww-short-2"),
    }
