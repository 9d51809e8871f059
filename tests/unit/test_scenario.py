"""Scenario files: loading, one clear error per bad input, overrides, seed resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pindex.sim.faults import FaultKind
from p2pindex.sim.scenario import (
    Engine,
    ScenarioError,
    load_scenario,
    parse_fault_kinds,
    prepare,
    scenario_from_dict,
    scenario_path,
)

SIMULATIONS = Path(__file__).resolve().parents[2] / "p2pindex" / "sim" / "scenarios"


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(SIMULATIONS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads_and_prepares(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.description
    prepared = prepare(scenario, 1)
    assert prepared.scenario.nodes_max is None


def test_ci_scenario_meets_the_batch_targets() -> None:
    scenario = load_scenario(SIMULATIONS / "ci.toml")
    sizes = set()
    for seed in range(1, 40):
        prepared = prepare(scenario, seed)
        sizes.add(prepared.scenario.nodes)
        assert prepared.scenario.replicas == 3
        assert len(prepared.schedule) >= 20
        assert len(prepared.schedule.kinds()) >= 6
    assert sizes <= set(range(5, 10)) and len(sizes) > 2
    assert scenario.duration >= 120


def test_toml_and_json_give_the_same_scenario(tmp_path: Path) -> None:
    document = {
        "name": "x",
        "nodes": 4,
        "duration": 60,
        "network": {"delay": {"distribution": "uniform", "minimum": 0.001, "mean": 0.003}},
        "faults": {"schedule": [{"at": 5, "kind": "loss", "rate": 0.2, "duration": 10}]},
    }
    from_json = load_scenario(write(tmp_path, json.dumps(document), "x.json"))
    toml = """
name = "x"
nodes = 4
duration = 60
[network]
delay = { distribution = "uniform", minimum = 0.001, mean = 0.003 }
[[faults.schedule]]
at = 5
kind = "loss"
rate = 0.2
duration = 10
"""
    from_toml = load_scenario(write(tmp_path, toml, "x.toml"))
    assert from_json.faults == from_toml.faults
    assert from_json.network == from_toml.network
    assert from_json.nodes == from_toml.nodes == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodes = [", "malformed TOML"),
        ("nodez = 5", "unknown key 'nodez'"),
        ("nodes = 'five'", "nodes: expected an integer"),
        ("nodes = 0", "nodes: must be at least 1"),
        ("nodes = 2\nreplicas = 3", "replicas: 3 replicas need at least as many nodes"),
        ("engine = 'quantum'", "engine: 'quantum' is not one of cluster, swim"),
        ("duration = -5", "duration: must be positive"),
        ("[network]\nloss = 2", "network.loss: expected a probability"),
        ("[network]\njitter = 1", "network: unknown key 'jitter'"),
        ("[network]\ndelay = { distribution = 'cauchy' }", "'cauchy' is not one of"),
        ("[network.delay]\nminimum = 0.5\nmean = 0.1", "minimum <= mean"),
        ("[node]\nfsink = true", "node: unknown key 'fsink'"),
        ("[faults]\ncount = 3\nkinds = ['gremlins']", "unknown fault kind 'gremlins'"),
        (
            "[faults]\ncount = 3\n[[faults.schedule]]\nat = 1\nkind = 'loss'",
            "either a generated mix",
        ),
        ("[[faults.schedule]]\nat = 1\nkind = 'loss'\nrat = 0.1", "unknown key 'rat'"),
        ("[[faults.schedule]]\nkind = 'loss'\nrate = 0.1", "missing 'at'"),
        ("planted_bugs = 'lww'", "planted_bugs: expected a list"),
    ],
)
def test_bad_files_fail_with_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write(tmp_path, text))


def test_missing_file_and_wrong_suffix_are_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match=r"end in \.toml or \.json"):
        load_scenario(write(tmp_path, "nodes = 3", "s.yaml"))


def test_impossible_schedule_is_refused_before_running(tmp_path: Path) -> None:
    text = """
nodes = 5
[[faults.schedule]]
at = 10
kind = "partition"
groups = [["n1", "n2", "n3"], ["n4", "n5", "n6", "n7"]]
duration = 5
"""
    scenario = load_scenario(write(tmp_path, text))
    with pytest.raises(ScenarioError, match="partitions 7 nodes but the cluster has only 5"):
        prepare(scenario, 1)


def test_shrinking_the_cluster_under_a_fixed_schedule_is_refused() -> None:
    scenario = load_scenario(SIMULATIONS / "split-brain.toml").with_overrides(nodes=4)
    with pytest.raises(ScenarioError, match="partitions 6 nodes but the cluster has only 4"):
        prepare(scenario, 1)


def test_overrides_replace_the_fault_mix_and_add_bugs() -> None:
    scenario = load_scenario(SIMULATIONS / "partition-heal.toml")
    changed = scenario.with_overrides(
        nodes=7,
        duration=90.0,
        fault_kinds=["crash", "loss"],
        fault_count=6,
        planted_bugs=["lww"],
    )
    assert changed.nodes == 7 and changed.duration == 90.0
    assert changed.faults.generated and changed.faults.count == 6
    assert changed.planted_bugs == {"lww"}
    prepared = prepare(changed, 3)
    assert prepared.schedule.kinds() == {FaultKind.CRASH, FaultKind.LOSS}
    none = scenario.with_overrides(fault_kinds=[])
    assert len(prepare(none, 3).schedule) == 0


def test_fault_count_cannot_rewrite_a_fixed_schedule() -> None:
    scenario = load_scenario(SIMULATIONS / "partition-heal.toml")
    with pytest.raises(ScenarioError, match="fixed fault schedule"):
        scenario.with_overrides(fault_count=5)


def test_more_faults_than_fit_is_refused() -> None:
    scenario = scenario_from_dict({"nodes": 5, "duration": 12, "faults": {"count": 4}})
    with pytest.raises(ScenarioError, match="cannot cover 12 kinds"):
        prepare(scenario, 1)


def test_parse_fault_kinds() -> None:
    assert parse_fault_kinds("partition, crash") == ["partition", "crash"]
    assert parse_fault_kinds("none") == []
    with pytest.raises(ScenarioError, match="unknown fault kind 'fire'"):
        parse_fault_kinds("crash,fire")
    with pytest.raises(ScenarioError, match="comma-separated"):
        parse_fault_kinds(" , ")


def test_node_range_is_resolved_by_the_seed() -> None:
    scenario = scenario_from_dict({"nodes": [5, 9], "faults": {"count": 0}})
    first = prepare(scenario, 42).scenario.nodes
    assert first == prepare(scenario, 42).scenario.nodes
    assert 5 <= first <= 9
    with pytest.raises(ScenarioError, match=r"nodes\[1\]: must be at least 5"):
        scenario_from_dict({"nodes": [5, 3]})


def test_scenario_names_resolve_in_the_directory(tmp_path: Path) -> None:
    assert scenario_path("ci", SIMULATIONS) == SIMULATIONS / "ci.toml"
    with pytest.raises(ScenarioError, match=r"no scenario 'nope'.*ci"):
        scenario_path("nope", SIMULATIONS)


def test_membership_scenario_allows_a_thousand_nodes() -> None:
    scenario = load_scenario(SIMULATIONS / "membership-1000.toml")
    assert scenario.engine is Engine.SWIM and scenario.nodes == 1000
    with pytest.raises(ScenarioError, match=r"a cluster simulation runs 1\.\.64 nodes"):
        scenario_from_dict({"nodes": 1000})
