"""Every knob of the SWIM + Lifeguard core, with the formulas that scale them with cluster size.

Two profiles matter: ``default()`` holds p2pindex's values, tuned in the simulator
(simulations/membership_*.py), and ``memberlist_lan()`` reproduces hashicorp/memberlist's LAN
defaults so the same harness can print both side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from p2pindex.errors import ConfigError

HARD_MAX_DATAGRAM = 1200
"""No datagram payload is ever larger: it fits every IPv6 path (1280 B MTU) with headers."""


@dataclass(frozen=True, slots=True)
class SwimConfig:
    lifeguard: bool = True
    """Lifeguard on: local health (LHM), confirmation-shortened suspicion, buddy system, nacks
    and the stall guard. Off gives plain SWIM with a fixed suspicion timeout of ``Min``."""

    probe_interval: float = 1.0
    """Protocol period T (s): one member probed per period."""
    probe_timeout: float = 0.5
    """Wait for a direct ack before asking relays (s); memberlist says: 99th-percentile RTT."""
    scale_probe_timeout: bool = True
    """The Lifeguard paper stretches the probe timeout with local health; memberlist does not."""
    indirect_checks: int = 3
    """k: relays asked to ping a member that did not answer directly."""
    indirect_timeout: float = 0.4
    """How long a relay waits for the target before sending a nack (s). Below
    ``probe_interval - probe_timeout`` so the nack lands before the prober's deadline."""

    suspicion_mult: float = 1.0
    """Min suspicion timeout = mult * max(1, log10 N) * T (memberlist: 4)."""
    suspicion_max_mult: float = 6.0
    """Max suspicion timeout = this * Min; used while no one confirms (memberlist: 6)."""
    suspicion_confirmations: int = 3
    """K: independent confirmations that shrink the timeout from Max to Min (memberlist: mult-2)."""
    awareness_max: int = 8
    """Local health multiplier cap: periods stretch up to this factor."""
    stall_guard: bool = True
    """When a timer fires late by more than ``stall_threshold`` this node was frozen: verdicts
    that fell due meanwhile wait for the backlog instead of blaming the peer (Lifeguard only)."""
    stall_threshold: float = 0.25

    retransmit_mult: int = 7
    """Each update is sent ceil(retransmit_mult * log10(N + 1)) times (memberlist: 4, with the
    ceiling taken on the log). Every node then receives each update about that many times;
    a node misses one with probability ~e^-limit, so 14 at N=100 makes a miss in 10,000
    node-updates unlikely, where memberlist's 8-12 miss about one in 4,000."""
    retransmit_smooth: bool = True
    """ceil(mult * log10(N+1)) instead of memberlist's mult * ceil(log10(N+1)), which jumps
    by half at every power of ten."""
    gossip_interval: float = 0.2
    """Dedicated gossip tick (s), only while updates are queued."""
    gossip_nodes: int = 3
    gossip_to_dead_time: float = 30.0
    """Dead members still receive gossip this long, so they can hear of it and refute."""

    push_pull_interval: float = 30.0
    """Anti-entropy period (s) before scaling with N; 0 disables periodic push-pull."""
    push_pull_scale: bool = True
    """Stretch the period by ceil(log2 N - 5) + 1 above 32 members, as memberlist does."""
    push_pull_digest: bool = True
    """Exchange bucket digests first and records only for differing buckets (memberlist sends
    the full table every time)."""
    push_pull_buckets: int = 64
    max_push_pulls: int = 4
    """Exchanges this node runs at once as a client."""
    max_push_pull_bytes: int = 8 * 1024 * 1024

    dead_probe_interval: float = 5.0
    """Ping one random dead member this often (s), so partitions heal on their own;
    0 disables (memberlist)."""
    dead_record_ttl: float = 24 * 3600.0
    """Dead and left records are kept this long (s), then forgotten."""

    max_datagram: int = HARD_MAX_DATAGRAM
    max_members: int = 100_000
    join_retry_initial: float = 1.0
    join_retry_max: float = 30.0
    leave_timeout: float = 3.0
    """Graceful leave completes after one ack of the leave message, or after this delay."""
    leave_fanout: int = 3
    """Members sent the leave message directly, besides the ordinary gossip."""

    def __post_init__(self) -> None:
        positive = {
            "probe_interval": self.probe_interval,
            "probe_timeout": self.probe_timeout,
            "indirect_timeout": self.indirect_timeout,
            "suspicion_mult": self.suspicion_mult,
            "gossip_interval": self.gossip_interval,
            "dead_record_ttl": self.dead_record_ttl,
            "join_retry_initial": self.join_retry_initial,
            "leave_timeout": self.leave_timeout,
            "stall_threshold": self.stall_threshold,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, not {value!r}")
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError("probe_timeout must be shorter than probe_interval")
        if self.suspicion_max_mult < 1:
            raise ConfigError("suspicion_max_mult must be >= 1")
        if self.push_pull_interval < 0 or self.dead_probe_interval < 0:
            raise ConfigError("intervals must not be negative")
        if not 256 <= self.max_datagram <= HARD_MAX_DATAGRAM:
            raise ConfigError(f"max_datagram must be in 256..{HARD_MAX_DATAGRAM}")
        counts = (
            self.indirect_checks,
            self.awareness_max,
            self.retransmit_mult,
            self.gossip_nodes,
            self.push_pull_buckets,
            self.max_push_pulls,
            self.leave_fanout,
        )
        if min(counts) < 1 or self.suspicion_confirmations < 0:
            raise ConfigError("counts must be positive")
        if self.join_retry_max < self.join_retry_initial:
            raise ConfigError("join_retry_max must be >= join_retry_initial")

    @classmethod
    def default(cls) -> SwimConfig:
        """p2pindex's values (see the field comments; tuned with simulations/membership_*.py)."""
        return cls()

    @classmethod
    def memberlist_lan(cls) -> SwimConfig:
        """hashicorp/memberlist DefaultLANConfig, for side-by-side runs in the same harness.

        Two unavoidable departures: datagrams are capped at 1200 B (memberlist: 1400) and
        there is no TCP fallback ping.
        """
        return cls(
            lifeguard=True,
            probe_interval=1.0,
            probe_timeout=0.5,
            scale_probe_timeout=False,
            indirect_checks=3,
            indirect_timeout=0.5,
            suspicion_mult=4.0,
            suspicion_max_mult=6.0,
            suspicion_confirmations=2,
            awareness_max=8,
            stall_guard=False,
            retransmit_mult=4,
            retransmit_smooth=False,
            gossip_interval=0.2,
            gossip_nodes=3,
            gossip_to_dead_time=30.0,
            push_pull_interval=30.0,
            push_pull_scale=True,
            push_pull_digest=False,
            dead_probe_interval=0.0,
            dead_record_ttl=30.0,
        )

    def plain_swim(self) -> SwimConfig:
        """The same timings without any Lifeguard mechanism (the baseline of the paper)."""
        return replace(self, lifeguard=False)

    # --- formulas ------------------------------------------------------------------------

    def retransmit_limit(self, n: int) -> int:
        if self.retransmit_smooth:
            return max(1, math.ceil(self.retransmit_mult * math.log10(n + 1)))
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def suspicion_min(self, n: int) -> float:
        scale = max(1.0, math.log10(max(1, n)))
        return self.suspicion_mult * scale * self.probe_interval

    def suspicion_max(self, n: int) -> float:
        return self.suspicion_max_mult * self.suspicion_min(n)

    def push_pull_period(self, n: int) -> float:
        if not self.push_pull_scale or n <= 32:
            return self.push_pull_interval
        return self.push_pull_interval * (math.ceil(math.log2(n) - 5) + 1)
