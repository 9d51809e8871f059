"""Determinism of whole simulations, and the `p2pindex simulate` command end to end.

A seed decides everything: the same seed and code must give the same trace hash, in the
same process and in separate processes (where the command fixes PYTHONHASHSEED itself).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from p2pindex.cli.main import main
from p2pindex.sim.determinism import DeterminismUnavailable, seed_trio_scheduler, tick_clock
from p2pindex.sim.membership_run import run_membership
from p2pindex.sim.plan import plan_membership, plan_run
from p2pindex.sim.runner import run_simulation
from p2pindex.sim.scenario import Scenario, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "name": "small",
    "nodes": 3,
    "replicas": 3,
    "duration": 25.0,
    "quiesce": 12.0,
    "faults": {
        "count": 6,
        "kinds": ["partition", "crash", "pause", "loss", "slow", "fsync_error"],
    },
    "workload": {"processes": 3, "think": 0.3},
    "checks": {"convergence_bound": 12.0},
}


def small(**changes: object) -> Scenario:
    return scenario_from_dict({**SMALL, **changes})


def test_trio_still_has_the_scheduler_switch_we_rely_on() -> None:
    """Canary: deterministic scheduling uses private trio names; fail loudly if they go."""
    run_module = trio._core._run
    seed_trio_scheduler(7)
    assert run_module._ALLOW_DETERMINISTIC_SCHEDULING is True
    first = [run_module._r.random() for _ in range(3)]
    seed_trio_scheduler(7)
    assert [run_module._r.random() for _ in range(3)] == first


def test_a_missing_switch_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(trio._core._run, "_r")
    with pytest.raises(DeterminismUnavailable, match="pinned"):
        seed_trio_scheduler(1)


def test_tick_clock_fires_timers_of_one_tick_together() -> None:
    """Canary for the autojump override: deadlines round up to whole ticks."""
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await trio.sleep(delay)
        woke.append((name, trio.current_time()))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, "a", 0.013)
            nursery.start_soon(sleeper, "b", 0.017)
            nursery.start_soon(sleeper, "c", 0.021)

    trio.run(main, clock=tick_clock(0.01))
    times = dict(woke)
    assert times["a"] == pytest.approx(0.02) and times["b"] == pytest.approx(0.02)
    assert times["c"] == pytest.approx(0.03)


def test_same_seed_same_trace_in_one_process() -> None:
    scenario = small()
    first = run_simulation(plan_run(scenario, 11))
    second = run_simulation(plan_run(scenario, 11))
    assert first.trace_hash == second.trace_hash
    assert first.trace_events == second.trace_events > 1000
    assert first.ops == second.ops > 50
    other = run_simulation(plan_run(scenario, 12))
    assert other.trace_hash != first.trace_hash


def test_membership_engine_is_deterministic() -> None:
    scenario = scenario_from_dict(
        {
            "engine": "swim",
            "nodes": 40,
            "duration": 40.0,
            "quiesce": 10.0,
            "faults": {"count": 4, "kinds": ["crash", "pause", "loss", "partition"]},
        }
    )
    one = run_membership(plan_membership(scenario, 3))
    two = run_membership(plan_membership(scenario, 3))
    assert one.trace_hash == two.trace_hash
    assert one.faults == 4 and one.passed, one.report


def simulate(*args: str, env_hash_seed: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    if env_hash_seed is not None:
        env["PYTHONHASHSEED"] = env_hash_seed
    return subprocess.run(
        [sys.executable, "-m", "p2pindex", "simulate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
        check=False,
    )


def trace_hash(output: str) -> str:
    match = re.search(r"^trace hash: ([0-9a-f]{32})$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_separate_processes_give_the_same_hash(tmp_path: Path) -> None:
    """Each process starts with its own random hash seed; the command re-executes under 0."""
    scenario = tmp_path / "small.toml"
    scenario.write_text(
        "nodes = 3\nduration = 20.0\nquiesce = 12.0\n"
        "[faults]\ncount = 4\nkinds = ['partition', 'crash', 'loss', 'pause']\n"
        "[workload]\nprocesses = 3\nthink = 0.3\n[checks]\nconvergence_bound = 12.0\n"
    )
    args = (str(scenario), "--seed", "5", "--output", str(tmp_path / "out"))
    first = simulate(*args, env_hash_seed="1")
    second = simulate(*args, env_hash_seed="2")
    third = simulate(*args)
    # Exit 1 would mean the checkers found violations: a finding about the node, not about
    # determinism, which is what this test is for.
    for result in (first, second, third):
        assert result.returncode in (0, 1), result.stdout + result.stderr
    assert trace_hash(first.stdout) == trace_hash(second.stdout) == trace_hash(third.stdout)
    run_dir = tmp_path / "out" / "small-5"
    for name in ("history.jsonl", "timeline.svg", "schedule.json", "summary.txt"):
        assert (run_dir / name).stat().st_size > 0, name
    svg = (run_dir / "timeline.svg").read_text()
    assert svg.startswith("<svg") and "membership view" in svg and "divergence" in svg
    assert "operations" in first.stdout and "faults" in first.stdout


def simulate_here(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the command in this process; with the hash seed fixed it never re-executes."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.chdir(ROOT)
    try:
        code = main(["simulate", *args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope",), "no scenario 'nope'"),
        (("ci", "--faults", "lightning"), "unknown fault kind 'lightning'"),
        (("ci", "--plant-bug", "gremlin"), "unknown planted bug"),
        (("split-brain", "--nodes", "4"), "partitions 6 nodes but the cluster has only 4"),
        (("ci", "--nodes", "2"), "replicas: 3 replicas need at least as many nodes"),
        (("ci", "--fault-count", "5"), "5 faults cannot cover 12 kinds"),
        (("membership-1000", "--faults", "clock_skew"), "swim engine simulates"),
        (("ci", "--seeds", "0"), "must be at least 1"),
        (("ci", "--seed", "-3"), "must not be negative"),
        (("ci", "--frobnicate"), "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_input_is_one_clear_error_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    code, out, err = simulate_here(monkeypatch, capsys, *args)
    assert code == 2, out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "simulating" not in out


def test_malformed_scenario_file_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("nodes = 5\n[faults\n")
    code, _, err = simulate_here(monkeypatch, capsys, str(broken))
    assert code == 2
    assert f"{broken}: malformed TOML" in err


def test_list_shows_every_shipped_scenario(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = simulate_here(monkeypatch, capsys, "--list")
    assert code == 0
    for name in (
        "ci",
        "partition-heal",
        "split-brain",
        "flapping-node",
        "rolling-restart",
        "join-under-load",
        "replace-under-churn",
        "membership-1000",
    ):
        assert name in out


def test_the_ci_batch_runs_seeds_twice_and_compares_their_hashes(tmp_path: Path) -> None:
    """What CI's batch does (``--verify-determinism``), on one short seed of the ci scenario."""
    result = simulate(
        "ci",
        "--seeds",
        "1",
        "--first-seed",
        "3",
        "--nodes",
        "5",
        "--duration",
        "14",
        "--fault-count",
        "12",
        "--jobs",
        "1",
        "--verify-determinism",
        "1",
        "--output",
        str(tmp_path / "out"),
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "1 of them twice" in result.stdout
    assert "1 seeds run twice, 0 differed" in result.stdout
    assert "not deterministic" not in result.stderr


def test_a_seed_with_leaves_is_deterministic_too() -> None:
    """Found by a helper: join-under-load seed 93150 gave a different trace each run. A
    leaving node asked its peers for their whole status, whose timings and CPU load come
    from the real clocks, so the replies' sizes (and what followed) varied; it now asks
    only whether they are leaving."""
    path = ROOT / "p2pindex" / "sim" / "scenarios" / "join-under-load.toml"
    scenario = load_scenario(path)
    first = run_simulation(plan_run(scenario, 93150))
    second = run_simulation(plan_run(scenario, 93150))
    assert first.trace_hash == second.trace_hash
