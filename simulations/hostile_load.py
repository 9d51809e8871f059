"""Legitimate write throughput of a real cluster with and without a flood of hostile traffic.

    python simulations/hostile_load.py [--rate 1000] [--connections 10] [--seconds 10]
                                       [--rounds 3]

Starts a secure local cluster of real `p2pindex serve` processes, measures the puts a second
that legitimate writers get (tasks writing one at a time on one session per node), then
measures it again while another process sends ``--rate`` hostile requests a second over
``--connections`` connections spread over the nodes: unknown message types, broken schemas,
forged causal contexts, keys over the limit, invalid CBOR and frames claiming more than the
frame limit inside authenticated sessions (the last two close the session; it reconnects,
and once the nodes refuse its key's handshakes for the sessions it broke it keeps trying),
garbage instead of a handshake, and handshakes with credentials from a foreign authority.
The attacker holds credentials of its own (a write role), as a hostile tenant would.
Baselines and attacked runs alternate, ``--rounds`` attacked runs in all, and each attacked
run is compared with the two baselines around it. It prints every run, the ratios (the
goal: at least 80%), what the attacker sent and what the nodes counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pindex.cli.local_cluster import LocalCluster, wait_converged  # noqa: E402
from p2pindex.config import Limits  # noqa: E402
from p2pindex.core.versions import MAX_COUNTER, VersionVector, encode_context  # noqa: E402
from p2pindex.errors import P2PIndexError, PermissionDenied  # noqa: E402
from p2pindex.net.channel import open_channel  # noqa: E402
from p2pindex.net.secure.connector import SecureConnector  # noqa: E402
from p2pindex.security.authority import Authority  # noqa: E402
from p2pindex.security.certs import Role  # noqa: E402
from p2pindex.security.credentials import ClientCredentials  # noqa: E402
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
RAW = ["garbage_handshake", "oversized_handshake", "foreign_hello", "replayed_hello"]
"""Sent on a fresh TCP connection instead of a handshake; the hellos are recorded once
(one from credentials of a foreign authority, one from valid ones replayed), so the attacker
spends no cryptography on them and the node spends what it must."""
KINDS = [*IN_SESSION, *CLOSING, *RAW]


async def record_hello(connector: SecureConnector) -> bytes:
    """The first handshake message ``connector`` sends, captured on a local listener."""
    captured = b""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def capture(stream: trio.SocketStream) -> None:
        nonlocal captured
        while len(captured) < 8 or len(captured) < 8 + struct.unpack(">I", captured[4:8])[0]:
            chunk = await stream.receive_some()
            if not chunk:
                break
            captured += chunk
        await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, capture, listeners)
        with trio.move_on_after(5):
            with contextlib.suppress(OSError, trio.BrokenResourceError, P2PIndexError):
                await connector.connect(Address("127.0.0.1", port))
        nursery.cancel_scope.cancel()
    return captured


# --- the attacker (a separate process, so its CPU is not the legitimate client's) ------------


async def _attack_one(
    addresses: list[Address],
    credentials: SecureConnector,
    hellos: dict[str, bytes],
    per_second: float,
    kinds: list[str],
    until: float,
    rng: random.Random,
    sent: Counter[str],
) -> None:
    stream = None
    request_id = 0
    refused_until: dict[Address, float] = {}
    """When a node refused this key's handshake: until then, the key's recorded hello stands
    in for a new handshake there (the node refuses it as soon as it has checked the
    credential, and a bare socket costs the attacker far less than a handshake's keys)."""
    next_at = trio.current_time()
    async with trio.open_nursery() as nursery:
        while trio.current_time() < until:
            next_at += 1 / per_second
            await trio.sleep_until(next_at)
            kind = rng.choice(kinds)
            address = rng.choice(addresses)
            try:
                if kind in RAW:
                    if kind == "garbage_handshake":
                        data = rng.randbytes(200)
                    elif kind == "oversized_handshake":
                        data = b"P2PS" + struct.pack(">I", 2**31) + rng.randbytes(64)
                    else:
                        data = hellos[kind]
                    await send_raw(nursery, address, data)
                else:
                    if stream is None:
                        if trio.current_time() < refused_until.get(address, -math.inf):
                            await send_raw(nursery, address, hellos["replayed_hello"])
                            sent["refused_handshake"] += 1
                            continue
                        try:
                            stream = await credentials.connect(address)
                        except PermissionDenied:  # its key is refused for broken sessions
                            refused_until[address] = trio.current_time() + 1.0
                            sent["refused_handshake"] += 1
                            continue
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


async def send_raw(nursery: trio.Nursery, address: Address, data: bytes) -> None:
    """Open a TCP connection, send ``data`` instead of a handshake and leave a task reading
    whatever the node answers until it closes. A bare socket, not ``trio.open_tcp_stream``:
    name resolution, happy eyeballs and a stream wrapper cost the attacker more than the
    node spends refusing it, and on a shared machine that CPU comes out of the legitimate
    rate being measured."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((address.host, address.port))
        await sock.send(data)
    except BaseException:
        sock.close()
        raise
    nursery.start_soon(_drain_socket, sock)


async def _drain_socket(sock: trio.socket.SocketType) -> None:
    with sock:
        try:
            with trio.move_on_after(15):
                while await sock.recv(65536):
                    pass
        except OSError:
            pass


async def _drain(stream: trio.abc.Stream) -> None:
    try:
        with trio.move_on_after(15):
            while await stream.receive_some():
                pass
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, P2PIndexError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def attack(args: argparse.Namespace) -> None:
    addresses = [Address.parse(a) for a in args.attack.split(",")]
    own = SecureConnector(ClientCredentials.load(args.credentials))
    foreign = SecureConnector(ClientCredentials.load(args.foreign))
    hellos = {
        "foreign_hello": await record_hello(foreign),
        "replayed_hello": await record_hello(own),
    }
    sent: Counter[str] = Counter()
    rng = random.Random(1)
    start = trio.current_time()
    until = start + args.seconds
    async with trio.open_nursery() as nursery:
        for _ in range(args.connections):
            nursery.start_soon(
                _attack_one,
                addresses,
                own,
                hellos,
                args.rate / args.connections,
                args.kinds.split(",") if args.kinds else KINDS,
                until,
                random.Random(rng.getrandbits(64)),
                sent,
            )
    elapsed = trio.current_time() - start
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    report = {"sent": dict(sent), "seconds": elapsed, "cpu": cpu.ru_utime + cpu.ru_stime}
    print(json.dumps(report), flush=True)


# --- the legitimate writers and the measurement ------------------------------------------------


async def legit_writes(
    cluster: LocalCluster, seconds: float, writers: int, contexts: dict[bytes, bytes]
) -> float:
    """Puts a second of ``writers`` tasks, each writing its own 100 keys in turn with the
    context (kept in ``contexts`` across runs) its last write of the key returned."""
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
                # Each write replaces its key's last value, as an application's would:
                # blind writes would pile up siblings, and the run measured later (the
                # attacked one) would write larger records than the baseline.
                request = PutRequest(key, b"v" * 100, contexts.get(key), "quorum", 5000)
                reply = await channel.request(request)
                if isinstance(reply, PutReply):
                    done += 1
                    contexts[key] = reply.context
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


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user and system) the processes ``pids`` used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


@dataclass(frozen=True)
class Phase:
    """One measured stretch of legitimate writes."""

    puts_per_second: float
    node_cpu: float
    """Mean share of a core each node used."""
    client_cpu: float
    """Share of a core the legitimate writers used."""


def timed_writes(
    cluster: LocalCluster, args: argparse.Namespace, contexts: dict[bytes, bytes]
) -> Phase:
    pids = [node.pid for node in cluster.nodes if node.pid is not None]
    started, client_started = cpu_of(pids), own_cpu()
    rate = trio.run(legit_writes, cluster, args.seconds, args.writers, contexts)
    return Phase(
        rate,
        (cpu_of(pids) - started) / args.seconds / len(pids),
        (own_cpu() - client_started) / args.seconds,
    )


def attacked_writes(
    cluster: LocalCluster,
    args: argparse.Namespace,
    contexts: dict[bytes, bytes],
    hostile: Path,
    foreign: Path,
) -> tuple[Phase, dict[str, Any]]:
    """Legitimate writes while a separate attacker process floods the nodes."""
    attacker = subprocess.Popen(
        [
            *(["nice", "-n", str(args.attacker_nice)] if args.attacker_nice else []),
            sys.executable,
            __file__,
            "--attack",
            ",".join(cluster.addresses),
            "--credentials",
            str(hostile),
            "--foreign",
            str(foreign),
            "--rate",
            str(args.rate),
            "--connections",
            str(args.connections),
            "--seconds",
            str(args.seconds + 3),
            *(["--kinds", args.kinds] if args.kinds else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    phase = timed_writes(cluster, args, contexts)
    out, _ = attacker.communicate(timeout=args.seconds + 60)
    return phase, json.loads(out.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> int:
    """Baselines and attacked runs alternate (B A B A ... B): each attacked run is compared
    with the mean of the baselines just before and after it, so the machine's drift over
    the run (a quarter within minutes on a shared VM) does not land in the ratio."""
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
        assert cluster.authority_dir is not None
        hostile = Path(root) / "hostile.cred"
        Authority.load_or_init(cluster.authority_dir).credentials(Role.WRITE).save(hostile)
        contexts: dict[bytes, bytes] = {}
        trio.run(legit_writes, cluster, 2.0, args.writers, contexts)  # warm up
        baselines = [timed_writes(cluster, args, contexts)]
        attacks: list[Phase] = []
        sent: Counter[str] = Counter()
        attacker_seconds = attacker_cpu = 0.0
        before = trio.run(node_counts, cluster)
        for _round in range(args.rounds):
            phase, report = attacked_writes(cluster, args, contexts, hostile, foreign)
            attacks.append(phase)
            sent.update(report["sent"])
            attacker_seconds += report["seconds"]
            attacker_cpu += report["cpu"]
            baselines.append(timed_writes(cluster, args, contexts))
        counted = trio.run(node_counts, cluster) - before
        logs = "".join(node.log_path.read_text(errors="replace") for node in cluster.nodes)
    ratios = [
        attack.puts_per_second
        / statistics.mean([baselines[i].puts_per_second, baselines[i + 1].puts_per_second])
        for i, attack in enumerate(attacks)
    ]
    total = sum(sent.values())
    print(f"legitimate writers           {args.writers} (one request at a time each)")
    print(f"rounds                       {args.rounds} of {args.seconds:g} s (B A B ... A B)")
    for i, attack in enumerate(attacks):
        print(
            f"  round {i + 1}: puts/s {baselines[i].puts_per_second:,.0f} -> "
            f"{attack.puts_per_second:,.0f} under attack -> "
            f"{baselines[i + 1].puts_per_second:,.0f}; {ratios[i]:.0%} of the baselines around it"
        )
    print(
        f"under attack / baseline      median {statistics.median(ratios):.0%}, "
        f"lowest {min(ratios):.0%}"
    )
    print(
        f"hostile requests             {total:,} in {attacker_seconds:.1f} s "
        f"({total / attacker_seconds:,.0f}/s over {args.connections} connections; "
        f"the attacker used {attacker_cpu / attacker_seconds:.0%} of a core)"
    )
    print(
        f"node CPU                     "
        f"{statistics.mean(b.node_cpu for b in baselines):.0%} of a core per node without "
        f"attack, {statistics.mean(a.node_cpu for a in attacks):.0%} under attack"
    )
    print(
        f"legitimate client CPU        "
        f"{statistics.mean(b.client_cpu for b in baselines):.0%} of a core without attack, "
        f"{statistics.mean(a.client_cpu for a in attacks):.0%} under attack; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for kind, count in sorted(sent.items()):
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
    parser.add_argument("--seconds", type=float, default=10, help="length of each measured run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="attacked runs, each between two baselines (the ratio is against their mean)",
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--writers", type=int, default=12)
    parser.add_argument(
        "--attacker-nice",
        type=int,
        default=0,
        help="run the attacking process at this niceness: on a small shared machine its own "
        "CPU competes with the nodes', which an attacker on another machine would not",
    )
    parser.add_argument("--kinds", help=f"attack only with these (of {', '.join(KINDS)})")
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
