"""`p2pindex demo`: a narrated tour of a real 3-node cluster on this machine.

It shows what the design promises, with real processes: security on without any setup
(a cluster authority certifies the nodes, the demo's client holds an admin capability and a
client without one is refused), every consistency level, a node killed with SIGKILL
(QUORUM keeps working, ALL refuses with Unavailable and writes nothing), siblings from
concurrent writes and their resolution with a context.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path

from p2pindex.cli.admin import format_status
from p2pindex.cli.common import EXIT_OK
from p2pindex.cli.local_cluster import (
    LocalCluster,
    credentials_in_environment,
    stop_signals_interrupt,
    wait_converged,
)
from p2pindex.client import Client
from p2pindex.errors import P2PIndexError, PermissionDenied, Unavailable
from p2pindex.types import ConsistencyLevel

NODES = 3
DEATH_TIMEOUT = 20.0
"""Longest wait for the survivors to declare the killed node dead."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a narrated tour of a local 3-node cluster",
        description=(
            "Start 3 secure nodes in a temporary directory (their own cluster authority, an "
            "admin capability for the demo's client); write and read at ONE, QUORUM and ALL; "
            "kill one node with SIGKILL and show QUORUM still working while ALL is "
            "unavailable; make siblings with two concurrent writes and resolve them; print "
            "the status; stop everything."
        ),
    )
    parser.set_defaults(func=run)


def say(text: str = "") -> None:
    print(text, flush=True)


def show(value: bytes | None) -> str:
    return "(nothing)" if value is None else repr(value.decode("utf-8", errors="replace"))


def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="p2pindex-demo-"))
    try:
        with stop_signals_interrupt(), LocalCluster(NODES, root, http=True) as cluster:
            say(f"p2pindex demo: {NODES} nodes on 127.0.0.1, N=3 replicas of every key")
            say(f"(data and logs in {root})")
            say()
            say("1. Starting the nodes")
            cluster.start()
            wait_converged(cluster)
            for node in cluster.nodes:
                say(f"   node {node.index + 1}  {node.address}  id {node.node_id}  pid {node.pid}")
                say(f"          HTTP API {node.http_url}, dashboard {cluster.dashboard_url(node)}")
            say("   every node sees the other two alive (SWIM gossip)")
            _security(cluster)
            with Client(cluster.addresses, timeout=3.0, credentials=cluster.credentials) as db:
                _levels(db)
                _crash(cluster, db)
                _siblings(db)
                say()
                say("5. Status as node 1 sees it")
                say(_indent(format_status(db.status(cluster.addresses[0]).document)))
            say()
            say("6. Stopping every node (SIGTERM, by pid)")
        say("done")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return EXIT_OK


def _security(cluster: LocalCluster) -> None:
    say("   security is on: a cluster authority made for this demo certified each node;")
    say("   nodes sign every SWIM datagram and encrypt every connection")
    say(f"   the demo's client holds an admin capability: {cluster.credentials}")
    try:
        with credentials_in_environment(None):
            Client(cluster.addresses, timeout=3.0).close()
    except PermissionDenied as exc:
        say(f"   a client without credentials is refused: PermissionDenied: {exc}")
    else:
        say("   a client without credentials was let in: this cluster is NOT secure")


def _levels(db: Client) -> None:
    say()
    say("2. Writes and reads at each consistency level (N=3)")
    for level, value in (
        (ConsistencyLevel.ONE, "blue"),
        (ConsistencyLevel.QUORUM, "green"),
        (ConsistencyLevel.ALL, "red"),
    ):
        key = f"colour-{level.value}"
        needed = level.required(3)
        db.put(key, value, consistency=level)
        got = db.get(key, consistency=level)
        say(
            f"   {level.name:<6} put {key}={value!r} then get -> {show(got.value)}"
            f"   (each waited for {needed} of 3 replicas)"
        )


def _crash(cluster: LocalCluster, db: Client) -> None:
    victim = cluster.nodes[-1]
    say()
    say(f"3. Node {victim.index + 1} crashes: kill -9 {victim.pid}")
    cluster.kill(victim.index, signal.SIGKILL)
    db.put("city", "paris", consistency=ConsistencyLevel.QUORUM)
    got = db.get("city", consistency=ConsistencyLevel.QUORUM)
    say(f"   QUORUM put city='paris' then get -> {show(got.value)}   (2 of 3 is enough)")
    say("   waiting for the survivors to declare it dead (SWIM: suspect, then dead) ...")
    dead, waited = _wait_dead(cluster, db, victim.node_id)
    if dead:
        say(f"   declared dead after {waited:.1f}s")
    else:
        say(f"   still not declared dead after {waited:.0f}s; going on anyway")
    try:
        db.put("city", "rome", context=got.context, consistency=ConsistencyLevel.ALL)
    except Unavailable as exc:
        say(f"   ALL    put city='rome' -> Unavailable: {exc}")
        say("          refused before anything was written, so this error is definite")
    except P2PIndexError as exc:
        say(f"   ALL    put city='rome' -> {type(exc).__name__}: {exc}")
    else:
        say("   ALL    put city='rome' -> accepted (a fallback node stood in)")
    after = db.get("city", consistency=ConsistencyLevel.QUORUM)
    say(f"   QUORUM get city -> {show(after.value)}")


def _wait_dead(cluster: LocalCluster, db: Client, node_id: str) -> tuple[bool, float]:
    """Poll the survivors until all of them call ``node_id`` dead (or the wait runs out)."""
    started = time.monotonic()
    survivors = [node.address for node in cluster.nodes if node.running]
    while time.monotonic() - started < DEATH_TIMEOUT:
        views = []
        for address in survivors:
            try:
                members = db.members(address)
            except P2PIndexError:
                continue
            views.append(any(m.node_id == node_id and m.liveness == "dead" for m in members))
        if views and all(views):
            return True, time.monotonic() - started
        time.sleep(0.2)
    return False, time.monotonic() - started


def _siblings(db: Client) -> None:
    say()
    say("4. Two clients write the same key at once, neither having read it first")
    db.put("cart", "apples")
    db.put("cart", "pears")
    got = db.get("cart")
    values = ", ".join(show(v) for v in got.values)
    say("   put cart='apples'; put cart='pears'  (no context)")
    say(f"   get cart -> {len(got.values)} siblings: {values}")
    say("   neither write saw the other, so both are kept (vector clocks, no silent loss)")
    merged = " + ".join(sorted(v.decode("utf-8", errors="replace") for v in got.values))
    db.put("cart", merged, context=got.context)
    resolved = db.get("cart")
    say(f"   put cart={merged!r} with the context of that get")
    say(f"   get cart -> {len(resolved.values)} value: {show(resolved.value)}   (resolved)")


def _indent(text: str) -> str:
    return "\n".join("   " + line if line else "" for line in text.splitlines())
