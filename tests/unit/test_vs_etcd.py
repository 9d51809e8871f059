"""simulations/vs_etcd.py: reading wrk's report, counting only good answers, the ratio table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_vs_etcd():
    spec = importlib.util.spec_from_file_location("vs_etcd", ROOT / "simulations" / "vs_etcd.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_etcd"] = module
    spec.loader.exec_module(module)
    return module


vs_etcd = load_vs_etcd()

WRK_REPORT = """\
Running 3s test @ http://127.0.0.1:43873
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.32ms  592.27us   1.20s    78.23%
    Req/Sec     3.06k   471.73     4.63k    85.71%
  Latency Distribution
     50%  950.00us
     75%    1.54ms
     90%    2.05ms
     99%    1.20s
  21000 requests in 3.00s, 2.62MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:   7000.00
Transfer/sec:      2.39MB
vs_etcd: ok 20895 missing 100 failed 5
"""


def test_wrk_report_is_read_with_units_and_our_lua_counts() -> None:
    result = vs_etcd.parse_wrk(WRK_REPORT)
    assert result.requests == 21000
    assert result.seconds == pytest.approx(3.0)
    assert result.requests_per_s == pytest.approx(7000.0)
    assert result.p50_us == pytest.approx(950.0)
    assert result.p90_us == pytest.approx(2050.0)
    assert result.p99_us == pytest.approx(1_200_000.0)
    assert (result.non_2xx, result.socket_errors) == (5, 3)
    assert (result.ok, result.missing, result.failed) == (20895, 100, 5)
    # Only answers that did the job count: not the failures, not the empty ranges.
    assert result.good_per_s == pytest.approx(20895 / 3.0)
    phase = vs_etcd.Phase.from_wrk(result)
    assert (phase.errors, phase.missing) == (8, 100)


def test_a_report_without_the_lua_counts_is_refused_rather_than_trusted() -> None:
    without = WRK_REPORT.replace("vs_etcd: ok 20895 missing 100 failed 5\n", "")
    with pytest.raises(ValueError, match="counts"):
        vs_etcd.parse_wrk(without)


def test_durations_in_every_wrk_unit_and_an_unknown_one_refused() -> None:
    assert vs_etcd.parse_duration_us("12.5us") == pytest.approx(12.5)
    assert vs_etcd.parse_duration_us("8.30ms") == pytest.approx(8300.0)
    assert vs_etcd.parse_duration_us("1.50s") == pytest.approx(1_500_000.0)
    assert vs_etcd.parse_duration_us("1.00m") == pytest.approx(60_000_000.0)
    with pytest.raises(ValueError, match="duration"):
        vs_etcd.parse_duration_us("3 parsecs")


def bench_document(op: str, operations: int, errors: int, returns: dict[str, int]) -> dict:
    return {
        "run": {
            "runtime_ms": 2000,
            "operations": operations,
            "errors": errors,
            "ops": {
                op: {"operations": operations, "p50_us": 900, "p99_us": 3000, "returns": returns}
            },
        }
    }


def test_bench_figures_count_neither_errors_nor_misses() -> None:
    document = bench_document("READ", 10_000, 40, {"OK": 9_000, "NOT_FOUND": 960, "ERROR(x)": 40})
    phase = vs_etcd.Phase.from_bench(document, "READ")
    assert phase.per_s == pytest.approx(9_000 / 2.0)
    assert (phase.errors, phase.missing, phase.p50_us, phase.p99_us) == (40, 960, 900, 3000)


def run(name: str, writes: float, reads: float) -> object:
    return vs_etcd.Run(
        name, vs_etcd.Phase(writes, 8000.0, 20000.0, 0), vs_etcd.Phase(reads, 5000.0, 9000.0, 0, 3)
    )


def test_ratios_are_against_the_mean_of_the_two_etcd_runs() -> None:
    etcd = [run("etcd (first)", 4000.0, 5000.0), run("etcd (second)", 6000.0, 7000.0)]
    found = vs_etcd.ratios(etcd, run("p2pindex", 10000.0, 18000.0))
    assert found == {"writes": pytest.approx(2.0), "reads": pytest.approx(3.0)}
    idle = [run("etcd (first)", 0.0, 0.0), run("etcd (second)", 0.0, 0.0)]
    assert vs_etcd.ratios(idle, run("p2pindex", 1.0, 1.0)) == {"writes": None, "reads": None}


def test_report_puts_p2pindex_between_the_etcd_runs_with_bytes_and_ratios() -> None:
    etcd = [run("etcd (first)", 400.0, 500.0), run("etcd (second)", 600.0, 700.0)]
    lines = vs_etcd.report(etcd, run("p2pindex", 750.0, 900.0), 65536, [11094.0, 11827.0])
    rows = [line.split()[0] + " " + line.split()[1] for line in lines[2:5]]
    assert rows == ["etcd (first)", "p2pindex 750", "etcd (second)"]
    assert "49.2" in lines[3]  # 750 writes/s of 64 KiB values: 49.2 MB/s
    assert "writes 1.50x, reads 1.50x" in lines[-2]
    assert "11,094, 11,827 round trips/s" in lines[-1]


def test_wrk_scripts_ask_for_their_operation_and_refuse_others() -> None:
    put = vs_etcd.wrk_script("put", ["a2V5MQ==", "a2V5Mg=="], "dmFs", 7)
    ranges = vs_etcd.wrk_script("range", ["a2V5MQ=="], "dmFs", 7)
    assert '"/v3/kv/put"' in put and '"a2V5Mg=="' in put and "check_missing = false" in put
    assert '"/v3/kv/range"' in ranges and "check_missing = true" in ranges
    assert "vs_etcd: ok %d missing %d failed %d" in put
    with pytest.raises(ValueError, match="kind"):
        vs_etcd.wrk_script("delete", ["a2V5MQ=="], "dmFs", 7)


def test_without_etcd_it_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        vs_etcd.shutil, "which", lambda tool: None if tool == "etcd" else f"/usr/bin/{tool}"
    )
    assert vs_etcd.main(["--duration", "1"]) == 2
    assert "etcd not installed" in capsys.readouterr().err


def test_large_values_shrink_the_default_keyspace() -> None:
    assert vs_etcd._default_records(100) == 10_000
    assert vs_etcd._default_records(65536) == 1024
