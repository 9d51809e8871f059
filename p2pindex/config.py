"""Configuration of a node and of the protocol limits, with defaults and their reasons."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from p2pindex.errors import ConfigError
from p2pindex.types import Address

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class TermLimits:
    """Bounds on what one write may carry, so an index row always fits a frame and a page."""

    max_terms: int = 32
    """Terms per object version, over all its indexes."""
    max_term_bytes: int = 256
    max_name_chars: int = 64

    def __post_init__(self) -> None:
        for name in ("max_terms", "max_term_bytes", "max_name_chars"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= 1 << 16:
                raise ValueError(f"{name} must be an integer in 1..65536, not {value!r}")


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits enforced on every frame and request, so one peer cannot exhaust a node."""

    max_frame: int = 16 * MIB
    max_key: int = 1 * KIB
    max_value: int = 1 * MIB
    sibling_warn: int = 25
    sibling_max: int = 100
    max_record: int | None = None
    """Largest record (every sibling with its dot, and the clock) a write may create; None
    means a quarter of ``max_frame``, so a repair or handoff that merges the divergent
    records of up to three replicas still fits in one node-to-node frame."""
    reply_budget: int = 4 * MIB
    """Unsent reply bytes (queued, being sent, or expected from requests still being
    served) at which a connection stops being read: a client that does not read its
    replies slows only itself."""
    max_unanswered: int = 1024
    """Requests of one connection being served at once before it stops being read."""
    node_in_flight: int = 256 * MIB
    """Request, expected reply and unsent reply bytes a node holds for all its clients
    together; over it, requests of client connections that already hold something are
    answered ``overloaded`` before anything is done, and a quarter over it every client
    request is (``net.channel.NodeLoad``)."""

    def __post_init__(self) -> None:
        if self.max_key < 1 or self.max_value < 1:
            raise ConfigError("key and value limits must be positive")
        if self.max_frame < self.max_value + self.max_key + 4 * KIB:
            raise ConfigError("max_frame must hold a full-size key and value plus headers")
        if not self.max_value + self.max_key + 256 <= self.record_limit <= self.max_frame // 4:
            raise ConfigError(
                f"max_record ({self.record_limit} bytes) must hold one full-size value and be "
                f"at most a quarter of max_frame ({self.max_frame // 4} bytes)"
            )
        if self.reply_budget < 1 or self.max_unanswered < 1 or self.node_in_flight < 1:
            raise ConfigError("reply_budget, max_unanswered and node_in_flight must be positive")
        if not 1 <= self.sibling_warn <= self.sibling_max:
            raise ConfigError("sibling_warn must be between 1 and sibling_max")

    @property
    def record_limit(self) -> int:
        return self.max_frame // 4 if self.max_record is None else self.max_record


