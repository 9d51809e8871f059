"""`p2pindex status | explain | leave | remove | admit`: look at and change cluster membership."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from p2pindex.cli.common import (
    EXIT_OK,
    add_format_option,
    add_node_option,
    argv_bytes,
    display_bytes,
    nodes_of,
    with_client,
)
from p2pindex.client import AsyncClient


def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser(
        "status",
        help="show the members, ownership and statistics of a node",
        description=(
            "Show the cluster as one node sees it: every member with its liveness (SWIM), "
            "state, incarnation and share of the ring, then the node's pending hints and "
            "statistics."
        ),
    )
    add_node_option(status, what="the node to ask")
    add_format_option(status)
    status.set_defaults(func=run_status, reads_only=True)

    explain = subparsers.add_parser(
        "explain",
        help="show where a key lives",
        description=(
            "Show the key's place on the ring: its primary, replicas and the fallbacks "
            "that would stand in for them, with their liveness."
        ),
    )
    explain.add_argument("key", metavar="KEY", help="the key (text, stored as UTF-8)")
    add_node_option(explain)
    add_format_option(explain)
    explain.set_defaults(func=run_explain, reads_only=True)

    leave = subparsers.add_parser(
        "leave",
        help="make a node hand over its data and leave the cluster",
        description=(
            "Ask the node at --node to hand its ranges to their new owners and leave, and "
            "return once the leave has started (exit 0 means started, not done). The node "
            "process exits when it is done. A node that cannot reach one of the new owners "
            "for a minute abandons the leave and serves on; `p2pindex drain --node` follows "
            "a leave to its end, and `p2pindex status --node` shows how it is going or why "
            "it was abandoned."
        ),
    )
    add_node_option(leave, what="the node that should leave")
    add_format_option(leave)
    leave.set_defaults(func=run_leave)

    remove = subparsers.add_parser(
        "remove",
        help="remove a dead member for good",
        description=(
            "Remove a member that will not come back, so its ranges move to other nodes. "
            "NODE_ID may be any unique prefix of the id shown by status."
        ),
    )
    remove.add_argument("node_id", metavar="NODE_ID", help="id (or unique prefix) of the member")
    add_node_option(remove, what="a live node to carry out the removal")
    add_format_option(remove)
    remove.set_defaults(func=run_remove)

    admit = subparsers.add_parser(
        "admit",
        help="let a removed member join again",
        description=(
            "Undo `p2pindex remove`: a removed node is refused when it restarts until it is "
            "admitted again. NODE_ID is the full id the refused node printed."
        ),
    )
    admit.add_argument("node_id", metavar="NODE_ID", help="full id of the removed node")
    add_node_option(admit, what="a live node to carry out the admission")
    add_format_option(admit)
    admit.set_defaults(func=run_admit)


def run_status(args: argparse.Namespace) -> int:
    async def body(db: AsyncClient) -> int:
        status = (await db.status(nodes_of(args)[0])).document
        if args.format == "json":
            print(json.dumps(status, indent=2, sort_keys=True))
        else:
            print(format_status(status))
        return EXIT_OK

    return with_client(args, body)


def run_explain(args: argparse.Namespace) -> int:
    key = argv_bytes(args.key, "KEY")

    async def body(db: AsyncClient) -> int:
        explain = (await db.explain(key)).document
        if args.format == "json":
            print(json.dumps(explain, indent=2, sort_keys=True))
        else:
            print(format_explain(display_bytes(key), explain))
        return EXIT_OK

    return with_client(args, body)


def run_leave(args: argparse.Namespace) -> int:
    node = nodes_of(args)[0]

    async def body(db: AsyncClient) -> int:
        await db.leave(node)
        if args.format == "json":
            print(json.dumps({"ok": True, "node": str(node), "leaving": True}))
        else:
            print(leave_started(str(node)))
        return EXIT_OK

    return with_client(args, body)


def leave_started(node: str) -> str:
    """What `leave` says once the node took the request: the leave has started, not
    finished. It can still be abandoned (a node taking over stays out of reach for a
    minute), so the text says where its end shows."""
    return (
        f"ok: the node at {node} started its leave (not finished yet): it hands its data "
        "over, then leaves the cluster and exits\n"
        "it abandons the leave and serves on if a node taking over stays unreachable for a "
        f"minute: `p2pindex drain --node {node}` follows the leave to its end, "
        f"`p2pindex status --node {node}` shows how it ends"
    )


def run_remove(args: argparse.Namespace) -> int:
    async def body(db: AsyncClient) -> int:
        members = await db.members()
        node_id = resolve_node_id(args.node_id, [m.node_id for m in members])
        await db.remove(node_id)
        if args.format == "json":
            print(json.dumps({"ok": True, "removed": node_id}))
        else:
            print(f"ok: removed {node_id}; its ranges move to the remaining members")
        return EXIT_OK

    return with_client(args, body)


def run_admit(args: argparse.Namespace) -> int:
    async def body(db: AsyncClient) -> int:
        detail = await db.admit(args.node_id)
        if args.format == "json":
            print(json.dumps({"ok": True, "admitted": args.node_id, "detail": detail}))
        else:
            print(f"ok: {detail}")
        return EXIT_OK

    return with_client(args, body)


def resolve_node_id(prefix: str, known: Sequence[str]) -> str:
    """The one member id starting with ``prefix``; a clear error otherwise."""
    wanted = prefix.strip().lower()
    if not wanted:
        raise ValueError("node id must not be empty")
    matches = [node_id for node_id in known if node_id.startswith(wanted)]
    if not matches:
        raise ValueError(f"no member has an id starting with {prefix!r} (see p2pindex status)")
    if len(matches) > 1 and wanted not in matches:
        raise ValueError(f"{prefix!r} matches several members: {', '.join(sorted(matches))}")
    return wanted if wanted in matches else matches[0]


# --- text rendering ---------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A plain aligned table; columns listed in ``right`` are right-aligned (numbers)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i])
            for i in range(len(headers))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_status(status: Mapping[str, Any], now: float | None = None) -> str:
    """The status document as text. ``now`` (wall-clock seconds) is what hint ages are
    measured against: the document's own ``time`` if it carries one, else this clock."""
    lines = [
        f"node {status.get('node_id', '?')} at {status.get('address', '?')}: "
        f"state {status.get('state', '?')}"
        + (f" ({status['state_reason']})" if status.get("state_reason") else ""),
        f"cluster {status.get('cluster', '?')}, N={status.get('n_replicas', '?')}, "
        f"{_count(status.get('keys'), 'key')} stored here",
    ]
    if status.get("version"):
        lines.append(f"version {status['version']}{_disk(status.get('disk'))}")
    lines += [f"warning: {warning}" for warning in status.get("warnings") or []]
    lines.append("")
    members = status.get("members") or []
    rows = [
        [
            m.get("node_id"),
            m.get("address"),
            m.get("liveness"),
            f"{m.get('state')} (last known)" if m.get("state_last_known") else m.get("state"),
            m.get("incarnation"),
            _percent(m.get("ownership")),
        ]
        for m in sorted(members, key=lambda m: str(m.get("address")))
    ]
    lines.append(
        table(["ID", "ADDRESS", "LIVENESS", "STATE", "INCARNATION", "OWNERSHIP"], rows, (4, 5))
    )
    counts: dict[str, int] = {}
    for member in members:
        counts[str(member.get("liveness"))] = counts.get(str(member.get("liveness")), 0) + 1
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    removed = status.get("removed_members")
    lines.append(
        f"{len(members)} members: {summary or 'none'}"
        + (f"; {removed} removed (not listed)" if removed else "")
    )
    handoff = status.get("handoff")
    if handoff:
        lines += ["", format_handoff(handoff, members)]
    lines += format_upkeep(status)
    hints = status.get("hints") or []
    lines.append("")
    if hints:
        own = status.get("time")
        clock = time.time() if now is None else now
        if now is None and isinstance(own, int | float) and not isinstance(own, bool):
            clock = float(own)
        lines.append("hints waiting for delivery:")
        hint_rows = [
            [h.get("target"), h.get("count"), h.get("bytes"), _age(h.get("oldest"), clock)]
            for h in hints
        ]
        lines.append(_indent(table(["FOR NODE", "COUNT", "BYTES", "OLDEST"], hint_rows, (1, 2, 3))))
    else:
        lines.append("hints waiting for delivery: none")
    statistics = status.get("statistics") or {}
    if statistics:
        lines += ["", "statistics:"]
        lines.append(_indent(table(["NAME", "VALUE"], sorted(statistics.items()), (1,))))
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _age(created: Any, now: float) -> str:
    """How long ago the wall-clock time ``created`` was, in the largest whole unit that
    fits ("42s", "3m", "2h", "5d"); "-" when it is not a time. A time slightly ahead of
    ``now`` (clocks of two machines) counts as "0s"."""
    if not _is_number(created):
        return "-"
    seconds = max(0, int(now - created))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _disk(disk: Any) -> str:
    if not isinstance(disk, dict) or not disk:
        return ", nothing on disk (memory storage)" if disk == {} else ""
    return ", disk: " + ", ".join(f"{kind} {_mib(size)}" for kind, size in sorted(disk.items()))


