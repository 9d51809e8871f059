"""Legitimate write throughput of a real cluster with and without a flood of hostile traffic.

    python simulations/hostile_load.py [--rate 1000] [--connections 10] [--seconds 10]

Starts a secure local cluster of real `p2pindex serve` processes, measures the puts a second
that legitimate writers get (tasks writing one at a time on one session per node), then does
it again while another process sends ``--rate`` hostile requests a second over
``--connections`` connections spread over the nodes: unknown message types, broken schemas,
forged causal contexts, keys over the limit, invalid CBOR and frames claiming more than the
frame limit inside authenticated sessions (the last two close the session; it reconnects),
garbage instead of a handshake, and handshakes with credentials from a foreign authority.
It prints both throughputs, their ratio (the goal: at least 80%), what the attacker sent and
what the nodes counted.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cbor2
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pindex.cli.local_cluster import LocalCluster, wait_converged  # noqa: E402
from p2pindex.config import Limits  # noqa: E402
from p2pindex.core.versions import MAX_COUNTER, VersionVector, encode_context  # noqa: E402
from p2pindex.errors import P2PIndexError  # noqa: E402
from p2pindex.net.channel import open_channel  # noqa: E402
from p2pindex.security.authority import Authority  # noqa: E402
from p2pindex.security.certs import Role  # noqa: E402
from p2pindex.security.credentials import ClientCredentials, SecureConnector  # noqa: E402
from p2pindex.types import Address  # noqa: E402
from p2pindex.wire.codec import encode_frame  # noqa: E402
from p2pindex.wire.messages import (  # noqa: E402
    PROTOCOL_VERSION,
    PutReply,
    PutRequest,
    StatusReply,
    StatusRequest,
)

FORGED_CONTEXT = encode_context(VersionVector({"forger": MAX_COUNTER}))


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


IN_SESSION = {
    "unknown_type": lambda i: _frame(cbor2.dumps([PROTOCOL_VERSION, 999, i, {}])),
    "broken_schema": lambda i: _frame(
        cbor2.dumps([PROTOCOL_VERSION, PutRequest.TYPE, i, {"key": 5, "value": "x"}])
    ),
    "forged_context": lambda i: encode_frame(
        PutRequest(b"victim", b"evil", FORGED_CONTEXT, "all", 1000), i
    ),
    "key_over_limit": lambda i: encode_frame(PutRequest(b"k" * 1100, b"v", None, "one", 1000), i),
}
CLOSING = {
    "invalid_cbor": _frame(b"\xff\xfe\xfd\x1b"),
    "oversized_frame": struct.pack(">I", 64 * 1024 * 1024) + b"x" * 64,
}
KINDS = [*IN_SESSION, *CLOSING, "garbage_handshake", "foreign_credentials"]


# --- the attacker (a separate process, so its CPU is not the legitimate client's) ------------


async def _attack_one(
    addresses: list[Address],
    admin: SecureConnector,
    foreign: SecureConnector,
    per_second: float,
    until: float,
    rng: random.Random,
    sent: Counter[str],
) -> None:
    stream = None
    request_id = 0
    next_at = trio.current_time()
    async with trio.open_nursery() as nursery:
        while trio.current_time() < until:
            next_at += 1 / per_second
            await trio.sleep_until(next_at)
            kind = rng.choice(KINDS)
            address = rng.choice(addresses)
            try:
                if kind == "garbage_handshake":
                    raw = await trio.open_tcp_stream(address.host, address.port)
                    await raw.send_all(rng.randbytes(200))
                    await trio.aclose_forcefully(raw)
                elif kind == "foreign_credentials":
                    with trio.move_on_after(2):
                        await foreign.connect(address)
                else:
                    if stream is None:
                        stream = await admin.connect(address)
                        nursery.start_soon(_drain, stream)
                    request_id += 1
                    if kind in IN_SESSION:
                        await stream.send_all(IN_SESSION[kind](request_id))
                    else:
                        await stream.send_all(CLOSING[kind])
                        stream = None  # the node closes it; the next one reconnects
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, P2PIndexError):
                stream = None
            sent[kind] += 1
        nursery.cancel_scope.cancel()


async def _drain(stream: trio.abc.Stream) -> None:
    try:
        while await stream.receive_some():
            pass
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, P2PIndexError):
        pass


async def attack(args: argparse.Namespace) -> None:
    addresses = [Address.parse(a) for a in args.attack.split(",")]
    admin = SecureConnector(ClientCredentials.load(args.credentials))
    foreign = SecureConnector(ClientCredentials.load(args.foreign))
    sent: Counter[str] = Counter()
    rng = random.Random(1)
    start = trio.current_time()
    until = start + args.seconds
    async with trio.open_nursery() as nursery:
        for _ in range(args.connections):
            nursery.start_soon(
                _attack_one,
                addresses,
                admin,
                foreign,
                args.rate / args.connections,
                until,
                random.Random(rng.getrandbits(64)),
                sent,
            )
    elapsed = trio.current_time() - start
    print(json.dumps({"sent": dict(sent), "seconds": elapsed}), flush=True)


# --- the legitimate writers and the measurement ------------------------------------------------


async def legit_writes(cluster: LocalCluster, seconds: float, writers: int) -> float:
    assert cluster.credentials is not None
    connector = SecureConnector(ClientCredentials.load(cluster.credentials))
    done = 0
    failed = 0
    async with trio.open_nursery() as nursery:
        channels = [
            await open_channel(nursery, connector, Address.parse(a), Limits())
            for a in cluster.addresses
        ]
        until = trio.current_time() + seconds

        async def writer(index: int) -> None:
            nonlocal done, failed
            channel = channels[index % len(channels)]
            i = 0
            while trio.current_time() < until:
                key = f"legit-{index}-{i % 100}".encode()
                reply = await channel.request(PutRequest(key, b"v" * 100, None, "quorum", 5000))
                if isinstance(reply, PutReply):
                    done += 1
                else:
                    failed += 1
                i += 1

        async with trio.open_nursery() as work:
            for index in range(writers):
                work.start_soon(writer, index)
        for channel in channels:
            await channel.aclose()
    if failed:
        print(f"  legitimate writes refused: {failed}")
    return done / seconds


async def node_counts(cluster: LocalCluster) -> Counter[str]:
    assert cluster.credentials is not None
    connector = SecureConnector(ClientCredentials.load(cluster.credentials))
    total: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        for address in cluster.addresses:
            channel = await open_channel(nursery, connector, Address.parse(address), Limits())
            reply = await channel.request(StatusRequest())
            assert isinstance(reply, StatusReply)
            for name, value in reply.status["statistics"].items():
                if name.startswith(("rejected.", "overloaded.", "channel.", "security.")):
                    total[name] += value
            await channel.aclose()
    return total


def measure(args: argparse.Namespace) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="p2pindex-hostile-") as root,
        LocalCluster(args.nodes, Path(root)) as cluster,
    ):
        cluster.start()
        wait_converged(cluster)
        assert cluster.credentials is not None
        foreign = Path(root) / "foreign.cred"
        Authority.load_or_init(Path(root) / "foreign-authority").credentials(Role.ADMIN).save(
            foreign
        )
        trio.run(legit_writes, cluster, 2.0, args.writers)  # warm up
        baseline = trio.run(legit_writes, cluster, args.seconds, args.writers)
        before = trio.run(node_counts, cluster)
        attacker = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--attack",
                ",".join(cluster.addresses),
                "--credentials",
                str(cluster.credentials),
                "--foreign",
                str(foreign),
                "--rate",
                str(args.rate),
                "--connections",
                str(args.connections),
                "--seconds",
                str(args.seconds + 3),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        attacked = trio.run(legit_writes, cluster, args.seconds, args.writers)
        out, _ = attacker.communicate(timeout=args.seconds + 60)
        report = json.loads(out.strip().splitlines()[-1])
        after = trio.run(node_counts, cluster)
        counted = after - before
        sent = sum(report["sent"].values())
        logs = "".join(node.log_path.read_text(errors="replace") for node in cluster.nodes)
    print(f"legitimate writers           {args.writers} (one request at a time each)")
    print(f"puts/s without attack        {baseline:,.0f}")
    print(
        f"puts/s under attack          {attacked:,.0f} ({attacked / baseline:.0%} of the baseline)"
    )
    print(
        f"hostile requests             {sent:,} in {report['seconds']:.1f} s "
        f"({sent / report['seconds']:,.0f}/s over {args.connections} connections)"
    )
    for kind, count in sorted(report["sent"].items()):
        print(f"  {kind:<26} {count:,}")
    print("counted by the nodes meanwhile")
    for name, count in sorted(counted.items()):
        if count > 0:
            print(f"  {name:<26} {count:,}")
    print(f"tracebacks in node logs      {logs.count('Traceback')}")
    print(f"internal errors in logs      {logs.count('internal')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--writers", type=int, default=12)
    parser.add_argument("--attack", help=argparse.SUPPRESS)
    parser.add_argument("--credentials", help=argparse.SUPPRESS)
    parser.add_argument("--foreign", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attack:
        trio.run(attack, args)
        return 0
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
