"""SWIM messages: membership records (gossiped and synced) and probe messages (UDP only).

Records carry an optional ``signature`` by whoever made the claim (alive and leave by the
subject, suspect and dead by the accuser; see ``claims.ClaimSigner``). It is decoded, kept
and forwarded unchanged, so a relayed record stays verifiable however many hops it travels.

Records and probe messages are ``final``: the hot paths dispatch on ``type(x) is C``, which
covers every case only because nothing subclasses them (and mypy narrows on it only then).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import final

from p2pindex.types import Address, Liveness, NodeState


class Kind(enum.IntEnum):
    """Message codes on the wire; append, never reuse."""

    ALIVE = 1
    SUSPECT = 2
    DEAD = 3
    PING = 10
    PING_REQ = 11
    ACK = 12
    NACK = 13
    PP_REQUEST = 20
    PP_REPLY = 21
    PP_PUSH = 22
    PP_DONE = 23


STATE_CODES: dict[NodeState, int] = {
    NodeState.ACTIVE: 0,
    NodeState.SYNCING: 1,
    NodeState.DEGRADED: 2,
}
STATES_BY_CODE: dict[int, NodeState] = {code: state for state, code in STATE_CODES.items()}

RANK: dict[Liveness, int] = {
    Liveness.ALIVE: 0,
    Liveness.SUSPECT: 1,
    Liveness.DEAD: 2,
    Liveness.LEFT: 3,
}
"""At equal incarnation a later stage wins; left beats dead so a leave is never undone."""


@final
@dataclass(frozen=True, slots=True)
class Alive:
    node_id: str
    incarnation: int
    address: Address
    state: NodeState
    signature: bytes | None = None
    tokens_of: str | None = None
    """Set by a node that took a dead member's place (`serve --replace`): the id its ring
    tokens come from. Part of the signed claim, so only the node itself can make it."""

    @property
    def liveness(self) -> Liveness:
        return Liveness.ALIVE


@dataclass(frozen=True, slots=True)
class _Accusation:
    """What ``accuser`` claims about ``node_id`` at ``incarnation`` (suspect or dead)."""

    node_id: str
    incarnation: int
    accuser: str
    signature: bytes | None = None


@final
@dataclass(frozen=True, slots=True)
class Suspect(_Accusation):
    @property
    def liveness(self) -> Liveness:
        return Liveness.SUSPECT


@final
@dataclass(frozen=True, slots=True)
class Dead(_Accusation):
    """Declared dead by ``accuser``; when the accuser is the subject itself it is a leave."""

    @property
    def liveness(self) -> Liveness:
        return Liveness.LEFT if self.accuser == self.node_id else Liveness.DEAD


Record = Alive | Suspect | Dead


@final
@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str
    """The node id the sender means to reach; anyone else at that address ignores it."""


@final
@dataclass(frozen=True, slots=True)
class PingReq:
    seq: int
    target: str
    address: Address


@final
@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@final
@dataclass(frozen=True, slots=True)
class Nack:
    seq: int


Control = Ping | PingReq | Ack | Nack


@dataclass(frozen=True, slots=True)
class Datagram:
    sender: str
    incarnation: int
    """The sender's own current incarnation: lets a restarted node be heard from a new
    address before its new alive record has reached everyone."""
    records: tuple[Record, ...]
    controls: tuple[Control, ...]


@dataclass(frozen=True, slots=True)
class PushPullRequest:
    sender: str
    join: bool
    buckets: bytes | None
    """Digest: 8 bytes per bucket; None asks for the full table (memberlist behaviour)."""
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class PushPullReply:
    differing: tuple[int, ...] | None
    """Buckets whose digests differed (None: full-table exchange, nothing more to send)."""
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class PushPullPush:
    sender: str
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class PushPullDone:
    pass


PushPullMessage = PushPullRequest | PushPullReply | PushPullPush | PushPullDone