def _mib(size: Any) -> str:
    if not isinstance(size, int):
        return "?"
    return f"{size / (1 << 20):.1f} MiB"


def format_upkeep(status: Mapping[str, Any]) -> list[str]:
    """Load signals (for autoscalers), tombstones and copies outside the node's ranges."""
    lines: list[str] = []
    load = status.get("load")
    if isinstance(load, dict):
        p99 = load.get("p99_ms")
        lines += [
            "",
            f"load over the last {load.get('window_s', '?')}s: "
            f"{load.get('requests_per_s', '?')} requests/s, p99 "
            + (f"{p99} ms" if p99 is not None else "-")
            + f", cpu {load.get('cpu_percent', '?')}%; now {load.get('storage_bytes', '?')} "
            f"bytes stored, {load.get('pending_hints', '?')} hints pending",
        ]
    tombstones = status.get("tombstones")
    if isinstance(tombstones, dict):
        lines.append(
            f"tombstones: {tombstones.get('held', '-')} held, {tombstones.get('reaped', 0)} "
            f"reaped, {tombstones.get('markers', 0)} markers, "
            f"{tombstones.get('stale_dropped', 0)} stale copies dropped; "
            f"{status.get('keys_outside_ranges', '-')} keys held outside this node's ranges"
        )
    if status.get("leaving"):
        lines.append("leaving: handing its ranges over (stops coordinating requests)")
    return lines


