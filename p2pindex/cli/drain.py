"""`p2pindex drain --node HOST:PORT`: take a live node out of the cluster, watching it go.

The node stops coordinating (it relays requests to the key's other replicas), hands every
range it holds to the nodes that take its place, then announces that it left and exits.
The command follows the handoff's progress and ETA from the node's status until it is gone.
While the handoff stands still on an error (a node taking over is down or refuses), the line
names the node it waits for instead of an ETA, which would only grow: the node abandons the
leave after a minute of that.
A drain that would leave fewer than N nodes is refused by the node, with the reason; one
the node abandons (a node taking over stayed out of reach) ends with that reason and exit
status 1, the node still a serving member.

A node that stops answering has not necessarily left: it may have crashed, been paused
(SIGSTOP) or been cut off. Success is reported only once another member confirms that the
node's state is ``left``; an operator who reads "left the cluster" may wipe the machine.
Without that confirmation the outcome is unknown (exit 5) and the message says how to check.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from p2pindex.cli.admin import handoff_wait
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
from p2pindex.types import Address

POLL = 1.0
"""Seconds between status polls while the handoff reads its ranges."""
FINAL_POLL = 0.05
"""Seconds between polls once every range was read: the node sends its last keys and
leaves within moments, and the status that carries the final key count is short-lived."""
PROBE_TIMEOUT = 3.0
"""How long one question (to the node, or to another member) may take: a paused node
keeps its connections open and never answers."""
CONFIRM_WAIT = 30.0
"""How long to look for a confirmation once the node stopped answering: a node that left
is recorded as left by the others at once, while a crashed one never is."""
STALLED = 2.0
"""Seconds (by the node's handoff clock) the handoff's counts must stand still, with an
error recorded, before the progress line says what it waits for instead of an ETA. A
handoff at work changes its key or range count within moments."""


def register(subparsers: argparse._SubParsersAction) -> None:
    drain = subparsers.add_parser(
        "drain",
        help="hand a node's data over and take it out of the cluster, with progress",
        description=(
            "Drain the node at --node: it stops coordinating requests, hands every range it "
            "holds to the nodes that take its place, then leaves and exits. Progress and an "
            "ETA are printed until it is gone (and shown by `p2pindex status` meanwhile); "
            "while a node taking over is unreachable, the node it waits for instead. "
            "Refused, with the reason, when the others could not keep N copies. Success is "
            "reported only once another member confirms the node left; if the node stops "
            "answering without that, the outcome is unknown (exit 5)."
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


def progress_line(status: Mapping[str, Any], stalled: bool = False) -> str:
    """One progress line. Keys go out in batches of many ranges, so once every range is
    read the last batch may still be on its way: the count is then "so far", not final.
    ``stalled``: the counts have stood still for a while (``Watch.stalled_for``); with an
    error recorded, the handoff is then waiting for the node that error names, and the
    line says so (with the minute after which the node gives the leave up) instead of an
    ETA that only grows."""
    handoff = status.get("handoff") or {}
    node = f"node {status.get('node_id', '?')}"
    if handoff.get("direction") != "out":
        return f"{node}: starting the handoff"
    done, total = handoff.get("ranges_done", 0), handoff.get("ranges_total", 0)
    keys = handoff.get("keys", 0)
    ranges = f"({done} of {total} ranges)"
    if handoff.get("done"):
        return f"{node}: 100.0% {ranges}, {keys} keys handed over, announcing its leave"
    if stalled and handoff.get("last_error"):
        wait = handoff_wait(handoff, _member_docs(status))
        return (
            f"{node}: {handoff.get('percent', 0):.1f}% {ranges}, {keys} keys handed over "
            f"so far; {wait}"
        )
    if total and done >= total:
        return (
            f"{node}: every range read {ranges}, {keys} keys handed over so far, sending the rest"
        )
    line = f"{node}: {handoff.get('percent', 0):.1f}% {ranges}, {keys} keys handed over"
    eta = handoff.get("eta_s")
    if isinstance(eta, int | float):
        line += f", about {eta:.0f}s left"
    return line


@dataclass
class Watch:
    """What the command learnt while following the node: its last status and the members
    it named, who can confirm that it left once it no longer answers."""

    node: Address
    node_id: str
    others: list[Address] = field(default_factory=list)
    last: Mapping[str, Any] = field(default_factory=dict)
    shown: str = ""
    shown_at: float = -POLL
    counts: tuple[Any, ...] = ()
    counts_since: float = 0.0

    def show(self, line: str) -> None:
        """Print a progress line when it says something new, at most once per POLL while
        the handoff reads its ranges (polls are more frequent than that) and every time
        at the end, where each line brings the final figures closer."""
        now = trio.current_time()
        if line == self.shown:
            return
        ending = "every range read" in line or "announcing its leave" in line
        if ending or now - self.shown_at >= POLL:
            print(line, flush=True)
            self.shown, self.shown_at = line, now

    def learn_members(self, members: Iterable[Mapping[str, Any]]) -> None:
        """Add the live members a members list names (not the node itself)."""
        for member in members:
            if member.get("node_id") == self.node_id or member.get("liveness") in ("left", "dead"):
                continue
            try:
                address = Address.parse(str(member.get("address")))
            except ValueError:
                continue
            if address != self.node and address not in self.others:
                self.others.append(address)

    def handoff(self) -> Mapping[str, Any]:
        handoff = self.last.get("handoff")
        return handoff if isinstance(handoff, Mapping) else {}

    def stalled_for(self) -> float:
        """Seconds the last status's handoff counts (keys, ranges, second pass) have
        stood still, as far as this command saw: 0 when they just changed. Measured by
        the handoff's own ``elapsed_s`` (the node's clock, which polls that wait for a
        slow answer do not distort), or this process's clock if it has none."""
        handoff = self.handoff()
        counts = tuple(
            handoff.get(name)
            for name in ("direction", "keys", "ranges_done", "second_pass_keys", "done")
        )
        elapsed = handoff.get("elapsed_s")
        now = (
            float(elapsed)
            if isinstance(elapsed, int | float) and not isinstance(elapsed, bool)
            else trio.current_time()
        )
        if counts != self.counts or now < self.counts_since:  # moved, or a new handoff
            self.counts, self.counts_since = counts, now
        return now - self.counts_since

    def keys_handed_over(self) -> str:
        """The key count for the final line: the node's own figure if its last status said
        the handoff was done. A node that leaves within moments of its last status may
        never be seen done; the count it had then is a lower bound, and its log has the
        final one (the node no longer answers to ask)."""
        handoff = self.handoff()
        keys = handoff.get("keys", 0)
        if handoff.get("done"):
            second = handoff.get("second_pass_keys")
            again = f", {second} of them again after writes during the push" if second else ""
            return f"{keys} keys handed over{again}"
        if keys:
            return f"{keys} keys handed over when last seen; its log has the final count"
        return "its log has the number of keys handed over"


