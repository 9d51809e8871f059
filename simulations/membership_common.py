"""Shared pieces of the membership measurement scripts (simulations/membership_*.py).

Every script runs the same scenario once per profile — p2pindex's tuned ``SwimConfig.default()``
and hashicorp/memberlist's LAN defaults (``SwimConfig.memberlist_lan()``) — in the same
virtual-time harness (``p2pindex.sim.swim_sim``), and prints the figures side by side.
Nodes sign every datagram and membership claim with Ed25519 as a secure cluster does
(``--security off`` for the unsigned protocol); each run also prints how many signed
datagrams were accepted and what was dropped, which in these honest clusters must be nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

from p2pindex.core.swim import SwimConfig
from p2pindex.sim.swim_sim import SwimSimulation

PROFILES: dict[str, Callable[[], SwimConfig]] = {
    "p2pindex": SwimConfig.default,
    "memberlist": SwimConfig.memberlist_lan,
}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--profiles",
        default="p2pindex,memberlist",
        help="comma-separated: p2pindex, memberlist, plain (p2pindex without Lifeguard)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--security",
        choices=["on", "off"],
        default="on",
        help="on (default, as nodes run): every datagram and membership claim is signed "
        "and checked with Ed25519; off: unsigned, as with --insecure",
    )
    return p


_started: list[SwimSimulation] = []
"""Every harness built since the last security summary (a run may build several)."""


def simulation(args: argparse.Namespace, **options: float) -> SwimSimulation:
    """The harness for one run, signed unless ``--security off``."""
    sim = SwimSimulation(seed=args.seed, signed=args.security == "on", **options)
    _started.append(sim)
    return sim


def security_summary(label: str) -> str:
    """One comment line: what the signed runs since the last call accepted and dropped. In
    an honest cluster every drop is a defect (a claim or datagram that should have verified)."""
    totals: Counter[str] = Counter()
    for sim in _started:
        for node in sim.nodes:
            totals.update(node.security.values)
    _started.clear()
    if not totals:
        return f"# {label}: unsigned"
    accepted = totals.pop("swim.accepted", 0)
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none"
    return f"# {label}: {accepted:,} signed datagrams accepted; dropped: {dropped}"


def profiles(spec: str) -> list[tuple[str, SwimConfig]]:
    chosen = []
    for name in spec.split(","):
        name = name.strip()
        if name == "plain":
            chosen.append((name, SwimConfig.default().plain_swim()))
        elif name in PROFILES:
            chosen.append((name, PROFILES[name]()))
        else:
            raise SystemExit(f"unknown profile {name!r}")
    return chosen


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class Progress:
    """Runs a simulation in slices, printing where it is every few wall-clock seconds."""

    def __init__(self, label: str, quiet: bool = False, every: float = 10.0) -> None:
        self.label = label
        self.quiet = quiet
        self.every = every
        self.started = time.monotonic()
        self._last = self.started

    def run(
        self,
        sim: SwimSimulation,
        until: float,
        stop: Callable[[], bool] | None = None,
        step: float = 5.0,
    ) -> None:
        while sim.now < until:
            sim.run_until(min(until, sim.now + step), stop=stop)
            self.tick(sim, until)
            if stop is not None and stop():
                return

    def tick(self, sim: SwimSimulation, until: float) -> None:
        now = time.monotonic()
        if not self.quiet and now - self._last >= self.every:
            self._last = now
            print(
                f"  [{self.label}] simulated {sim.now:7.1f}/{until:.0f} s, "
                f"{sim.events_processed:,} events, wall {now - self.started:5.1f} s",
                file=sys.stderr,
                flush=True,
            )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def command_line() -> str:
    return "python " + " ".join(sys.argv)


def run_profiles(
    args: argparse.Namespace, run: Callable[[str, SwimConfig, argparse.Namespace], list[object]]
) -> list[list[object]]:
    """Print the command line, then run ``run`` once per chosen profile, one table row each."""
    print(f"# {command_line()}")
    signed = "signed" if args.security == "on" else "unsigned"
    print(f"# security {args.security}: datagrams and membership claims {signed}")
    rows = []
    for name, config in profiles(args.profiles):
        rows.append(run(name, config, args))
        print(security_summary(name))
        print(f"  {name} done", file=sys.stderr)
    return rows
