"""G6/G8: idle traffic per node and the largest datagram, in a settled cluster.

Runs --nodes (1000) idle nodes, lets them settle for --warmup seconds, then counts every
byte each node sends and receives (UDP payloads and push-pull stream payloads) over
--duration seconds, long enough to include several push-pull periods.

    python simulations/membership_bandwidth.py                  # N=1000, 600 s
"""

from __future__ import annotations

import time

from membership_common import Progress, parser, run_profiles, simulation, table

from p2pindex.core.swim import SwimConfig
from p2pindex.sim.swim_sim import UDP_IP_HEADER, SwimSimulation


def counters(sim: SwimSimulation) -> list[tuple[int, int, int]]:
    """Per node: UDP payload bytes, datagrams and stream payload bytes, in and out."""
    return [
        (n.udp_in + n.udp_out, n.datagrams_in + n.datagrams_out, n.tcp_in + n.tcp_out)
        for n in sim.nodes
    ]


def run(name: str, config: SwimConfig, args) -> list[object]:
    wall = time.monotonic()
    sim = simulation(args, loss=args.loss)
    sim.build(config, args.nodes)
    progress = Progress(name, args.quiet)
    progress.run(sim, args.warmup, step=30.0)
    before = counters(sim)
    progress.run(sim, args.warmup + args.duration, step=30.0)
    after = counters(sim)
    udp, wire, tcp = [], [], []
    for (u0, d0, t0), (u1, d1, t1) in zip(before, after, strict=True):
        udp.append((u1 - u0) / args.duration)
        tcp.append((t1 - t0) / args.duration)
        wire.append((u1 - u0 + (d1 - d0) * UDP_IP_HEADER) / args.duration)
    n = len(udp)
    total = [u + t for u, t in zip(udp, tcp, strict=True)]
    return [
        name,
        args.nodes,
        sum(udp) / n,
        sum(tcp) / n,
        sum(total) / n,
        max(total),
        sum(w + t for w, t in zip(wire, tcp, strict=True)) / n,
        sim.max_datagram,
        round(time.monotonic() - wall),
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--warmup", type=float, default=60.0)
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--loss", type=float, default=0.0)
    args = p.parse_args()
    rows = run_profiles(args, run)
    print(f"# G6: idle traffic per node (in+out), N={args.nodes}, {args.duration:.0f} s window")
    headers = [
        "profile",
        "N",
        "UDP B/s",
        "push-pull B/s",
        "total B/s",
        "max node B/s",
        "total with UDP/IP headers B/s",
        "max datagram B",
        "wall s",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