def _member_docs(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The member documents a status carries (none if it has no usable list)."""
    members = status.get("members")
    if not isinstance(members, list):
        return []
    return [member for member in members if isinstance(member, Mapping)]


async def _ask_status(db: AsyncClient, watch: Watch) -> Mapping[str, Any] | None:
    """The node's status, or None when it does not answer (as itself) within the probe time."""
    with trio.move_on_after(PROBE_TIMEOUT):
        try:
            reply = await db.status(watch.node)
        except (OSError, P2PIndexError):
            return None
        if reply.node_id != watch.node_id:
            return None  # another node now answers at this address
        return reply.document
    return None


async def _confirmed_left(db: AsyncClient, watch: Watch) -> bool:
    """Whether another member's members list records the node as ``left``."""
    for address in list(watch.others):
        with trio.move_on_after(PROBE_TIMEOUT):
            try:
                members = await db.members(address)
            except (OSError, P2PIndexError):
                continue
            for member in members:
                if member.node_id == watch.node_id:
                    return member.liveness == "left"
    return False


async def _confirm(db: AsyncClient, watch: Watch) -> str:
    """After the node stopped answering: "left" once a member confirms it, "back" if the
    node answers again, "unknown" when neither happens within CONFIRM_WAIT."""
    with trio.move_on_after(CONFIRM_WAIT):
        while True:
            if await _confirmed_left(db, watch):
                return "left"
            status = await _ask_status(db, watch)
            if status is not None:
                watch.last = status
                return "back"
            await trio.sleep(POLL)
    return "unknown"


async def _follow(db: AsyncClient, watch: Watch, as_json: bool) -> str:
    """Poll the node until it is gone or abandons the drain: "left", "abandoned" or
    "unknown" (it stopped answering and no member confirmed it left)."""
    delay = FINAL_POLL / 2
    while True:
        status = await _ask_status(db, watch)
        if status is None:
            outcome = await _confirm(db, watch)
            if outcome != "back":
                return outcome
            status = watch.last
        watch.last = status
        watch.learn_members(_member_docs(status))
        if watch.handoff().get("abandoned"):
            return "abandoned"
        stalled = watch.stalled_for() >= STALLED
        if not as_json:
            watch.show(progress_line(status, stalled))
        delay = _next_delay(watch, delay)
        await trio.sleep(delay)


def _next_delay(watch: Watch, delay: float) -> float:
    """Poll often at first and at the end, seldom in between. A small node's whole drain
    takes under a second, and a large one's last batch and its leave take moments: the
    status that shows the final key count lives only that long. In between, once a
    second is enough for a progress line."""
    handoff = watch.handoff()
    total = handoff.get("ranges_total")
    if handoff.get("done") or (total and handoff.get("ranges_done", 0) >= total):
        return FINAL_POLL
    return min(POLL, delay * 2)


def _report(args: argparse.Namespace, watch: Watch, outcome: str) -> int:
    """The last line (or document) and the exit status for each way a drain can end."""
    as_json, node_id = args.format == "json", watch.node_id
    if outcome == "left":
        handoff = watch.handoff()
        if as_json:
            doc = {"ok": True, "node_id": node_id, "left": True, "confirmed": True}
            print(
                json.dumps({**doc, "keys": handoff.get("keys"), "final": bool(handoff.get("done"))})
            )
        else:
            print(
                f"ok: node {node_id} handed its data over and left the cluster "
                f"({watch.keys_handed_over()}; confirmed by another member)"
            )
        return EXIT_OK
    if outcome == "abandoned":
        abandoned = watch.handoff().get("abandoned")
        if as_json:
            print(json.dumps({"ok": False, "node_id": node_id, "abandoned": abandoned}))
        else:
            print(
                f"error: node {node_id} abandoned the drain and stays in the "
                f"cluster, serving: {abandoned}",
                file=sys.stderr,
            )
        return EXIT_ERROR
    if outcome == "unknown":
        message = (
            f"contact with node {node_id} at {watch.node} was lost and no other member has "
            "recorded it as left: the drain may still be running, or the node may have "
            f"crashed or been cut off. Do not wipe it yet; check with `p2pindex members` or "
            f"`p2pindex status --node {watch.node}`, whose member list shows it as left once "
            "the drain is done"
        )
        if as_json:
            print(json.dumps({"ok": False, "node_id": node_id, "left": None, "error": message}))
        print(f"error: {message}", file=sys.stderr)
        return EXIT_INDETERMINATE
    if as_json:
        print(json.dumps({"ok": False, "node_id": node_id, "left": False}))
    else:
        print(
            f"node {node_id} is still draining; follow it with "
            f"`p2pindex status --node {watch.node}`"
        )
    return EXIT_INDETERMINATE


def run_drain(args: argparse.Namespace) -> int:
    given = nodes_of(args)
    node = given[0]

    async def body(db: AsyncClient) -> int:
        first = await db.status(node)
        watch = Watch(node, first.node_id, others=[a for a in given[1:] if a != node])
        watch.learn_members(_member_docs(first.document))
        await db.leave(node)
        as_json = args.format == "json"
        if not as_json:
            print(f"draining node {watch.node_id} at {node}", flush=True)
        if args.no_wait:
            if as_json:
                print(json.dumps({"ok": True, "node_id": watch.node_id, "draining": True}))
            return EXIT_OK
        outcome = "timeout"
        with trio.move_on_after(args.timeout):
            outcome = await _follow(db, watch, as_json)
        return _report(args, watch, outcome)

    return with_client(args, body)
