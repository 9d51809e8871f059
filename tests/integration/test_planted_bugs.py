"""The harness catches bugs: each planted bug is caught by the checker guarding its rule.

Each bug has a scenario (p2pindex/sim/scenarios/planted-<bug>.toml) and a seed on which it is caught
(found by ``python simulations/planted_bugs.py``, which also reports catch rates). The same
seed without the bug must pass, or the catch would prove nothing. Runs go through the
``p2pindex simulate`` command in a subprocess, which fixes PYTHONHASHSEED, so a seed gives
the same trace in every test process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from p2pindex.sim.planted import PLANTED_BUGS

ROOT = Path(__file__).resolve().parents[2]

CAUGHT_BY = {
    "lww": ("lost_writes", 1),
    "ack-before-commit": ("lost_writes", 1),
    "hints-dropped-on-restart": ("lost_writes", 1),
    "early-tombstone-reap": ("resurrection", 1),
    "no-dots": ("siblings", 1),
    "swim-no-suspicion": ("membership", 1),
    "definite-after-send": ("unexpected_values", 1),
    "ack-failed-commit": ("lost_writes", 1),
}
"""bug -> (the checker that must catch it, a seed on which it does, with the nodes secure as
every cluster simulation runs by default)."""


def simulate(bug: str, tmp_path: Path, *, planted: bool) -> tuple[int, str, set[str]]:
    """Run the bug's scenario on its seed; returns exit code, output and checkers that fired."""
    _, seed = CAUGHT_BY[bug]
    args = [
        sys.executable,
        "-m",
        "p2pindex",
        "simulate",
        str(ROOT / "p2pindex" / "sim" / "scenarios" / f"planted-{bug}.toml"),
        "--seed",
        str(seed),
        "--output",
        str(tmp_path),
    ]
    if planted:
        args += ["--plant-bug", bug]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    done = subprocess.run(
        args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False
    )
    output = done.stdout + done.stderr
    assert re.search(r"^trace hash: [0-9a-f]{32}$", done.stdout, re.MULTILINE), output
    return done.returncode, output, set(re.findall(r"^\[(\w+)\] ", done.stdout, re.MULTILINE))


def test_every_planted_bug_has_a_checker_and_a_scenario() -> None:
    assert set(CAUGHT_BY) == PLANTED_BUGS
    for bug in PLANTED_BUGS:
        assert (ROOT / "p2pindex" / "sim" / "scenarios" / f"planted-{bug}.toml").is_file(), bug


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_the_right_checker_catches_the_planted_bug(bug: str, tmp_path: Path) -> None:
    checker, _ = CAUGHT_BY[bug]
    code, output, fired = simulate(bug, tmp_path, planted=True)
    assert code == 1, output
    assert checker in fired, output
    assert "process" not in fired, output  # the bug is caught by a checker, not by a crash


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_the_same_seed_passes_without_the_bug(bug: str, tmp_path: Path) -> None:
    code, output, fired = simulate(bug, tmp_path, planted=False)
    assert fired == set(), output
    assert code == 0, output
