"""`p2pindex simulate`: a seed whose run raises is a failing seed, not the end of the batch.

Batch seeds run in worker processes started with ``spawn``, which a monkeypatch in this
process does not reach. The batch tests therefore plant the error in the workers the way
Python lets any process be adjusted at start-up: a ``sitecustomize`` module on
``PYTHONPATH`` (inherited by every spawned worker) wraps ``run_simulation``, the function a
worker calls to run one seed, so that the chosen seeds raise and the others run for real.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from p2pindex.cli import simulate
from p2pindex.sim import runner
from p2pindex.sim.scenario import load_scenario
from tests.integration.test_sim_determinism import simulate_here

ROOT = Path(__file__).resolve().parents[2]
SHORT = ("--nodes", "5", "--duration", "14", "--fault-count", "12")
"""A short run of the ci scenario (as in test_sim_determinism)."""
SITECUSTOMIZE = '''\
"""Planted by tests/integration/test_simulate_seed_raises.py in spawned batch workers."""
import p2pindex.sim.runner as _runner

_real = _runner.run_simulation


def _planted(plan, **kwargs):
    if plan.seed in {raising}:
        raise ValueError(f"planted for seed {{plan.seed}}\\nsecond line of the message")
    return _real(plan, **kwargs)


_runner.run_simulation = _planted
'''


def plant_in_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *seeds: int) -> None:
    """Make ``seeds`` raise in every worker process the batch spawns from now on."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(raising=set(seeds)))
    # The workers import p2pindex from start-up on, before the working directory is on
    # their path: point them at the same p2pindex as this process.
    package_root = Path(runner.__file__).resolve().parents[2]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(package_root)]))


def seed_line(out: str, seed: int) -> str:
    lines = [line for line in out.splitlines() if re.match(rf"^  seed +{seed}  ", line)]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_seed_that_raises_fails_alone_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    jobs: str,
) -> None:
    plant_in_workers(monkeypatch, tmp_path, 2)
    out_dir = tmp_path / "out"
    extra = ("--verify-determinism", "3") if jobs == "2" else ()
    code, out, err = simulate_here(
        monkeypatch,
        capsys,
        "ci",
        "--seeds",
        "3",
        *SHORT,
        "--jobs",
        jobs,
        "--output",
        str(out_dir),
        *extra,
    )
    assert code == 1, out + err
    traceback_file = out_dir / "ci-2" / "traceback.txt"
    replay = "p2pindex simulate ci --seed 2 --nodes 5 --duration 14 --fault-count 12"
    line = seed_line(out, 2)
    assert "FAIL" in line and "raised ValueError: planted for seed 2;" in line, line
    assert f"traceback: {traceback_file};" in line and line.endswith(f"replay: {replay}"), line
    assert "second line" not in line
    for seed in (1, 3):  # the other seeds ran to the end, each with its trace hash
        assert re.search(r" [0-9a-f]{32}$", seed_line(out, seed)), out
    assert re.search(r"^  seeds +3$", out, re.MULTILINE), out
    assert re.search(r"^  failed +\d+ \(1 raised an exception\)$", out, re.MULTILINE), out
    assert "seed 2 FAILED: the run raised ValueError: planted for seed 2\n" in out
    assert f"  traceback: {traceback_file}\n  replay:    {replay}\n" in out
    text = traceback_file.read_text()
    assert text.startswith(f"seed 2 of ci raised ValueError: planted for seed 2\nreplay: {replay}")
    assert "Traceback (most recent call last)" in text and "second line of the message" in text
    if extra:  # both runs of seed 2 raised: reported once, and not as nondeterministic
        assert "3 seeds run twice, 0 differed" in out
        assert "not deterministic" not in err
        assert out.count("seed 2 FAILED") == 1 and out.count("planted for seed 2;") == 1


@pytest.mark.parametrize("form", ["text", "json"])
def test_a_batch_in_which_every_seed_raises_still_ends_with_its_report(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    form: str,
) -> None:
    plant_in_workers(monkeypatch, tmp_path, 4, 5)
    out_dir = tmp_path / "out"
    args = ("ci", "--seeds", "2", "--first-seed", "4", *SHORT, "--jobs", "1")
    code, out, err = simulate_here(
        monkeypatch, capsys, *args, "--output", str(out_dir), "--format", form
    )
    assert code == 1, out + err
    if form == "json":
        documents = [json.loads(line) for line in out.splitlines()]
        assert [(d["seed"], d["passed"]) for d in documents] == [(4, False), (5, False)]
        assert documents[0]["error"] == "ValueError: planted for seed 4"
        assert documents[0]["traceback_file"] == str(out_dir / "ci-4" / "traceback.txt")
        assert documents[0]["replay"].startswith("p2pindex simulate ci --seed 4 ")
        return
    assert re.search(r"^  passed +0$", out, re.MULTILINE), out
    assert re.search(r"^  failed +2 \(2 raised an exception\)$", out, re.MULTILINE), out
    assert re.search(r"^  operations per seed +none finished$", out, re.MULTILINE), out
    assert (out_dir / "ci-5" / "traceback.txt").is_file()


