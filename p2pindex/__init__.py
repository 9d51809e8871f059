"""p2pindex: a peer-to-peer, leaderless, Dynamo-style replicated key-value index.

    import p2pindex

    async with p2pindex.connect(["127.0.0.1:7400"]) as db:        # trio
        await db.put("user:1", b"alice")
        result = await db.get("user:1")

    with p2pindex.Client(["127.0.0.1:7400"]) as db:               # blocking
        db.put("user:1", b"alice", consistency=p2pindex.ConsistencyLevel.ALL)

The client names are loaded on first use, so importing a lower layer (``p2pindex.core``,
``p2pindex.types``) stays cheap and free of the networking stack.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from p2pindex.errors import (
    ClientClosed,
    ConfigError,
    ConnectionLost,
    DefiniteError,
    IndeterminateError,
    InvalidArgumentType,
    InvalidRequest,
    NoNodeReachable,
    Overloaded,
    P2PIndexError,
    PermissionDenied,
    ProtocolError,
    QuorumFailed,
    RecordLimitExceeded,
    SiblingLimitExceeded,
    StorageFailure,
    Timeout,
    Unavailable,
)
from p2pindex.types import ConsistencyLevel

if TYPE_CHECKING:
    # The client's names as its ``__all__`` lists them, for type checkers; at run time
    # ``__getattr__`` loads them on first use.
    from p2pindex.client import *

# A library logs only where the program configured logging (`serve` does): without this,
# Python's last-resort handler printed node warnings into `simulate`'s report.
logging.getLogger("p2pindex").addHandler(logging.NullHandler())

from p2pindex.version import __version__  # noqa: E402

__all__ = [
    "AsyncClient",
    "BatchResult",
    "Client",
    "ClientClosed",
    "ConfigError",
    "ConnectionLost",
    "ConsistencyLevel",
    "Context",
    "DefiniteError",
    "DeleteItem",
    "DeleteResult",
    "GetResult",
    "HintBacklog",
    "IndeterminateError",
    "InvalidArgumentType",
    "InvalidRequest",
    "KeyOutcome",
    "KeyPlacement",
    "Member",
    "MemberStatus",
    "NoNodeReachable",
    "NodeStatus",
    "Overloaded",
    "P2PIndexError",
    "PermissionDenied",
    "Placement",
    "ProtocolError",
    "PutItem",
    "PutResult",
    "QuorumFailed",
    "RecordLimitExceeded",
    "RingView",
    "SiblingConflict",
    "SiblingLimitExceeded",
    "StorageFailure",
    "Timeout",
    "Trace",
    "TraceStep",
    "Unavailable",
    "__version__",
    "connect",
]

_CLIENT_NAMES = frozenset(name for name in __all__ if name not in globals())
"""The public names still to load from ``p2pindex.client`` (on first use, so that importing
a lower layer does not import the client); a test keeps them equal to its ``__all__``."""


def __getattr__(name: str) -> object:
    if name in _CLIENT_NAMES:
        value = getattr(importlib.import_module("p2pindex.client"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'p2pindex' has no attribute {name!r}")
