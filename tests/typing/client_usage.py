"""A small program that uses every public method of both clients, for ``mypy --strict``.

It is type-checked, never run (tests/unit/test_typing.py): with ``--disallow-any-expr`` any
``Any`` that leaked out of p2pindex's public API into this file would be an error.
"""

from __future__ import annotations

import trio

import p2pindex
from p2pindex import (
    AsyncClient,
    Client,
    ConsistencyLevel,
    Context,
    DeleteResult,
    GetResult,
    HintBacklog,
    InvalidRequest,
    KeyPlacement,
    Member,
    MemberStatus,
    NodeStatus,
    P2PIndexError,
    Placement,
    PutResult,
    Timeout,
    Unavailable,
)


def show_status(status: NodeStatus) -> str:
    members: tuple[MemberStatus, ...] = status.members
    lines = [f"{status.node_id} {status.address} {status.cluster} {status.state}"]
    reason: str | None = status.state_reason
    lines.append(f"{reason} N={status.n_replicas} keys={status.keys}")
    for member in members:
        ownership: float = member.ownership
        lines.append(
            f"{member.node_id} {member.address} {member.liveness} {member.state} "
            f"{member.incarnation} {member.in_ring} {ownership:.2f}"
        )
    for hint in status.hints:
        backlog: HintBacklog = hint
        oldest: float | None = backlog.oldest
        lines.append(f"{backlog.target} {backlog.count} {backlog.bytes} {oldest}")
    for name, value in status.statistics.items():
        lines.append(f"{name}={value:g}")
    lines.append(str(len(status.document)))
    return "\n".join(lines)


def show_placement(placement: KeyPlacement) -> str:
    key: bytes = placement.key
    rows: list[str] = [f"{key!r} N={placement.n_replicas} {len(placement.document)}"]
    for node in placement.nodes + placement.replicas:
        row: Placement = node
        rows.append(
            f"{row.role} {row.node_id} {row.address} {row.liveness} {row.state} "
            f"{row.usable} {row.hints_held_here}"
        )
    return "\n".join(rows)


def show_members(members: tuple[Member, ...]) -> list[str]:
    return [f"{m.node_id}@{m.address}: {m.liveness}/{m.state}" for m in members]


async def use_async_client(addresses: list[str]) -> None:
    client: AsyncClient = p2pindex.connect(
        addresses,
        consistency=ConsistencyLevel.QUORUM,
        timeout=2.0,
        connect_timeout=1.0,
        handshake_timeout=1.0,
    )
    async with client as db:
        put: PutResult = await db.put("user:1", b"alice", consistency="all", timeout=1.0)
        context: Context = put.context
        warning: str | None = put.warning
        got: GetResult = await db.get("user:1", consistency=2, strict=True)
        values: list[bytes] = got.values
        found: bool = got.found
        try:
            value: bytes | None = got.value
        except P2PIndexError:
            value = None
        await db.put("user:1", "merged", context=got.context)
        deleted: DeleteResult = await db.delete("user:1", context=context)
        status: NodeStatus = await db.status()
        placement: KeyPlacement = await db.explain("user:1")
        members: tuple[Member, ...] = await db.members(addresses[0])
        order: tuple[str, ...] = db.preference_list("user:1")
        largest: int = db.limits.max_value
        print(warning, values, found, value, deleted.context, order, largest)
        print(show_status(status), show_placement(placement), show_members(members))
        try:
            await db.remove("0123abcd")
            await db.leave(addresses[-1])
        except (Unavailable, Timeout, InvalidRequest) as exc:
            print(f"refused: {exc}")


def use_blocking_client(addresses: list[str]) -> None:
    with Client(addresses, timeout=2.0, connect_timeout=1.0, handshake_timeout=1.0) as db:
        put: PutResult = db.put("user:2", "bob")
        got: GetResult = db.get("user:2", consistency=ConsistencyLevel.ONE)
        deleted: DeleteResult = db.delete("user:2", context=got.context)
        status: NodeStatus = db.status(addresses[0])
        placement: KeyPlacement = db.explain(b"user:2")
        members: tuple[Member, ...] = db.members()
        order: tuple[str, ...] = db.preference_list("user:2")
        largest: int = db.limits.max_value
        print(put.context, deleted.context, order, largest)
        print(show_status(status), show_placement(placement), show_members(members))
        db.remove("0123abcd", addresses[0])
        db.leave(addresses[-1])
    db.close()


if __name__ == "__main__":
    trio.run(use_async_client, ["127.0.0.1:7400"])
    use_blocking_client(["127.0.0.1:7400"])
