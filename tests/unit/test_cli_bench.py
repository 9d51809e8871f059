"""`p2pindex bench`: key distribution, histograms, reports, and a short run on fake nodes."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_client_fakes import FakeCluster, serve_in_thread

from p2pindex.cli import main as cli_main
from p2pindex.cli.bench_stats import (
    LatencyHistogram,
    OpStats,
    PhaseResult,
    bucket_of,
    bucket_value,
    ycsb_lines,
)
from p2pindex.cli.bench_workload import (
    ScrambledZipfian,
    ZipfianGenerator,
    fnvhash64,
    key_name,
    zeta,
)


def reference_fnv(value: int) -> int:
    """FNV-1a 64 over the little-endian bytes, then Java's Math.abs of the signed result."""
    h = 0xCBF29CE484222325
    for byte in (value & (2**64 - 1)).to_bytes(8, "little"):
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    signed = h - 2**64 if h >= 2**63 else h
    return abs(signed)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_fnvhash64_matches_fnv1a_over_the_low_bytes(value: int) -> None:
    assert fnvhash64(value) == reference_fnv(value)
    assert 0 <= fnvhash64(value) <= 2**63


def test_key_names_follow_ycsb_hashed_inserts() -> None:
    assert key_name(0) == b"user" + str(reference_fnv(0)).encode()
    assert len({key_name(i) for i in range(1000)}) == 1000


def test_zipfian_matches_its_distribution() -> None:
    items, draws = 50, 40_000
    generator = ZipfianGenerator(items, random.Random(5))
    counts = Counter(generator.next() for _ in range(draws))
    total = zeta(items, 0.99)
    # The two most popular items are drawn exactly; the tail is Gray et al.'s approximation.
    for rank in (0, 1):
        expected = draws / ((rank + 1) ** 0.99 * total)
        assert abs(counts[rank] - expected) < 5 * math.sqrt(expected)
    assert counts[2] > counts[10] > counts[45]
    assert max(counts) < items


def test_scrambled_zipfian_stays_in_range_and_is_skewed() -> None:
    keys = ScrambledZipfian(1000, random.Random(3))
    counts = Counter(keys.next() for _ in range(20_000))
    assert min(counts) >= 0 and max(counts) < 1000
    top = counts.most_common(1)[0][1]
    assert top > 20 * (20_000 / 1000), "the hottest key is far above the uniform share"
    assert counts.most_common(1)[0][0] != 0, "hot keys are scrambled away from record 0"


@given(st.integers(min_value=0, max_value=10**9))
def test_buckets_are_monotonic_and_tight(micros: int) -> None:
    index = bucket_of(micros)
    assert bucket_of(micros + 1) >= index
    assert abs(bucket_value(index) - micros) <= max(0, micros) / 200


@settings(max_examples=60)
@given(
    st.lists(st.integers(min_value=0, max_value=5_000_000), min_size=1, max_size=300),
    st.sampled_from([50, 95, 99, 100]),
)
def test_percentiles_are_within_half_a_percent(samples: list[int], percent: int) -> None:
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.record(sample)
    ordered = sorted(samples)
    exact = ordered[max(1, math.ceil(percent / 100 * len(samples))) - 1]
    assert abs(histogram.percentile(percent) - exact) <= exact / 200
    assert (histogram.min, histogram.max, histogram.count) == (
        ordered[0],
        ordered[-1],
        len(samples),
    )


@given(
    st.lists(st.integers(0, 100_000), max_size=50), st.lists(st.integers(0, 100_000), max_size=50)
)
def test_merged_histograms_equal_one_histogram_of_everything(a: list[int], b: list[int]) -> None:
    left, right, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for sample in a:
        left.record(sample)
        both.record(sample)
    for sample in b:
        right.record(sample)
        both.record(sample)
    left.merge(LatencyHistogram.from_dict(right.to_dict()))
    assert left.to_dict() == both.to_dict()


def test_phase_results_merge_and_report_like_ycsb() -> None:
    first, second = PhaseResult(runtime=2.0), PhaseResult(runtime=2.5)
    first.stats("READ").latency.record(100)
    first.stats("READ").returns["OK"] += 1
    second.stats("READ").latency.record(300)
    second.stats("READ").returns["ERROR(timeout)"] += 1
    second.stats("UPDATE").latency.record(200)
    second.stats("UPDATE").returns["OK"] += 1
    first.merge(PhaseResult.from_dict(second.to_dict()))
    assert first.runtime == 2.5
    assert (first.operations, first.errors) == (3, 1)
    lines = ycsb_lines("run", first)
    assert lines[:2] == ["[OVERALL], RunTime(ms), 2500", "[OVERALL], Throughput(ops/sec), 1.2"]
    assert "[READ], Operations, 2" in lines
    assert "[READ], Return=ERROR(timeout), 1" in lines
    assert "[UPDATE], 99thPercentileLatency(us), 200" in lines
    assert not any("Node" in line for line in lines)  # a remote cluster: nothing measured
    first.node_cpu, first.node_rss = 0.003, 81_234_567
    lines = ycsb_lines("run", first)
    assert "[OVERALL], NodeCpuPerOp(us), 1000.0" in lines
    assert "[OVERALL], NodeMaxRss(MB), 81.2" in lines
    assert OpStats().summary()["operations"] == 0


@pytest.fixture(autouse=True)
def only_client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())


def test_a_short_run_against_fake_nodes(capsys: pytest.CaptureFixture) -> None:
    with serve_in_thread(FakeCluster(3, shared_store=True)) as cluster:
        argv = ["bench", "--node", cluster.addresses[0], "--records", "40", "--load"]
        argv += ["--duration", "0.5", "--concurrency", "4", "--processes", "2", "--format", "json"]
        assert cli_main.main(argv) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["load"]["ops"]["INSERT"]["operations"] == 40
    assert report["load"]["ops"]["INSERT"]["returns"] == {"OK": 40}
    run = report["run"]
    assert set(run["ops"]) == {"READ", "UPDATE"}
    assert run["operations"] > 0 and run["errors"] == 0
    assert run["ops"]["READ"]["returns"].get("NOT_FOUND", 0) == 0
    assert report["config"]["processes"] == 2 and report["config"]["concurrency"] == 4
    assert "run phase" in err


def test_fsync_with_an_existing_cluster_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert cli_main.main(["bench", "--node", "127.0.0.1:1", "--fsync"]) == 1
    assert "--fsync is for the local cluster bench starts" in capsys.readouterr().err


def test_concurrency_below_processes_is_refused(capsys: pytest.CaptureFixture) -> None:
    argv = ["bench", "--node", "127.0.0.1:1", "--processes", "4", "--concurrency", "2"]
    assert cli_main.main(argv) == 1
    assert "--concurrency must be at least --processes" in capsys.readouterr().err
