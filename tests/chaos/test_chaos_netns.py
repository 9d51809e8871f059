"""The real-process chaos harness: nodes in a private network namespace, real faults."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest

from p2pindex.chaos import partition_links

NODES = ["n1", "n2", "n3", "n4", "n5"]


def run_harness(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "P2PINDEX_CHAOS_INSIDE"}
    return subprocess.run(
        [sys.executable, "-m", "p2pindex.chaos", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.chaos
def test_a_short_chaos_run_finds_no_violation(tmp_path) -> None:
    result = run_harness("--duration", "25", "--quiesce", "10", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "0 violation(s)" in result.stdout
    history = (tmp_path / "history.jsonl").read_text()  # kept: --workdir was given
    assert '"fault":"crash"' in history or '"fault":"pause"' in history
    assert '"kind":"replica"' in history


@pytest.mark.chaos
def test_lossy_spells_slow_the_cluster_and_break_nothing(tmp_path) -> None:
    """Only lossy spells (30% of every packet the nodes send): the history records them,
    fewer operations complete a second during them than outside them (the rule drops
    packets), and no checker finds anything."""
    result = run_harness(
        *("--duration", "14", "--quiesce", "5", "--nodes", "3", "--faults", "lossy"),
        *("--workdir", str(tmp_path)),
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "0 violation(s)" in result.stdout
    events = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    faults = [e for e in events if e.get("kind") == "fault"]
    spells = [
        (start["time"], end["time"])
        for start, end in itertools.pairwise(faults)
        if start["fault"] == "loss" and end["fault"] == "heal"
    ]
    assert spells, faults
    done = [e["time"] for e in events if e.get("kind") == "op" and e["type"] == "ok"]
    first, last = min(done), max(t for _, t in spells)
    lossy = sum(b - a for a, b in spells)
    during = sum(1 for t in done if any(a <= t < b for a, b in spells))
    outside = sum(1 for t in done if first <= t < last) - during
    assert during / lossy < 0.8 * outside / (last - first - lossy), (during, outside, spells)


@pytest.mark.chaos
def test_the_harness_refuses_to_run_outside_an_isolated_namespace() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2pindex.chaos", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "P2PINDEX_CHAOS_INSIDE": "1"},
        check=False,
    )
    assert result.returncode == 3
    assert "not an isolated namespace" in result.stderr


@pytest.mark.parametrize("shape", ["halves", "isolate", "bridge", "ring", "one_way"])
def test_partition_shapes_cut_the_links_they_promise(shape: str) -> None:
    links = set(partition_links(shape, NODES))
    assert links
    assert all(a != b for a, b in links)
    reachable = {a: {b for b in NODES if b != a and (a, b) not in links} for a in NODES}
    if shape == "one_way":
        assert all((b, "n1") not in links for b in NODES[1:])
        assert reachable["n1"] == set()
    if shape == "isolate":
        assert reachable["n1"] == set() and reachable["n2"] == {"n3", "n4", "n5"}
    if shape == "halves":
        assert reachable["n1"] == {"n2"} and reachable["n3"] == {"n4", "n5"}
    if shape == "bridge":
        assert reachable["n3"] == {"n1", "n2", "n4", "n5"}
        assert reachable["n1"] == {"n2", "n3"}
    if shape == "ring":
        majorities = {frozenset(reachable[a] | {a}) for a in NODES}
        assert len(majorities) == len(NODES)
        assert all(len(m) == 3 for m in majorities)
