"""Clients of a p2pindex cluster: ``connect`` (async, trio) and ``Client`` (blocking)."""

from p2pindex.client.async_client import AsyncClient, connect
from p2pindex.client.results import (
    Context,
    DeleteResult,
    GetResult,
    HintBacklog,
    KeyPlacement,
    Member,
    MemberStatus,
    NodeStatus,
    Placement,
    PutResult,
    RingView,
    SiblingConflict,
    Trace,
    TraceStep,
)
from p2pindex.client.sync_client import Client

__all__ = [
    "AsyncClient",
    "Client",
    "Context",
    "DeleteResult",
    "GetResult",
    "HintBacklog",
    "KeyPlacement",
    "Member",
    "MemberStatus",
    "NodeStatus",
    "Placement",
    "PutResult",
    "RingView",
    "SiblingConflict",
    "Trace",
    "TraceStep",
    "connect",
]
