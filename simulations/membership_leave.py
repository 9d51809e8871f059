"""G13: a graceful leave is recorded as left (never dead) everywhere, fast.

In a settled cluster of --nodes (100) at --loss (1%), one random node leaves every
--spacing seconds (--trials leaves in all): it announces the leave, exits as soon as the
engine says the leave is complete (one ack, or the bounded wait), and comes back --return-after
seconds later with a higher incarnation. One sample is the time until every node that was
up at the leave holds the leaver as left.

    python simulations/membership_leave.py
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


class Leave:
    def __init__(self, node: SimNode, started: float, watchers: set[str]) -> None:
        self.node = node
        self.started = started
        self.watchers = watchers
        self.seen: set[str] = set()
        self.done: float | None = None
        self.dead_events = 0
        self.exited_after: float | None = None


def run(name: str, config: SwimConfig, args) -> list[object]:
    wall = time.monotonic()
    sim = simulation(args, loss=args.loss)
    nodes = sim.build(config, args.nodes)
    rng = random.Random(args.seed * 613 + 5)
    active: dict[str, Leave] = {}
    leaves: list[Leave] = []

    def observe(now: float, node: SimNode, change: MemberChanged) -> None:
        leave = active.get(change.member.node_id)
        if leave is None or node.node_id not in leave.watchers:
            return
        if change.member.liveness is Liveness.DEAD:
            leave.dead_events += 1
        elif change.member.liveness is Liveness.LEFT:
            leave.seen.add(node.node_id)
            if leave.done is None and leave.seen >= leave.watchers:
                leave.done = now - leave.started

    def start() -> None:
        node = rng.choice([n for n in nodes if n.up and n.node_id not in active])
        watchers = {n.node_id for n in nodes if n.up and n is not node}
        leave = Leave(node, sim.now, watchers)
        active[node.node_id] = leave
        leaves.append(leave)
        node.swim.leave(sim.now)
        sim.flush(node)
        wait_exit(leave)

    def wait_exit(leave: Leave) -> None:
        if leave.node.swim.leave_complete(sim.now):
            leave.exited_after = sim.now - leave.started
            sim.crash(leave.node)
            sim.at(sim.now + args.return_after, lambda: come_back(leave))
        else:
            sim.at(sim.now + 0.01, lambda: wait_exit(leave))

    def come_back(leave: Leave) -> None:
        active.pop(leave.node.node_id, None)
        seeds = [n.address for n in rng.sample(nodes, 5) if n.up][:3]
        sim.restart(leave.node, incarnation=leave.node.incarnation + 10, seeds=seeds)

    sim.observers.append(observe)
    for i in range(args.trials):
        sim.at(5.0 + i * args.spacing, start)
    end = 5.0 + args.trials * args.spacing + args.return_after + 5.0
    Progress(name, args.quiet).run(sim, end)
    times = [leave.done if leave.done is not None else math.inf for leave in leaves]
    within = sum(1 for t in times if t <= 3.0)
    exits = [leave.exited_after for leave in leaves if leave.exited_after is not None]
    return [
        name,
        args.nodes,
        f"{args.loss:.0%}",
        len(leaves),
        f"{within}/{len(leaves)}",
        percentile(times, 50),
        percentile(times, 99),
        max(times),
        sum(leave.dead_events for leave in leaves),
        max(exits) if exits else math.nan,
        round(time.monotonic() - wall),
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--spacing", type=float, default=5.0)
    p.add_argument("--return-after", type=float, default=20.0)
    p.add_argument("--loss", type=float, default=0.01)
    args = p.parse_args()
    rows = run_profiles(args, run)
    print(f"# G13: graceful leave, N={args.nodes}, {args.loss:.0%} loss")
    headers = [
        "profile",
        "N",
        "loss",
        "leaves",
        "left everywhere <= 3 s",
        "p50 s",
        "p99 s",
        "max s",
        "dead records of leavers",
        "slowest exit s",
        "wall s",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
