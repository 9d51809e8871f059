"""What the caller of a coordinated request is told once its round is over, in the error
tree's terms: a write whose quorum was lost or whose time ran out may still be stored on
some replica, so it is indeterminate (``QuorumFailed`` / ``Timeout``), never definite.
"""

from __future__ import annotations

from p2pindex.config import Limits
from p2pindex.core import versions
from p2pindex.core.quorum import Outcome, ReadQuorum, WriteQuorum
from p2pindex.core.versions import VersionedObject, VersionVector
from p2pindex.errors import Overloaded, QuorumFailed, StorageFailure, Timeout, Unavailable
from p2pindex.node.stats import StatisticsStore
from p2pindex.wire.messages import DeleteReply, GetReply, Message, PutReply

EMPTY_CONTEXT = versions.encode_context(VersionVector())


def write_reply(
    quorum: WriteQuorum,
    key: bytes,
    obj: VersionedObject,
    is_delete: bool,
    stats: StatisticsStore,
    limits: Limits,
) -> Message:
    """The answer to a coordinated write whose quorum is decided or whose time ran out."""
    if quorum.outcome is Outcome.SUCCEEDED:
        stats.incr("requests.delete" if is_delete else "requests.put")
        context_bytes = versions.encode_context(obj.clock, key)
        if is_delete:
            return DeleteReply(context_bytes)
        return PutReply(context_bytes, _sibling_warning(obj, stats, limits), len(obj.values))
    stats.incr("requests.write_indeterminate")
    if quorum.outcome is Outcome.FAILED:
        raise QuorumFailed(
            f"only {quorum.acks} of {quorum.required} replicas stored the write; it may "
            "still be visible on them",
            required=quorum.required,
            acknowledged=quorum.acks,
        )
    raise Timeout(
        f"timed out with {quorum.acks} of {quorum.required} required acknowledgements; the "
        "write may still be stored on the replicas that have it: read before retrying",
        required=quorum.required,
        acknowledged=quorum.acks,
    )


def local_commit_failed(error: StorageFailure, required: int) -> QuorumFailed:
    """The coordinator's own commit failed: nothing was sent to other replicas.

    Indeterminate, not definite: while the commit was pending the version was visible
    locally, and a concurrent write to the key may have merged it in.
    """
    return QuorumFailed(
        f"the coordinator's storage failed ({error}); nothing was sent to other "
        "replicas, but a concurrent write may carry this one",
        required=required,
        acknowledged=0,
    )


def hint_refused(error: Overloaded, required: int) -> QuorumFailed:
    """The coordinator stood in for a replica but could not keep the hint for it: the
    version is committed here, outside the key's preference list, and was sent nowhere.
    Indeterminate: reads through this node may see it until it is superseded."""
    return QuorumFailed(
        f"this node stood in for a replica that is down but could not keep the write for it "
        f"({error}); it was sent to no other replica, though this node holds it: bring the "
        "member back or remove it, then write again",
        required=required,
        acknowledged=0,
    )


def read_reply(quorum: ReadQuorum, key: bytes, stats: StatisticsStore) -> Message:
    """The answer to a coordinated read whose quorum is decided or whose time ran out."""
    if quorum.outcome is Outcome.SUCCEEDED:
        stats.incr("requests.get")
        merged = quorum.merged
        if merged is None:
            return GetReply([], EMPTY_CONTEXT)
        return GetReply(merged.values, versions.encode_context(merged.clock, key))
    if quorum.outcome is Outcome.FAILED:
        raise Unavailable(quorum.required, quorum.replies, "replicas failed to answer the read")
    raise Timeout(required=quorum.required, acknowledged=quorum.replies)


def _sibling_warning(obj: VersionedObject, stats: StatisticsStore, limits: Limits) -> str | None:
    if obj.sibling_count >= limits.sibling_warn:
        stats.incr("writes.sibling_warnings")
        return (
            f"key has {obj.sibling_count} siblings (warning at "
            f"{limits.sibling_warn}, refused above "
            f"{limits.sibling_max}); read and write with the context to resolve"
        )
    return None
