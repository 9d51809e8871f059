"""Clients of a p2pindex cluster: ``connect`` (async, trio) and ``Client`` (blocking)."""

from p2pindex.client.async_client import AsyncClient, connect
from p2pindex.client.batching import DeleteItem, PutItem
from p2pindex.client.results import (
    BatchResult,
    Context,
    DeleteResult,
    GetResult,
    HintBacklog,
    KeyOutcome,
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
    "BatchResult",
    "Client",
    "Context",
    "DeleteItem",
    "DeleteResult",
    "GetResult",
    "HintBacklog",
    "KeyOutcome",
    "KeyPlacement",
    "Member",
    "MemberStatus",
    "NodeStatus",
    "Placement",
    "PutItem",
    "PutResult",
    "RingView",
    "SiblingConflict",
    "Trace",
    "TraceStep",
    "connect",
]
