"""G5: how fast one update reaches 99% of the cluster.

Every --spacing seconds a random node changes its state (ACTIVE <-> DEGRADED), which it
announces with a new incarnation; the time until 99% of the other live nodes hold that
incarnation is one sample. --updates samples in all, at --loss uniform loss.

    python simulations/membership_dissemination.py              # N=1000, 1% loss, 100 updates
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
from p2pindex.types import NodeState


def run(name: str, config: SwimConfig, args) -> list[object]:
    wall = time.monotonic()
    sim = simulation(args, loss=args.loss)
    nodes = sim.build(config, args.nodes)
    rng = random.Random(args.seed * 104729 + 3)
    pending: dict[str, tuple[int, float, set[str]]] = {}
    samples: list[float] = []
    need = math.ceil(0.99 * (len(nodes) - 1))

    def observe(now: float, node: SimNode, change: MemberChanged) -> None:
        member = change.member
        entry = pending.get(member.node_id)
        if entry is None or node.node_id == member.node_id:
            return
        incarnation, started, seen = entry
        if member.incarnation >= incarnation:
            seen.add(node.node_id)
            if len(seen) >= need:
                samples.append(now - started)
                del pending[member.node_id]

    def update() -> None:
        node = rng.choice([n for n in nodes if n.node_id not in pending])
        swim = node.swim
        state = swim.member(node.node_id).state
        new = NodeState.DEGRADED if state is NodeState.ACTIVE else NodeState.ACTIVE
        swim.set_local_state(new, sim.now)
        pending[node.node_id] = (swim.incarnation, sim.now, set())
        sim.flush(node)

    sim.observers.append(observe)
    for i in range(args.updates):
        sim.at(5.0 + i * args.spacing, update)
    end = 5.0 + args.updates * args.spacing + 30.0
    Progress(name, args.quiet).run(sim, end)
    missed = args.updates - len(samples)
    return [
        name,
        args.nodes,
        f"{args.loss:.0%}",
        len(samples),
        missed,
        percentile(samples, 50),
        percentile(samples, 99),
        max(samples) if samples else math.nan,
        sim.max_datagram,
        round(time.monotonic() - wall),
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--spacing", type=float, default=4.0)
    p.add_argument("--loss", type=float, default=0.01)
    args = p.parse_args()
    rows = run_profiles(args, run)
    print(f"# G5: one update to 99% of N={args.nodes} at {args.loss:.0%} loss")
    headers = [
        "profile",
        "N",
        "loss",
        "updates",
        "missed",
        "99% p50 s",
        "99% p99 s",
        "max s",
        "max datagram B",
        "wall s",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
