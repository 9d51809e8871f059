"""G3/G4: false suspicions and false deaths of healthy nodes, under loss and under stalls.

Part "loss" (G3): --nodes (200) healthy nodes for --duration (1 simulated hour) at each
uniform loss rate in --losses (1% and 5%). Nobody fails, so every death is false.

Part "stall" (G4): --stall-nodes (100) nodes of which --slow (4) keep stalling for 1..5 s
with 1..5 s of normal running in between (the Lifeguard paper's CPU-starved members). The
stalls begin either at random moments or right after the slow node sent a probe (when the
ack is in flight: how a starved process loses the CPU between sending and receiving); both
are run. Counted: false suspicions of healthy nodes (distinct suspect episodes, and events
summed over all observers), compared with plain SWIM (p2pindex without Lifeguard).

    python simulations/membership_false_positives.py                   # everything
    python simulations/membership_false_positives.py --part stall --duration 600
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter

from membership_common import (
    Progress,
    command_line,
    parser,
    profiles,
    security_summary,
    simulation,
    table,
)

from p2pindex.core.swim import MemberChanged, SwimConfig
from p2pindex.sim.swim_sim import SimNode
from p2pindex.types import Liveness


class Tally:
    """Suspicions and deaths, split by whether the subject is one of the ``slow`` nodes."""

    def __init__(self, slow: set[str]) -> None:
        self.slow = slow
        self.episodes: set[tuple[str, int]] = set()
        self.deaths: set[tuple[str, int]] = set()
        self.events: Counter[str] = Counter()

    def observe(self, now: float, node: SimNode, change: MemberChanged) -> None:
        member = change.member
        healthy = member.node_id not in self.slow
        kind = "healthy" if healthy else "slow"
        if member.liveness is Liveness.SUSPECT:
            self.events[f"suspect_{kind}"] += 1
            self.episodes.add((member.node_id, member.incarnation))
        elif member.liveness is Liveness.DEAD:
            self.events[f"dead_{kind}"] += 1
            self.deaths.add((member.node_id, member.incarnation))

    def count(self, which: set[tuple[str, int]], healthy: bool) -> int:
        return sum(1 for node_id, _ in which if (node_id not in self.slow) == healthy)


def run_loss(name: str, config: SwimConfig, loss: float, args) -> list[object]:
    wall = time.monotonic()
    sim = simulation(args, loss=loss)
    nodes = sim.build(config, args.nodes)
    tally = Tally(set())
    sim.observers.append(tally.observe)
    Progress(f"{name} loss {loss:.0%}", args.quiet).run(sim, args.duration, step=30.0)
    stats: Counter[str] = Counter()
    for node in nodes:
        stats.update(node.swim.statistics())
    return [
        name,
        f"{loss:.0%}",
        args.nodes,
        f"{args.duration:.0f}",
        tally.count(tally.episodes, True),
        tally.events["suspect_healthy"],
        stats["refutations"],
        tally.count(tally.deaths, True),
        tally.events["dead_healthy"],
        sim.max_datagram,
        round(time.monotonic() - wall),
    ]


def run_stall(name: str, config: SwimConfig, onset: str, args) -> list[object]:
    wall = time.monotonic()
    sim = simulation(args)
    nodes = sim.build(config, args.stall_nodes)
    rng = random.Random(args.seed * 31 + 7)
    slow_nodes = rng.sample(nodes, args.slow)
    tally = Tally({node.node_id for node in slow_nodes})
    sim.observers.append(tally.observe)

    def cycle(node: SimNode) -> None:
        duration = rng.uniform(1.0, 5.0)
        if onset == "probe":
            sim.stall_after_next_probe(node, duration)
        else:
            sim.stall(node, duration)
        sim.at(sim.now + duration + rng.uniform(1.0, 5.0), lambda: cycle(node))

    for node in slow_nodes:
        sim.at(rng.uniform(5.0, 10.0), lambda node=node: cycle(node))
    Progress(f"{name} stalls/{onset}", args.quiet).run(sim, args.duration, step=30.0)
    stalls = sum(node.swim.statistics().get("stalls", 0) for node in slow_nodes)
    return [
        name,
        onset,
        tally.count(tally.episodes, True),
        tally.events["suspect_healthy"],
        tally.count(tally.deaths, True),
        tally.count(tally.episodes, False),
        tally.count(tally.deaths, False),
        stalls,
        round(time.monotonic() - wall),
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--part", choices=["loss", "stall", "both"], default="both")
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--losses", default="0.01,0.05")
    p.add_argument("--duration", type=float, default=3600.0)
    p.add_argument("--stall-nodes", type=int, default=100)
    p.add_argument("--slow", type=int, default=4)
    p.add_argument("--onsets", default="random,probe")
    args = p.parse_args()
    print(f"# {command_line()}")
    signed = "signed" if args.security == "on" else "unsigned"
    print(f"# security {args.security}: datagrams and membership claims {signed}")
    if args.part in ("loss", "both"):
        rows = []
        for loss in (float(x) for x in args.losses.split(",")):
            for name, config in profiles(args.profiles):
                rows.append(run_loss(name, config, loss, args))
                print(security_summary(f"{name} at {loss:.0%}"))
                print(f"  {name} at {loss:.0%} done", file=sys.stderr)
        print(f"# G3: healthy cluster of {args.nodes}, {args.duration:.0f} s, uniform loss")
        headers = [
            "profile",
            "loss",
            "N",
            "sim s",
            "false suspicions",
            "suspect events",
            "refutations",
            "false deaths",
            "dead events",
            "max datagram B",
            "wall s",
        ]
        print(table(headers, rows))
    if args.part in ("stall", "both"):
        rows = []
        spec = args.profiles if "plain" in args.profiles else args.profiles + ",plain"
        for onset in args.onsets.split(","):
            for name, config in profiles(spec):
                rows.append(run_stall(name, config, onset, args))
                print(security_summary(f"{name} stalls/{onset}"))
                print(f"  {name} stalls/{onset} done", file=sys.stderr)
        print(
            f"# G4: {args.slow} of {args.stall_nodes} nodes stalling 1-5 s, {args.duration:.0f} s"
        )
        headers = [
            "profile",
            "stall onset",
            "false suspicions (healthy)",
            "suspect events (healthy)",
            "false deaths (healthy)",
            "suspicions of slow",
            "deaths of slow",
            "stalls noticed",
            "wall s",
        ]
        print(table(headers, rows))


if __name__ == "__main__":
    main()
