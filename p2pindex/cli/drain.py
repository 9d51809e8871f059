"""`p2pindex drain --node HOST:PORT`: take a live node out of the cluster, watching it go.

The node stops coordinating (it relays requests to the key's other replicas), hands every
range it holds to the nodes that take its place, then announces that it left and exits.
The command follows the handoff's progress and ETA from the node's status until it is gone.
A drain that would leave fewer than N nodes is refused by the node, with the reason; one
the node abandons (a node taking over stayed out of reach) ends with that reason and exit
status 1, the node still a serving member.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

import trio

from p2pindex.cli.common import (
    EXIT_ERROR,
    EXIT_INDETERMINATE,
    EXIT_OK,
    add_format_option,
    add_node_option,
    nodes_of,
    seconds_arg,
    with_client,
)
from p2pindex.client import AsyncClient
from p2pindex.errors import P2PIndexError

POLL = 1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    drain = subparsers.add_parser(
        "drain",
        help="hand a node's data over and take it out of the cluster, with progress",
        description=(
            "Drain the node at --node: it stops coordinating requests, hands every range it "
            "holds to the nodes that take its place, then leaves and exits. Progress and an "
            "ETA are printed until it is gone (and shown by `p2pindex status` meanwhile). "
            "Refused, with the reason, when the others could not keep N copies."
        ),
    )
    add_node_option(drain, what="the node to drain")
    add_format_option(drain)
    drain.add_argument("--no-wait", action="store_true", help="start the drain and return at once")
    drain.add_argument(
        "--timeout",
        type=seconds_arg,
        default=3600.0,
        metavar="S",
        help="give up watching after S seconds (the drain itself goes on; default 3600)",
    )
    drain.set_defaults(func=run_drain)


def progress_line(status: Mapping[str, Any]) -> str:
    handoff = status.get("handoff") or {}
    if handoff.get("direction") != "out":
        return f"node {status.get('node_id', '?')}: starting the handoff"
    line = (
        f"node {status.get('node_id', '?')}: {handoff.get('percent', 0):.1f}% "
        f"({handoff.get('ranges_done', 0)} of {handoff.get('ranges_total', 0)} ranges), "
        f"{handoff.get('keys', 0)} keys handed over"
    )
    eta = handoff.get("eta_s")
    if handoff.get("done"):
        line += ", announcing its leave"
    elif isinstance(eta, int | float):
        line += f", about {eta:.0f}s left"
    return line


def run_drain(args: argparse.Namespace) -> int:
    node = nodes_of(args)[0]

    async def body(db: AsyncClient) -> int:
        node_id = (await db.status(node)).node_id
        await db.leave(node)
        as_json = args.format == "json"
        if not as_json:
            print(f"draining node {node_id} at {node}", flush=True)
        if args.no_wait:
            if as_json:
                print(json.dumps({"ok": True, "node_id": node_id, "draining": True}))
            return EXIT_OK
        with trio.move_on_after(args.timeout):
            while True:
                try:
                    reply = await db.status(node)
                except (OSError, P2PIndexError):
                    break  # the node has left and exited
                status = reply.document
                if status.get("node_id") != node_id:
                    break  # another node now answers at this address
                abandoned = reply.leave_abandoned
                if abandoned:
                    if as_json:
                        print(json.dumps({"ok": False, "node_id": node_id, "abandoned": abandoned}))
                    else:
                        print(
                            f"error: node {node_id} abandoned the drain and stays in the "
                            f"cluster, serving: {abandoned}",
                            file=sys.stderr,
                        )
                    return EXIT_ERROR
                if not as_json:
                    print(progress_line(status), flush=True)
                await trio.sleep(POLL)
            if as_json:
                print(json.dumps({"ok": True, "node_id": node_id, "left": True}))
            else:
                print(f"ok: node {node_id} handed its data over and left the cluster")
            return EXIT_OK
        if as_json:
            print(json.dumps({"ok": False, "node_id": node_id, "left": False}))
        else:
            print(
                f"node {node_id} is still draining; follow it with `p2pindex status --node {node}`"
            )
        return EXIT_INDETERMINATE

    return with_client(args, body)
