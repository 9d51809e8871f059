"""G10: a 50/50 partition held for minutes heals by itself.

Splits --nodes (100) settled nodes into two halves for --hold seconds (600), heals the
network and measures how long until every node holds one and the same membership view
(every member alive, same incarnations everywhere). No operator action: only the protocol.

    python simulations/membership_partition_heal.py
"""

from __future__ import annotations

import math
import time

from membership_common import Progress, parser, run_profiles, simulation, table

from p2pindex.core.swim import SwimConfig
from p2pindex.sim.swim_sim import SimNode
from p2pindex.types import Liveness


def one_view(nodes: list[SimNode]) -> bool:
    views = set()
    for node in nodes:
        view = frozenset((m.node_id, m.incarnation, m.liveness) for m in node.swim.members())
        if len(view) != len(nodes) or any(live is not Liveness.ALIVE for _, _, live in view):
            return False
        views.add(view)
        if len(views) > 1:
            return False
    return True


def run(name: str, config: SwimConfig, args) -> list[object]:
    wall = time.monotonic()
    sim = simulation(args, loss=args.loss)
    nodes = sim.build(config, args.nodes)
    half = len(nodes) // 2
    progress = Progress(name, args.quiet)
    progress.run(sim, 10.0)
    sim.partition([nodes[:half], nodes[half:]])
    progress.run(sim, 10.0 + args.hold, step=30.0)
    split = all(
        nodes[0].swim.member(n.node_id) is None
        or nodes[0].swim.member(n.node_id).liveness is not Liveness.ALIVE
        for n in nodes[half:]
    )
    healed_at = 10.0 + args.hold
    sim.partition(None)
    merged: list[float] = []

    def check() -> None:
        if one_view(nodes):
            merged.append(sim.now - healed_at)
        else:
            sim.at(sim.now + args.check_every, check)

    sim.at(healed_at + args.check_every, check)
    progress.run(sim, healed_at + args.max_wait, stop=lambda: bool(merged), step=5.0)
    return [
        name,
        args.nodes,
        f"{args.hold:.0f}",
        "yes" if split else "no",
        merged[0] if merged else math.nan,
        "yes" if merged else f"no (> {args.max_wait:.0f} s)",
        round(time.monotonic() - wall),
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--hold", type=float, default=600.0)
    p.add_argument("--max-wait", type=float, default=300.0)
    p.add_argument("--check-every", type=float, default=0.5)
    p.add_argument("--loss", type=float, default=0.0)
    args = p.parse_args()
    rows = run_profiles(args, run)
    print(f"# G10: {args.nodes} nodes split 50/50 for {args.hold:.0f} s, then healed")
    headers = [
        "profile",
        "N",
        "held s",
        "sides saw each other gone",
        "one view after heal s",
        "healed",
        "wall s",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
