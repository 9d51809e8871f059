"""`p2pindex simulate` on a membership-only scenario (``engine = "swim"``): a seed whose run
raises is a failing seed, as in a cluster batch (test_simulate_seed_raises), not the end of
the batch.

Membership seeds run one after another in the command's own process whatever ``--jobs``
says (no worker processes), so a monkeypatch of ``run_membership`` reaches every seed; the
``--jobs 2`` case pins that. Were they ever spread over spawned workers, that case would
stop seeing the planted error and the planting would have to move into the workers, as
test_simulate_seed_raises does with a ``sitecustomize`` module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2pindex.sim import membership_run
from tests.integration.test_sim_determinism import simulate_here
from tests.integration.test_simulate_seed_raises import seed_line

SCENARIO = "membership-1000"
SHORT = ("--nodes", "10", "--duration", "20", "--fault-count", "3")
"""A small, short run of the membership scenario (a tenth of a second per seed)."""
REPLAY = f"p2pindex simulate {SCENARIO} --seed {{seed}} --nodes 10 --duration 20 --fault-count 3"


def plant(
    monkeypatch: pytest.MonkeyPatch, raising: dict[int, Callable[[int], BaseException]]
) -> list[int]:
    """Make the seeds of ``raising`` raise their exception; the others run for real. Returns
    the seeds run so far, in order."""
    real = membership_run.run_membership
    started: list[int] = []

    def planted(plan: Any, **kwargs: Any) -> Any:
        started.append(plan.seed)
        if plan.seed in raising:
            raise raising[plan.seed](plan.seed)
        return real(plan, **kwargs)

    monkeypatch.setattr(membership_run, "run_membership", planted)
    return started


def value_error(seed: int) -> BaseException:
    return ValueError(f"planted for seed {seed}\nsecond line of the message")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_membership_seed_that_raises_fails_alone_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    jobs: str,
) -> None:
    started = plant(monkeypatch, {2: value_error})
    out_dir = tmp_path / "out"
    code, out, err = simulate_here(
        monkeypatch,
        capsys,
        SCENARIO,
        "--seeds",
        "3",
        *SHORT,
        "--jobs",
        jobs,
        "--output",
        str(out_dir),
    )
    assert code == 1, out + err
    assert started == [1, 2, 3]
    traceback_file = out_dir / f"{SCENARIO}-2" / "traceback.txt"
    replay = REPLAY.format(seed=2)
    line = seed_line(out, 2)
    assert "FAIL" in line and "raised ValueError: planted for seed 2;" in line, line
    assert f"traceback: {traceback_file};" in line and line.endswith(f"replay: {replay}"), line
    assert "second line" not in line
    hashes = re.findall(r"^trace hash: ([0-9a-f]{32})$", out, re.MULTILINE)
    assert len(hashes) == 2, out  # seeds 1 and 3 ran to the end
    assert (out_dir / f"{SCENARIO}-3" / "history.jsonl").is_file()
    assert re.search(r"^  seeds +3$", out, re.MULTILINE), out
    assert re.search(r"^  failed +1 \(1 raised an exception\)$", out, re.MULTILINE), out
    summary = out[out.index("\n  seeds ") :]
    assert "seed 2 FAILED: the run raised ValueError: planted for seed 2\n" in summary, out
    assert f"  traceback: {traceback_file}\n  replay:    {replay}\n" in summary, out
    text = traceback_file.read_text()
    assert text.startswith(
        f"seed 2 of {SCENARIO} raised ValueError: planted for seed 2\nreplay: {replay}"
    )
    assert "Traceback (most recent call last)" in text and "second line of the message" in text
    assert "Traceback" not in err


def test_a_membership_seed_that_raises_is_a_json_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plant(monkeypatch, {5: value_error})
    out_dir = tmp_path / "out"
    code, out, err = simulate_here(
        monkeypatch,
        capsys,
        SCENARIO,
        "--seeds",
        "2",
        "--first-seed",
        "4",
        *SHORT,
        "--output",
        str(out_dir),
        "--format",
        "json",
    )
    assert code == 1, out + err
    documents = [json.loads(line) for line in out.splitlines()]
    assert [(d["seed"], d["passed"]) for d in documents] == [(4, True), (5, False)], out
    assert re.fullmatch(r"[0-9a-f]{32}", documents[0]["trace_hash"])
    assert documents[1] == {
        "scenario": SCENARIO,
        "seed": 5,
        "passed": False,
        "error": "ValueError: planted for seed 5",
        "traceback_file": str(out_dir / f"{SCENARIO}-5" / "traceback.txt"),
        "replay": REPLAY.format(seed=5),
    }
    assert (out_dir / f"{SCENARIO}-5" / "traceback.txt").is_file()


def test_a_single_membership_run_that_raises_names_its_seed_and_replay(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plant(monkeypatch, {7: lambda seed: RuntimeError("the simulator broke")})
    out_dir = tmp_path / "out"
    code, out, err = simulate_here(
        monkeypatch, capsys, SCENARIO, "--seed", "7", *SHORT, "--output", str(out_dir)
    )
    assert code == 1, out + err
    assert f"simulating {SCENARIO} (membership only) with seed 7" in out
    traceback_file = out_dir / f"{SCENARIO}-7" / "traceback.txt"
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().endswith(
        "error: seed 7 FAILED: the run raised RuntimeError: the simulator broke\n"
        f"  traceback: {traceback_file}\n"
        f"  replay:    {REPLAY.format(seed=7)}"
    ), err
    assert "RuntimeError: the simulator broke" in traceback_file.read_text()


def test_an_interrupt_still_stops_a_membership_batch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Only ``Exception`` is caught: seed 1's error is a failing seed and the batch goes on,
    seed 2's KeyboardInterrupt ends it (``main`` turns it into exit 130) before seed 3."""
    started = plant(
        monkeypatch,
        {1: lambda seed: RuntimeError("broken"), 2: lambda seed: KeyboardInterrupt()},
    )
    out_dir = tmp_path / "out"
    code, out, err = simulate_here(
        monkeypatch, capsys, SCENARIO, "--seeds", "3", *SHORT, "--output", str(out_dir)
    )
    assert code == 130, out + err
    assert started == [1, 2]
    assert "interrupted" in err
    assert "raised RuntimeError: broken" in seed_line(out, 1)
    assert (out_dir / f"{SCENARIO}-1" / "traceback.txt").is_file()
    assert not (out_dir / f"{SCENARIO}-2").exists()
    assert "  seeds " not in out  # no summary: the batch did not end, it was stopped


def test_a_failing_membership_seed_prints_the_command_that_replays_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A seed whose checkers find a violation (not one that raises) ends its report with
    its replay command, as a cluster seed's does, in the output and in summary.txt."""
    from p2pindex.sim import checkers

    def one_violation(history: Any, bounds: Any) -> list[checkers.Violation]:
        return [checkers.Violation("planted", "a violation planted by the test")]

    monkeypatch.setattr(membership_run.checkers, "check_membership", one_violation)
    out_dir = tmp_path / "out"
    code, out, _err = simulate_here(
        monkeypatch, capsys, SCENARIO, "--seed", "4", *SHORT, "--output", str(out_dir)
    )
    assert code == 1, out
    replay = f"replay: {REPLAY.format(seed=4)}"
    assert "[planted] a violation planted by the test" in out
    assert replay in out.splitlines(), out
    summary = out_dir / f"{SCENARIO}-4" / "summary.txt"
    assert replay in summary.read_text().splitlines()
