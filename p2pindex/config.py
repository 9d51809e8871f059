"""Configuration of a node and of the protocol limits, with defaults and their reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from p2pindex.core.terms import TermLimits
from p2pindex.errors import ConfigError
from p2pindex.types import Address

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits enforced on every frame and request, so one peer cannot exhaust a node."""

    max_frame: int = 16 * MIB
    max_key: int = 1 * KIB
    max_value: int = 1 * MIB
    sibling_warn: int = 25
    sibling_max: int = 100

    def __post_init__(self) -> None:
        if self.max_key < 1 or self.max_value < 1:
            raise ConfigError("key and value limits must be positive")
        if self.max_frame < self.max_value + self.max_key + 4 * KIB:
            raise ConfigError("max_frame must hold a full-size key and value plus headers")
        if not 1 <= self.sibling_warn <= self.sibling_max:
            raise ConfigError("sibling_warn must be between 1 and sibling_max")


PLANTED_BUGS = frozenset(
    {
        "lww",
        "ack-before-commit",
        "hints-dropped-on-restart",
        "early-tombstone-reap",
        "no-dots",
        "swim-no-suspicion",
    }
)
"""Deliberate defects the simulation harness must catch (tests prove each one is caught).
They exist only behind ``NodeConfig.planted_bugs``, which nothing but the harness sets."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs to start; validated on construction."""

    data_dir: Path | None
    listen: Address
    seeds: tuple[Address, ...] = ()
    advertise: Address | None = None
    cluster: str = "p2pindex"
    n_replicas: int = 3
    limits: Limits = field(default_factory=Limits)
    fsync: bool = False
    """True: every commit is fsynced (survives power loss). False: survives kill -9 only."""
    request_timeout: float = 5.0
    """Default deadline of a coordinated request when the client gives none (seconds)."""
    replica_timeout: float = 2.0
    """How long a coordinator waits for one replica before counting it as failed (seconds)."""
    remove_dead_after: float | None = None
    """Take a member out of the ring after it has been dead this long (seconds); None keeps
    it until an operator runs `p2pindex remove`, because moving data on a transient failure
    costs more than hinted handoff does."""
    anti_entropy_interval: float | None = 5.0
    """Mean seconds between anti-entropy rounds (each compares one peer's shared keys and
    repairs what differs); None turns anti-entropy off."""

    term_limits: TermLimits = field(default_factory=TermLimits)
    """Bounds on the index terms one write may carry (count, term size, name length)."""

    planted_bugs: frozenset[str] = frozenset()
    """Known defects to switch on, for proving the simulation's checkers (never in production)."""
    insecure: bool = False
    """Run without authentication or encryption (tests and benchmarks only)."""
    trust_file: Path | None = None
    """Trust file (or authority directory) to use instead of ``data_dir/cluster.trust``."""
    certificate_file: Path | None = None
    """Node certificate to use instead of ``data_dir/node.cert``."""

    def __post_init__(self) -> None:
        unknown = self.planted_bugs - PLANTED_BUGS
        if unknown:
            raise ConfigError(
                f"unknown planted bug(s) {', '.join(sorted(unknown))}; known: "
                f"{', '.join(sorted(PLANTED_BUGS))}"
            )
        if not 1 <= self.n_replicas <= 16:
            raise ConfigError(f"n_replicas must be in 1..16, not {self.n_replicas}")
        if self.remove_dead_after is not None and self.remove_dead_after <= 0:
            raise ConfigError("remove_dead_after must be positive (or None to never)")
        if self.anti_entropy_interval is not None and not self.anti_entropy_interval > 0:
            raise ConfigError("anti_entropy_interval must be positive (or None to turn it off)")
        if self.request_timeout <= 0 or self.replica_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if not self.cluster or len(self.cluster) > 64:
            raise ConfigError("cluster name must be 1..64 characters")

    @property
    def advertised(self) -> Address:
        return self.advertise or self.listen