def format_handoff(handoff: Mapping[str, Any], members: Sequence[Mapping[str, Any]] = ()) -> str:
    """One line on the ownership handoff that a join or leave started. While the node
    its last error names is down in the status's own member list (``members``), the
    handoff is waiting for that node rather than progressing: the line says so instead
    of an ETA, which would only grow."""
    direction = handoff.get("direction", "?")
    keys = _count(handoff.get("keys"), "key")
    if handoff.get("abandoned"):
        return (
            f"handoff ({direction}): abandoned after {keys} moved, the node stays a member: "
            f"{handoff['abandoned']}"
        )
    if handoff.get("done"):
        line = f"handoff ({direction}): done, {keys} moved in {handoff.get('elapsed_s', '?')}s"
    else:
        line = (
            f"handoff ({direction}): {handoff.get('ranges_done', '?')} of "
            f"{handoff.get('ranges_total', '?')} ranges, {keys} so far"
        )
        if waits_for_a_down_member(handoff, members):
            return f"{line}; {handoff_wait(handoff, members)}"
        if isinstance(handoff.get("eta_s"), int | float):
            line += f", about {handoff['eta_s']:.0f}s left"
    if handoff.get("last_error"):
        line += f"; last error: {handoff['last_error']}"
    return line


def _blamed(handoff: Mapping[str, Any]) -> tuple[str, str]:
    """The node id and the reason in a handoff's last error, which the node records as
    "NODE_ID: reason" for a failed push or pull ("" for the id if it has another form)."""
    error = str(handoff.get("last_error") or "")
    node_id, sep, reason = error.partition(": ")
    if not sep or not node_id or " " in node_id:
        return "", error
    return node_id, reason


def _member(node_id: str, members: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    if node_id:
        for member in members:
            if isinstance(member, Mapping) and member.get("node_id") == node_id:
                return member
    return {}


def waits_for_a_down_member(
    handoff: Mapping[str, Any], members: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a leave's unfinished handoff (direction "out") has a last error naming a
    member that the same status shows as not alive (suspect, dead): a leave's pushes must
    reach the nodes taking its place, so it waits for that one until it is back or the
    leave is abandoned. (A join pulls from another owner instead, so it is not waiting.)"""
    if handoff.get("direction") != "out" or not handoff.get("last_error"):
        return False
    if handoff.get("done") or handoff.get("abandoned"):
        return False
    liveness = _member(_blamed(handoff)[0], members).get("liveness")
    return liveness is not None and liveness != "alive"


def handoff_wait(handoff: Mapping[str, Any], members: Sequence[Mapping[str, Any]] = ()) -> str:
    """What a stuck handoff waits for, from its last error and the member list: "waiting
    for node ID at ADDRESS (dead; connection refused)". A leave (direction "out") gives
    up after a minute of it (the node's LEAVE_PATIENCE), which the text says."""
    node_id, reason = _blamed(handoff)
    member = _member(node_id, members)
    who = f"node {node_id}" if node_id else "a node"
    if member.get("address"):
        who += f" at {member['address']}"
    liveness = member.get("liveness")
    detail = f"{liveness}; {reason}" if liveness and liveness != "alive" else reason
    text = f"waiting for {who} ({detail})" if detail else f"waiting for {who}"
    if handoff.get("direction") == "out":
        text += "; a leave gives up after a minute of this"
    return text


def _count(value: Any, noun: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} {noun}" + ("" if value == 1 else "s")
    return f"? {noun}s"


def format_explain(key: str, explain: Mapping[str, Any]) -> str:
    nodes = explain.get("nodes") or []
    rows = [
        [
            n.get("role"),
            n.get("node_id"),
            n.get("address"),
            n.get("liveness"),
            n.get("state"),
            n.get("usable"),
            n.get("hints_held_here"),
        ]
        for n in nodes
    ]
    header = f"key {key!r} (hex {explain.get('key', '?')}), N={explain.get('n_replicas', '?')}"
    body = table(["ROLE", "NODE", "ADDRESS", "LIVENESS", "STATE", "USABLE", "HINTS"], rows, (6,))
    return f"{header}\n{body}"


def _percent(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value * 100:.1f}%"
    return "-"


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else "" for line in text.splitlines())
