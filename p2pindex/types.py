"""Shared vocabulary of p2pindex: enums and small value types used by every layer.

Nothing here does I/O; every layer, including the sans-IO core, may import this module.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import NewType

NodeId = NewType("NodeId", str)
"""A node's identity: lowercase hex derived from its public key (stable across restarts)."""


class ConsistencyLevel(enum.Enum):
    """How many replicas must answer before a request succeeds."""

    ONE = "one"
    QUORUM = "quorum"
    ALL = "all"

    def required(self, n: int) -> int:
        """The number of replies this level needs out of ``n`` replicas."""
        if self is ConsistencyLevel.ONE:
            return 1
        if self is ConsistencyLevel.QUORUM:
            return n // 2 + 1
        return n


Consistency = ConsistencyLevel | int
"""A consistency level, or an explicit count of replicas (R or W)."""


def required_replies(consistency: Consistency, n: int) -> int:
    """Resolve a level or an explicit integer into a reply count, checking it against ``n``.

    Raises ValueError when an explicit count is outside 1..n, because a request that can never
    be satisfied must be refused before anything is sent.
    """
    if isinstance(consistency, ConsistencyLevel):
        return consistency.required(n)
    if isinstance(consistency, bool) or not isinstance(consistency, int):
        raise ValueError(f"consistency must be one, quorum, all or an integer, not {consistency!r}")
    if not 1 <= consistency <= n:
        raise ValueError(f"consistency {consistency} is outside 1..{n} (N={n})")
    return consistency


_LEVELS = {level.value: level for level in ConsistencyLevel}
"""Every request names its level: a dict lookup, not a walk over the enum, per request."""


def parse_consistency(text: str) -> Consistency:
    """Parse ``one``, ``quorum``, ``all`` (any case) or a positive integer."""
    lowered = text.strip().lower()
    level = _LEVELS.get(lowered)
    if level is not None:
        return level
    if lowered.isascii() and lowered.isdigit() and len(lowered) <= 9 and int(lowered) > 0:
        return int(lowered)
    raise ValueError(f"bad consistency {text!r}: expected one, quorum, all or a positive integer")


def consistency_to_wire(consistency: Consistency) -> str | int:
    return consistency.value if isinstance(consistency, ConsistencyLevel) else consistency


def consistency_from_wire(value: object) -> Consistency:
    if isinstance(value, str):
        return parse_consistency(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"bad consistency {value!r}")


class NodeRole(enum.Enum):
    """A node's role for one key and one request; never a fixed property of a node."""

    PRIMARY = "primary"
    REPLICA = "replica"
    COORDINATOR = "coordinator"
    FALLBACK = "fallback"


class NodeState(enum.Enum):
    """What a live node can do for the cluster (orthogonal to SWIM liveness)."""

    ACTIVE = "active"
    SYNCING = "syncing"
    DEGRADED = "degraded"


class Liveness(enum.Enum):
    """What SWIM believes about a member."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """A host and port; the same port number serves TCP (data) and UDP (SWIM)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("address has an empty host")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port!r} is outside 0..65535")

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``host:port`` or ``[v6addr]:port`` with an error that names the problem."""
        text = text.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"bad address {text!r}: expected [IPv6]:PORT")
            port_text = rest[1:]
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or not host:
                raise ValueError(f"bad address {text!r}: expected HOST:PORT")
            if ":" in host:
                raise ValueError(f"bad address {text!r}: write IPv6 hosts as [addr]:PORT")
        if not port_text.isdigit():
            raise ValueError(f"bad address {text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if not 0 < port <= 65535:
            raise ValueError(f"bad address {text!r}: port {port} is outside 1..65535")
        if text.startswith("["):
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"bad address {text!r}: {host!r} is not an IPv6 address") from None
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def key_text(key: bytes, limit: int = 64) -> str:
    """A key (or key prefix) as a person typed it, for messages: quoted text when it is
    printable UTF-8, else ``0x`` and hex; long ones are cut short with ``...``."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and text.isprintable():
        cut = text if len(text) <= limit else text[:limit] + "..."
        return "'" + cut.replace("'", "\\'") + "'"
    hexed = key.hex()
    return "0x" + (hexed if len(hexed) <= 2 * limit else hexed[: 2 * limit] + "...")