def test_a_single_run_that_raises_names_its_seed_and_replay(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def raising(plan: object, **_: object) -> object:
        raise RuntimeError("the node broke")

    monkeypatch.setattr(runner, "run_simulation", raising)
    out_dir = tmp_path / "out"
    code, out, err = simulate_here(
        monkeypatch, capsys, "ci", "--seed", "7", "--output", str(out_dir)
    )
    assert code == 1, out + err
    assert "simulating ci with seed 7" in out
    traceback_file = out_dir / "ci-7" / "traceback.txt"
    assert "Traceback (most recent call last)" in err and "raising" in err
    assert err.rstrip().endswith(
        "error: seed 7 FAILED: the run raised RuntimeError: the node broke\n"
        f"  traceback: {traceback_file}\n"
        "  replay:    p2pindex simulate ci --seed 7"
    ), err
    assert "RuntimeError: the node broke" in traceback_file.read_text()


def test_without_a_writable_directory_the_traceback_is_printed_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    try:
        raise KeyError("k")
    except KeyError as exc:
        error = simulate.seed_error("ci", 3, exc, blocker / "ci-3", "p2pindex simulate ci --seed 3")
    assert error.traceback_file is None
    simulate._batch_summary({}, {}, 0.0, {3: error}, [], twice=0)
    out = capsys.readouterr().out
    assert "seed 3 FAILED: the run raised KeyError: 'k'" in out
    assert "(not written, printed below)" in out
    assert out.count("Traceback (most recent call last)") == 1


def test_an_error_inside_nested_groups_is_named_by_the_error_itself() -> None:
    inner = ExceptionGroup("Exceptions from Trio nursery", [OSError("disk gone")])
    assert simulate.describe_exception(ExceptionGroup("outer", [inner])) == "OSError: disk gone"
    several = ExceptionGroup("many", [ValueError("a"), KeyError("b")])
    assert simulate.describe_exception(several) == (
        "ExceptionGroup of 2 errors, the first ValueError: a"
    )
    assert simulate.describe_exception(AssertionError()) == "AssertionError"


def test_an_interrupt_is_not_turned_into_a_failing_seed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only ``Exception`` is caught: Ctrl-C (or a cancellation) still stops the batch."""

    def interrupted(plan: object, **_: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_simulation", interrupted)
    scenario = load_scenario(simulate.PACKAGED_SCENARIOS / "ci.toml")
    job = simulate._Job(scenario, 1, tmp_path, False, "p2pindex simulate ci --seed 1")
    with pytest.raises(KeyboardInterrupt):
        simulate._batch_worker(job)
    assert not (tmp_path / "ci-1").exists()


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "soak_seed_raises", ROOT / "simulations" / "soak.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_soak_records_a_seed_that_raises_as_failed_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """simulations/soak.py runs seeds with its own worker (``run_seed``), which the soak's
    pool calls: a raising run comes back as a failed SeedResult, not as a crash."""
    soak = load_soak()

    def raising(plan: object, **_: object) -> object:
        raise ValueError("soak planted")

    monkeypatch.setattr(soak, "run_simulation", raising)
    result = soak.run_seed(("ci", 12, str(tmp_path), ("lww",)))
    traceback_file = tmp_path / "ci-12" / "traceback.txt"
    assert (result.seed, result.passed, result.count) == (12, False, 1)
    assert result.violations == (
        f"[run error] ValueError: soak planted (traceback in {traceback_file})",
    )
    assert "Traceback (most recent call last)" in traceback_file.read_text()
    assert soak.describe_failure("ci", result, ["lww"]).splitlines()[0] == (
        f"seed 12 FAILED (the run raised; files in {tmp_path / 'ci-12'}): "
        "p2pindex simulate ci --seed 12 --plant-bug lww"
    )
    without_output = soak.run_seed(("ci", 13, None, ()))
    assert without_output.violations == ("[run error] ValueError: soak planted",)
    assert soak.describe_failure("ci", without_output, ()).splitlines()[0] == (
        "seed 13 FAILED (the run raised): p2pindex simulate ci --seed 13"
    )
    assert capsys.readouterr().err.count("ValueError: soak planted") == 2  # header, traceback
