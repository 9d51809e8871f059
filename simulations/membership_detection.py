"""G1/G2: how fast a crashed node is known as dead by >= 99% of the live nodes.

Crashes one random node every --spacing seconds (--trials crashes in all) in a settled
cluster of --nodes, and restarts each victim (same identity, higher incarnation, through
seeds) --restart-after seconds later, so the cluster stays at about --nodes members.
Per crash it records the first suspicion anywhere and the moment 99% of the nodes that were
up at the crash hold the victim as dead. Healthy nodes recorded dead are counted as false
deaths.

    python simulations/membership_detection.py                 # N=1000, 100 crashes, both profiles
    python simulations/membership_detection.py --nodes 200 --trials 20
"""

from __future__ import annotations

import math
import random
import time

from membership_common import (
    Progress,
    parser,
    percentile,
    run_profiles,
    simulation,
    table,
)

from p2pindex.core.swim import MemberChanged, SwimConfig
from p2pindex.sim.swim_sim import SimNode
from p2pindex.types import Liveness


class Trial:
    """One crash; the live nodes are those up at the crash that are still up."""

    def __init__(self, victim: SimNode, crashed_at: float, live: set[str]) -> None:
        self.victim = victim
        self.crashed_at = crashed_at
        self.live = live
        self.first_suspicion: float | None = None
        self.seen_dead: set[str] = set()
        self.detected: float | None = None

    def check(self, now: float) -> None:
        if self.detected is None and len(self.seen_dead) >= math.ceil(0.99 * len(self.live)):
            self.detected = now - self.crashed_at


def run(name: str, config: SwimConfig, args) -> list[object]:
    wall = time.monotonic()
    sim = simulation(args, loss=args.loss)
    nodes = sim.build(config, args.nodes)
    rng = random.Random(args.seed * 7919 + 1)
    by_id = {node.node_id: node for node in nodes}
    active: dict[str, Trial] = {}
    trials: list[Trial] = []
    false_deaths = 0

    def observe(now: float, node: SimNode, change: MemberChanged) -> None:
        nonlocal false_deaths
        member = change.member
        trial = active.get(member.node_id)
        if trial is None:
            if member.liveness is Liveness.DEAD and node.up and by_id[member.node_id].up:
                false_deaths += 1
            return
        if member.liveness is Liveness.SUSPECT and trial.first_suspicion is None:
            trial.first_suspicion = now - trial.crashed_at
        if member.liveness is Liveness.DEAD and node.node_id in trial.live:
            trial.seen_dead.add(node.node_id)
            trial.check(now)

    def crash() -> None:
        candidates = [n for n in nodes if n.up and n.node_id not in active]
        victim = rng.choice(candidates)
        sim.crash(victim)
        for other in active.values():
            other.live.discard(victim.node_id)
            other.seen_dead.discard(victim.node_id)
            other.check(sim.now)
        trial = Trial(victim, sim.now, {n.node_id for n in nodes if n.up})
        active[victim.node_id] = trial
        trials.append(trial)
        sim.at(sim.now + args.restart_after, lambda: restart(trial))

    def restart(trial: Trial) -> None:
        active.pop(trial.victim.node_id, None)
        seeds = [n.address for n in rng.sample(nodes, 5) if n.up][:3]
        sim.restart(trial.victim, incarnation=trial.victim.incarnation + 10, seeds=seeds)

    sim.observers.append(observe)
    warmup = 10.0
    for i in range(args.trials):
        sim.at(warmup + i * args.spacing, crash)
    end = warmup + (args.trials - 1) * args.spacing + args.restart_after
    Progress(name, args.quiet).run(sim, end)

    detected = [t.detected for t in trials if t.detected is not None]
    missed = len(trials) - len(detected)
    first = [t.first_suspicion for t in trials if t.first_suspicion is not None]
    return [
        name,
        len(trials),
        missed,
        percentile(detected, 50),
        percentile(detected, 99),
        max(detected) if detected else math.nan,
        sum(first) / len(first) if first else math.nan,
        percentile(first, 99),
        false_deaths,
        sim.max_datagram,
        round(time.monotonic() - wall),
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--spacing", type=float, default=5.0, help="seconds between crashes")
    p.add_argument("--restart-after", type=float, default=90.0)
    p.add_argument("--loss", type=float, default=0.0)
    args = p.parse_args()
    rows = run_profiles(args, run)
    print(f"# crash detection at N={args.nodes}, {args.trials} crashes, loss {args.loss:.0%}")
    headers = [
        "profile",
        "crashes",
        "missed",
        "dead@99% p50 s",
        "p99 s",
        "max s",
        "1st suspect mean s",
        "p99 s",
        "false deaths",
        "max datagram B",
        "wall s",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
