"""Latency histograms and per-operation results for `p2pindex bench`.

Storing every sample would grow without bound on a long run and be costly to ship between
worker processes, so latencies go into HdrHistogram-like log-linear buckets: exact below
256 µs, then 128 buckets per power of two (under 0.4% error), mergeable by adding counts.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_EXACT = 256
_SUB_BITS = 7
_SUB = 1 << _SUB_BITS


def bucket_of(micros: int) -> int:
    if micros < _EXACT:
        return micros
    shift = micros.bit_length() - (_SUB_BITS + 1)
    return (shift << _SUB_BITS) + (micros >> shift)


def bucket_value(index: int) -> int:
    """The middle of the latencies that fall into bucket ``index``."""
    if index < _EXACT:
        return index
    shift = (index >> _SUB_BITS) - 1
    mantissa = index - (shift << _SUB_BITS)
    low = mantissa << shift
    return low + ((1 << shift) - 1) // 2


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, micros: int) -> None:
        micros = max(0, micros)
        index = bucket_of(micros)
        self.counts[index] = self.counts.get(index, 0) + 1
        if self.count == 0 or micros < self.min:
            self.min = micros
        if micros > self.max:
            self.max = micros
        self.count += 1
        self.total += micros

    def merge(self, other: LatencyHistogram) -> None:
        if other.count == 0:
            return
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, percent: float) -> int:
        """Nearest-rank percentile in µs (0 when empty), clamped to the exact min and max."""
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(percent / 100 * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self.max, max(self.min, bucket_value(index)))
        return self.max

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": sorted(self.counts.items()),
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LatencyHistogram:
        histogram = cls()
        histogram.counts = {int(index): int(count) for index, count in doc["counts"]}
        histogram.count = int(doc["count"])
        histogram.total = int(doc["total"])
        histogram.min = int(doc["min"])
        histogram.max = int(doc["max"])
        return histogram


@dataclass
class OpStats:
    """Latencies and return codes of one operation type (READ, UPDATE, INSERT)."""

    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    returns: Counter[str] = field(default_factory=Counter)

    def merge(self, other: OpStats) -> None:
        self.latency.merge(other.latency)
        self.returns.update(other.returns)

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.returns.items() if code.startswith("ERROR"))

    def to_dict(self) -> dict[str, Any]:
        return {"latency": self.latency.to_dict(), "returns": dict(self.returns)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> OpStats:
        return cls(LatencyHistogram.from_dict(doc["latency"]), Counter(doc["returns"]))

    def summary(self) -> dict[str, Any]:
        """YCSB's per-operation figures."""
        latency = self.latency
        return {
            "operations": latency.count,
            "average_us": round(latency.mean, 1),
            "min_us": latency.min,
            "max_us": latency.max,
            "p50_us": latency.percentile(50),
            "p95_us": latency.percentile(95),
            "p99_us": latency.percentile(99),
            "returns": dict(sorted(self.returns.items())),
        }


@dataclass
class PhaseResult:
    """One phase (load or run) of one worker, or of all workers once merged."""

    runtime: float = 0.0
    ops: dict[str, OpStats] = field(default_factory=dict)
    client_cpu: float = 0.0
    """CPU seconds the load generator itself used: tells a slow client from a slow cluster."""
    node_cpu: float | None = None
    """CPU seconds the cluster's node processes used in the phase (all nodes together), when
    the bench started them and could read their accounting; None for a remote cluster."""
    node_rss: int | None = None
    """Resident memory (bytes) of the largest node process at the end of the phase, under the
    same conditions as ``node_cpu``."""

    def stats(self, op: str) -> OpStats:
        found = self.ops.get(op)
        if found is None:
            found = self.ops[op] = OpStats()
        return found

    @property
    def operations(self) -> int:
        return sum(stats.latency.count for stats in self.ops.values())

    @property
    def errors(self) -> int:
        return sum(stats.errors for stats in self.ops.values())

    def merge(self, other: PhaseResult) -> None:
        """Workers run side by side, so the phase lasts as long as the slowest one."""
        self.runtime = max(self.runtime, other.runtime)
        self.client_cpu += other.client_cpu
        for op, stats in other.ops.items():
            self.stats(op).merge(stats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "client_cpu": self.client_cpu,
            "ops": {op: s.to_dict() for op, s in self.ops.items()},
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PhaseResult:
        return cls(
            float(doc["runtime"]),
            {op: OpStats.from_dict(s) for op, s in doc["ops"].items()},
            float(doc["client_cpu"]),
        )

    def summary(self) -> dict[str, Any]:
        throughput = self.operations / self.runtime if self.runtime > 0 else 0.0
        return {
            "runtime_ms": round(self.runtime * 1000),
            "operations": self.operations,
            "throughput_ops_sec": round(throughput, 1),
            "errors": self.errors,
            "client_cpu_us_per_op": round(self.client_cpu * 1e6 / self.operations, 1)
            if self.operations
            else 0.0,
            "node_cpu_us_per_op": round(self.node_cpu * 1e6 / self.operations, 1)
            if self.operations and self.node_cpu is not None
            else None,
            "node_max_rss_mb": None if self.node_rss is None else round(self.node_rss / 1e6, 1),
            "ops": {op: self.ops[op].summary() for op in sorted(self.ops)},
        }


def ycsb_lines(phase: str, result: PhaseResult) -> list[str]:
    """The result in YCSB's ``[SECTION], metric, value`` form."""
    summary = result.summary()
    tag = "OVERALL" if phase == "run" else "LOAD"
    lines = [
        f"[{tag}], RunTime(ms), {summary['runtime_ms']}",
        f"[{tag}], Throughput(ops/sec), {summary['throughput_ops_sec']}",
        f"[{tag}], ClientCpuPerOp(us), {summary['client_cpu_us_per_op']}",
    ]
    if summary["node_cpu_us_per_op"] is not None:
        lines.append(f"[{tag}], NodeCpuPerOp(us), {summary['node_cpu_us_per_op']}")
    if summary["node_max_rss_mb"] is not None:
        lines.append(f"[{tag}], NodeMaxRss(MB), {summary['node_max_rss_mb']}")
    for op, stats in summary["ops"].items():
        lines += [
            f"[{op}], Operations, {stats['operations']}",
            f"[{op}], AverageLatency(us), {stats['average_us']}",
            f"[{op}], MinLatency(us), {stats['min_us']}",
            f"[{op}], MaxLatency(us), {stats['max_us']}",
            f"[{op}], 50thPercentileLatency(us), {stats['p50_us']}",
            f"[{op}], 95thPercentileLatency(us), {stats['p95_us']}",
            f"[{op}], 99thPercentileLatency(us), {stats['p99_us']}",
        ]
        lines += [f"[{op}], Return={code}, {count}" for code, count in stats["returns"].items()]
    return lines