MAX_HANDSHAKES = 256
"""Connections in their handshake at once, by default (see ``AdmissionLimits``)."""


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """What an operator allows each client: enforced by ``node.admission``, refusals counted
    in `status` (``rejected.connections``, ``rejected.client_connections``,
    ``overloaded.client_rate``, ``security.handshake.refused.*``)."""

    max_connections: int = 4096
    """Open client connections a node serves at once (the cluster's own nodes are never
    refused: see ``node.admission``)."""
    max_client_connections: int = 256
    """Open connections of one client key."""
    client_rate: float | None = None
    """Requests a second one client key may send on average; None: no limit."""
    client_burst: int = 1000
    """Requests a client key may send at once above its rate."""
    max_handshakes: int = MAX_HANDSHAKES
    """Connections still in their handshake at once; one more closes the one waiting
    longest (counted as ``handshake.evicted``): sockets a stranger opens and leaves silent
    cannot use up the node's descriptors or keep peers and clients out."""
    broken_sessions: int = 5
    """Sessions of one client key the node may close for frames it cannot read (invalid
    CBOR, a frame over the limit) before it refuses that key's new handshakes (counted as
    ``security.handshake.refused.broken_sessions``); 0: never. Replacing a broken session
    costs the node a whole handshake's cryptography, which a client holding a credential
    could otherwise buy over and over for a few bytes each."""
    broken_session_interval: float = 30.0
    """Seconds after which a refused client key may open one more session: a token bucket
    of ``broken_sessions`` that regains one each interval. Sessions already open are served."""

    def __post_init__(self) -> None:
        if self.broken_sessions < 0 or not self.broken_session_interval > 0:
            raise ConfigError(
                "broken_sessions must be at least 0 and broken_session_interval positive"
            )
        if self.max_connections < 1 or self.max_client_connections < 1:
            raise ConfigError("connection limits must be at least 1")
        if self.max_handshakes < 1:
            raise ConfigError("max_handshakes must be at least 1")
        if self.client_rate is not None and not self.client_rate > 0:
            raise ConfigError("client_rate must be positive (or None for no limit)")
        if self.client_burst < 1:
            raise ConfigError("client_burst must be at least 1")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The node's HTTP listener (API, health, metrics, dashboard)."""

    listen: Address
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    """Allow a non-loopback listener without TLS (bearer tokens would cross in the clear)."""
    request_deadline: float = 10.0
    """Seconds a client has from a request's first byte to its last (slow clients cut off)."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive connection may sit idle between requests."""
    send_timeout: float = 30.0
    """Seconds a client has to take an answer (one that stops reading is cut off)."""
    max_connections: int = 1024
    max_header_bytes: int = 16 * KIB

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                "HTTP TLS needs both a certificate and its key (--http-cert and --http-key, "
                "or tls_cert and tls_key under [http] in the config file)"
            )
        if self.tls_cert is None and not self.insecure and not _loopback(self.listen.host):
            raise ConfigError(
                f"the HTTP listener {self.listen} is not on loopback: give it a TLS certificate "
                "and key (--http-cert, --http-key; tls_cert, tls_key under [http] in the "
                "config file) or accept plain HTTP (--http-insecure; insecure = true under "
                "[http])"
            )
        if min(self.request_deadline, self.idle_timeout, self.send_timeout) <= 0:
            raise ConfigError("HTTP timeouts must be positive")
        if not 1 <= self.max_connections <= 100_000:
            raise ConfigError("http max_connections must be in 1..100000")
        if not 1 * KIB <= self.max_header_bytes <= 1 * MIB:
            raise ConfigError("http max_header_bytes must be in 1 KiB..1 MiB")

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{self.listen}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
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
    hint_max_bytes_per_target: int = 256 * MIB
    """Hinted-handoff budget per unreachable node: past it, writes for it keep no hint."""
    hint_max_age: float = 3 * 24 * 3600.0
    """Hints older than this are dropped (anti-entropy repairs what they carried)."""
    replace: str | None = None
    """Id of a dead member this (new) node replaces (`serve --replace`, node/replace.py)."""
    tombstone_grace: float | None = 3600.0
    """Seconds a node keeps a tombstone at least; after that it is removed once every
    replica of its key is known to hold it (node/reaper.py), and copies held outside the
    node's ranges are dropped the same way. None keeps every tombstone and copy."""

    term_limits: TermLimits = field(default_factory=TermLimits)
    """Bounds on the index terms one write may carry (count, term size, name length)."""

    insecure: bool = False
    """Run without authentication or encryption (tests and benchmarks only)."""
    trust_file: Path | None = None
    """Trust file (or authority directory) to use instead of ``data_dir/cluster.trust``."""
    certificate_file: Path | None = None
    """Node certificate to use instead of ``data_dir/node.cert``."""
    http: HttpConfig | None = None
    """The HTTP listener; None: the node speaks only the binary protocol."""

    def __post_init__(self) -> None:
        if not 1 <= self.n_replicas <= 16:
            raise ConfigError(f"n_replicas must be in 1..16, not {self.n_replicas}")
        if self.remove_dead_after is not None and self.remove_dead_after <= 0:
            raise ConfigError("remove_dead_after must be positive (or None to never)")
        if self.anti_entropy_interval is not None and not self.anti_entropy_interval > 0:
            raise ConfigError("anti_entropy_interval must be positive (or None to turn it off)")
        if self.hint_max_bytes_per_target < 0 or not self.hint_max_age > 0:
            raise ConfigError("hint_max_bytes_per_target must be >= 0 and hint_max_age positive")
        if self.tombstone_grace is not None and not self.tombstone_grace > 0:
            raise ConfigError("tombstone_grace must be positive (or None to never reap)")
        if self.request_timeout <= 0 or self.replica_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if not self.cluster or len(self.cluster) > 64:
            raise ConfigError("cluster name must be 1..64 characters")

    @property
    def advertised(self) -> Address:
        return self.advertise or self.listen
