"""One replica 50 ms slower than the others: how much does it move read latency?

    python simulations/slow_replica.py [--seeds 3] [--first-seed 1] [--nodes 3]
                                       [--duration 60] [--delay 0.05]

Runs the simulator's cluster (the real node and the real client over a simulated network,
virtual time) twice per seed with the same workload: once healthy, once with one node
under a SLOW fault for the whole run (every message to or from it takes an extra
exponentially distributed delay of mean ``--delay`` seconds; its disk is not slowed).
With 3 nodes and N=3 every key has the slow node among its replicas. Prints read p50 and
p99 per consistency level and for ONE and QUORUM reads together, for both runs, and the
ratios. ALL reads must hear every replica, so they are shown but cannot avoid it.

Clients route each request to the key's replica that answers fastest (``core.
replica_score``) and coordinators need only the quickest digests, so ONE and QUORUM reads
should barely notice the slow replica: the target is a p99 ratio under 1.10.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pindex.sim.determinism import reexec_with_fixed_hash_seed  # noqa: E402
from p2pindex.sim.history import READS, OpF, OpType  # noqa: E402
from p2pindex.sim.plan import plan_run  # noqa: E402
from p2pindex.sim.runner import Simulation, seed_trio_scheduler  # noqa: E402
from p2pindex.sim.scenario import scenario_from_dict  # noqa: E402


def scenario(nodes: int, duration: float, slow: float | None) -> dict:
    schedule = []
    if slow is not None:
        schedule.append(
            {
                "at": 0.5,
                "kind": "slow",
                "nodes": ["n1"],
                "duration": duration - 1.0,
                "delay": slow,
                "disk_factor": 1.0,
            }
        )
    return {
        "name": "slow-replica" if slow else "healthy",
        "nodes": nodes,
        "replicas": 3,
        "duration": duration,
        "quiesce": 5.0,
        "checks": {"convergence_bound": 5.0},
        "network": {"tick": 0.0},
        "workload": {"processes": 6, "think": 0.1, "timeout": 2.0},
        "faults": {"schedule": schedule},
    }


def read_latencies(document: dict, seed: int) -> dict[str, list[float]]:
    """Seconds each ok read took (virtual time), by consistency level."""
    plan = plan_run(scenario_from_dict(document), seed)
    seed_trio_scheduler(plan.seed)
    simulation = Simulation(plan)
    trio.run(simulation.main, clock=trio.testing.MockClock(autojump_threshold=0))
    started: dict[int, tuple[float, str]] = {}
    took: dict[str, list[float]] = {}
    for op in simulation.history.ops:
        if op.f is OpF.FINAL or op.f not in READS:
            continue
        if op.type is OpType.INVOKE:
            started[op.process] = (op.time, op.consistency or "quorum")
        elif op.process in started:
            begin, level = started.pop(op.process)
            if op.type is OpType.OK:
                took.setdefault(level, []).append(op.time - begin)
    return took


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, healthy: list[float], slow: list[float]) -> str:
    h50, h99 = quantile(healthy, 0.5) * 1000, quantile(healthy, 0.99) * 1000
    s50, s99 = quantile(slow, 0.5) * 1000, quantile(slow, 0.99) * 1000
    return (
        f"{name:<14} {len(healthy):>6} {h50:>8.2f} {h99:>8.2f}   {len(slow):>6} {s50:>8.2f} "
        f"{s99:>8.2f}   {s50 / h50:>6.3f} {s99 / h99:>6.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    healthy: dict[str, list[float]] = {}
    slow: dict[str, list[float]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for into, delay in ((healthy, None), (slow, args.delay)):
            for level, took in read_latencies(
                scenario(args.nodes, args.duration, delay), seed
            ).items():
                into.setdefault(level, []).extend(took)
    print(
        f"{args.nodes} nodes, N=3, {args.seeds} seed(s) from {args.first_seed}, "
        f"{args.duration:g} s each; slow run: n1 +{args.delay * 1000:g} ms (mean) per message"
    )
    print(
        f"{'reads (ms)':<14} {'n':>6} {'p50':>8} {'p99':>8}   {'n':>6} {'p50':>8} {'p99':>8}"
        f"   {'p50 x':>6} {'p99 x':>6}"
    )
    print(f"{'':<14} {'healthy':>24}   {'one replica slow':>24}")
    for level in sorted(set(healthy) & set(slow)):
        print(row(level, healthy[level], slow[level]))
    both = [level for level in ("one", "quorum") if level in healthy and level in slow]
    merged_h = [t for level in both for t in healthy[level]]
    merged_s = [t for level in both for t in slow[level]]
    if merged_h and merged_s:
        print(row("one+quorum", merged_h, merged_s))
        ratio = quantile(merged_s, 0.99) / quantile(merged_h, 0.99)
        print(f"read p99 ratio (ONE and QUORUM reads): {ratio:.3f}  (target < 1.10)")
    print(f"mean healthy read: {statistics.fmean(merged_h) * 1000:.2f} ms" if merged_h else "")
    return 0


if __name__ == "__main__":
    reexec_with_fixed_hash_seed()
    sys.exit(main())
