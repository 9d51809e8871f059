"""`p2pindex plan add N | plan remove NODE_ID`: what a membership change would move.

Nothing is changed: the command reads the ring and every live member's key and byte
counts through `status`, and computes the plan with ``p2pindex.core.planning``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import trio

from p2pindex.cli.admin import resolve_node_id, table
from p2pindex.cli.common import EXIT_OK, add_format_option, add_node_option, nodes_of, with_client
from p2pindex.client import AsyncClient
from p2pindex.core.planning import MAX_ADD, NodeLoad, Plan, PlanRefused, plan_add, plan_remove
from p2pindex.errors import P2PIndexError


def register(subparsers: argparse._SubParsersAction) -> None:
    plan = subparsers.add_parser(
        "plan",
        help="show what adding or removing nodes would move, changing nothing",
        description=(
            "Print the share of the data each node would hold after a change and how many "
            "keys and bytes would move, computed from the current ring and the key and byte "
            "counts the live members report. Nothing is changed."
        ),
    )
    actions = plan.add_subparsers(
        dest="plan_action", metavar="ACTION", required=True, help="add or remove"
    )
    add = actions.add_parser(
        "add",
        help="plan adding COUNT nodes",
        description=(
            "Plan adding COUNT nodes. New nodes' ids are not known yet, so placeholders "
            "stand in (the moved amount is right to about 2%); --new-id names a real one "
            "(from `p2pindex keygen` or a data directory) for an exact plan."
        ),
    )
    add.add_argument("count", type=count_arg, metavar="COUNT", help=f"nodes to add (1..{MAX_ADD})")
    add.add_argument(
        "--new-id",
        action="append",
        default=[],
        metavar="NODE_ID",
        help="the id of a node to add, if known (repeatable)",
    )
    remove = actions.add_parser(
        "remove",
        help="plan removing (draining) one node",
        description="Plan taking NODE_ID (any unique prefix) out of the ring.",
    )
    remove.add_argument("node_id", metavar="NODE_ID", help="id (or unique prefix) of the member")
    for sub in (add, remove):
        add_node_option(sub, what="a node to read the ring from")
        add_format_option(sub)
        sub.set_defaults(func=run_plan)


def count_arg(text: str) -> int:
    """COUNT of `plan add`, checked while parsing: a bad one is a usage error (exit 2)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= count <= MAX_ADD:
        raise argparse.ArgumentTypeError(
            f"the number of nodes to add must be 1..{MAX_ADD}, not {count}"
        )
    return count


async def gather_loads(db: AsyncClient, docs: list[dict[str, Any]]) -> list[NodeLoad]:
    """Ask every live ring member for its key and byte counts (those that fail are skipped:
    the plan estimates the cluster's data from the others)."""
    loads: list[NodeLoad] = []

    async def ask(doc: dict[str, Any]) -> None:
        try:
            status = (await db.status(str(doc["address"]))).document
        except (OSError, P2PIndexError):
            return
        if status.get("state", "active") != "active":
            return  # a SYNCING node holds only part of its ranges yet: it would spoil the estimate
        keys, data = status.get("keys"), status.get("bytes")
        if isinstance(keys, int) and isinstance(data, int):
            # Copies held outside the node's ranges (a fallback's, a former owner's, not
            # dropped yet) are not part of its share: count only what its ranges hold.
            outside = status.get("keys_outside_ranges")
            if isinstance(outside, int) and 0 < outside <= keys:
                data = round(data * (keys - outside) / keys)
                keys -= outside
            loads.append(NodeLoad(str(doc["node_id"]), keys, data))

    async with trio.open_nursery() as nursery:
        for doc in docs:
            # Whether a member is still SYNCING is asked of the member itself: the gossip
            # that tells the others lags, and a node that has just finished its pull is the
            # best estimate there is (it holds its ranges and no stray copies yet), while
            # the former owners still hold copies their reaper has not counted.
            if doc.get("in_ring", True) and doc.get("liveness") == "alive":
                nursery.start_soon(ask, doc)
    return loads


def run_plan(args: argparse.Namespace) -> int:
    async def body(db: AsyncClient) -> int:
        reply = await db.ring_view(nodes_of(args)[0])
        docs = [dataclasses.asdict(m) for m in reply.members]
        ring = [str(m["node_id"]) for m in docs if m.get("in_ring", True)]
        sources = {str(m["node_id"]): str(m["tokens_of"]) for m in docs if m.get("tokens_of")}
        loads = await gather_loads(db, docs)
        try:
            if args.plan_action == "add":
                plan = plan_add(
                    ring,
                    reply.n_replicas,
                    loads,
                    args.count,
                    new_ids=args.new_id,
                    vnodes=reply.vnodes,
                    sources=sources,
                )
            else:
                node_id = resolve_node_id(args.node_id, ring)
                plan = plan_remove(
                    ring, reply.n_replicas, loads, node_id, vnodes=reply.vnodes, sources=sources
                )
        except PlanRefused as refusal:
            raise ValueError(f"plan refused: {refusal}") from None
        if args.format == "json":
            print(json.dumps(plan.doc(), indent=2, sort_keys=True))
        else:
            print(format_plan(plan, reported=len(loads), members=len(ring)))
        return EXIT_OK

    return with_client(args, body)


def format_plan(plan: Plan, *, reported: int, members: int) -> str:
    rows = [
        [
            p.node_id + (" (new)" if p.joining else " (leaving)" if p.leaving else ""),
            f"{p.share_before * 100:.1f}%",
            f"{p.share_after * 100:.1f}%",
            p.keys_after,
            _size(p.bytes_after),
            p.keys_in,
            _size(p.bytes_in),
            p.keys_out,
            _size(p.bytes_out),
        ]
        for p in plan.nodes
    ]
    ratio = plan.moved_bytes / plan.ideal_bytes if plan.ideal_bytes else 1.0
    lines = [
        f"plan: {plan.change} (N={plan.n_replicas}); nothing has been changed",
        f"data: about {plan.distinct_keys} distinct keys, {_size(plan.distinct_bytes)}"
        f" (from {reported} of {members} members' reports)",
        "",
        table(
            [
                "NODE",
                "SHARE NOW",
                "SHARE AFTER",
                "KEYS",
                "BYTES",
                "KEYS IN",
                "BYTES IN",
                "KEYS OUT",
                "BYTES OUT",
            ],
            rows,
            (1, 2, 3, 4, 5, 6, 7, 8),
        ),
        "",
        f"moves {plan.moved_keys} keys, {_size(plan.moved_bytes)} "
        f"({plan.moved_fraction * 100:.1f}% of the copies stored afterwards; "
        f"{ratio:.2f}x the least any placement could move)",
    ]
    return "\n".join(lines)


def _size(value: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"
