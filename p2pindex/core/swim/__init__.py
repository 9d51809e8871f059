"""Sans-IO SWIM membership with Lifeguard: the engine, its configuration and its vocabulary."""

from p2pindex.types import Liveness, NodeState

from .claims import ClaimSigner
from .codec import DecodeError, Sealer
from .config import HARD_MAX_DATAGRAM, SwimConfig
from .state import Member, MemberChanged
from .swim import Swim

__all__ = [
    "HARD_MAX_DATAGRAM",
    "ClaimSigner",
    "DecodeError",
    "Liveness",
    "Member",
    "MemberChanged",
    "NodeState",
    "Sealer",
    "Swim",
    "SwimConfig",
]
