"""What refusing each kind of hostile traffic costs a real node, in CPU microseconds apiece.

    python simulations/hostile_cost.py [--kinds a,b] [--rate 500] [--seconds 4] [--profile DIR]
                                       [--floor]

Starts one secure `p2pindex serve` process and sends it each kind of hostile traffic of
``simulations/hostile_load.py`` in turn (one kind at a time, ``--rate`` a second over 10
connections), reading the node's CPU time from /proc before and after: the figure is the
node's CPU per hostile request, idle work included (a quiet node uses a little), and the
sender's own CPU per request (what the attacking process of ``hostile_load.py`` pays). Where
``hostile_load.py`` says whether legitimate clients keep their throughput, this says which
kind of bad input is worth making cheaper. With ``--profile DIR`` each kind is also sampled
with py-spy (``pip install py-spy``) into ``DIR/<kind>.txt`` (raw collapsed stacks).

With ``--floor`` it also sends garbage to a bare trio TCP server in a process of its own (it
reads what arrives once and closes the connection): what the runtime alone spends on a
connection, the floor under any refusal the node makes at that layer.

Each kind is sent with a write credential of its own (a hostile tenant). The two kinds that
break their session make the node refuse the key's handshakes after five (the default
``admission.broken_sessions``): their figure is mostly what that refusal costs, as it is
for an attacker.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "simulations"))

from hostile_load import (  # noqa: E402
    CLOSING,
    IN_SESSION,
    KINDS,
    RAW,
    _drain,
    cpu_of,
    own_cpu,
    record_hello,
    send_raw,
)

from p2pindex.cli.local_cluster import LocalCluster  # noqa: E402
from p2pindex.errors import P2PIndexError  # noqa: E402
from p2pindex.net.secure.connector import SecureConnector  # noqa: E402
from p2pindex.security.authority import Authority  # noqa: E402
from p2pindex.security.certs import Role  # noqa: E402
from p2pindex.security.credentials import ClientCredentials  # noqa: E402
from p2pindex.types import Address  # noqa: E402

CONNECTIONS = 10


def _raw(kind: str, rng: random.Random, hellos: dict[str, bytes]) -> bytes:
    if kind == "garbage_handshake":
        return rng.randbytes(200)
    if kind == "oversized_handshake":
        return b"P2PS" + struct.pack(">I", 2**31) + rng.randbytes(64)
    return hellos[kind]


async def _one_connection(
    address: Address,
    client: SecureConnector | None,
    hellos: dict[str, bytes],
    kind: str,
    per_second: float,
    seconds: float,
    seed: int,
) -> int:
    rng = random.Random(seed)
    stream: trio.abc.Stream | None = None
    sent = 0
    next_at = trio.current_time()
    until = next_at + seconds
    async with trio.open_nursery() as nursery:
        while trio.current_time() < until:
            next_at += 1 / per_second
            await trio.sleep_until(next_at)
            try:
                if kind in RAW:
                    await send_raw(nursery, address, _raw(kind, rng, hellos))
                else:
                    if stream is None:
                        assert client is not None
                        stream = await client.connect(address)
                        nursery.start_soon(_drain, stream)
                    if kind in IN_SESSION:
                        await stream.send_all(IN_SESSION[kind](sent + 1))
                    else:
                        await stream.send_all(CLOSING[kind])
                        stream = None  # the node closes it; the next request reconnects
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, P2PIndexError):
                stream = None
            sent += 1
        nursery.cancel_scope.cancel()
    return sent


async def send_kind(
    address: Address,
    client: SecureConnector | None,
    hellos: dict[str, bytes],
    kind: str,
    rate: float,
    seconds: float,
) -> int:
    counts: list[int] = []

    async def one(seed: int) -> None:
        per_second = rate / CONNECTIONS
        counts.append(
            await _one_connection(address, client, hellos, kind, per_second, seconds, seed)
        )

    async with trio.open_nursery() as nursery:
        for seed in range(CONNECTIONS):
            nursery.start_soon(one, seed)
    return sum(counts)


async def _serve_floor(port: int) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        with contextlib.suppress(OSError, trio.BrokenResourceError):
            await stream.receive_some(4096)
        await trio.aclose_forcefully(stream)

    await trio.serve_tcp(handler, port, host="127.0.0.1")


def cost_row(name: str, pid: int, send: Callable[[], int]) -> str:
    """The table row of ``send()`` (which returns how many it sent): CPU of process ``pid``
    and of this sender per request."""
    before, sender_before = cpu_of([pid]), own_cpu()
    sent = send()
    time.sleep(0.5)  # the last connections are refused and closed
    used = cpu_of([pid]) - before
    sender = (own_cpu() - sender_before) / max(1, sent) * 1e6
    each = used / max(1, sent) * 1e6
    return f"{name:<22} {sent:>7,} {used:>11.2f} {each:>8,.0f} {sender:>10,.0f}"


def measure_floor(rate: float, seconds: float) -> str:
    """The row of a bare trio server receiving ``garbage_handshake`` connections."""
    with socket.socket() as probe:  # a free port for the server to bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve-floor", str(port)])
    try:
        address = Address("127.0.0.1", port)
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        return cost_row(
            "bare trio (floor)",
            server.pid,
            functools.partial(
                trio.run, send_kind, address, None, {}, "garbage_handshake", rate, seconds
            ),
        )
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", help=f"only these (of {', '.join(KINDS)})")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--profile", type=Path, metavar="DIR")
    parser.add_argument(
        "--floor", action="store_true", help="also measure a bare trio server (the floor)"
    )
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        trio.run(_serve_floor, args.serve_floor)
        return 0
    kinds = args.kinds.split(",") if args.kinds else KINDS
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    py_spy = shutil.which("py-spy") if args.profile else None
    if args.profile and py_spy is None:
        parser.error("--profile needs py-spy on PATH (pip install py-spy)")
    with (
        tempfile.TemporaryDirectory(prefix="p2pindex-hostile-cost-") as root,
        LocalCluster(1, Path(root)) as cluster,
    ):
        cluster.start()
        assert cluster.credentials is not None
        admin = SecureConnector(ClientCredentials.load(cluster.credentials))
        foreign_file = Path(root) / "foreign.cred"
        foreign_authority = Authority.load_or_init(Path(root) / "foreign-authority")
        foreign_authority.credentials(Role.ADMIN).save(foreign_file)
        foreign = SecureConnector(ClientCredentials.load(foreign_file))
        hellos = {
            "foreign_hello": trio.run(record_hello, foreign),
            "replayed_hello": trio.run(record_hello, admin),
        }
        assert cluster.authority_dir is not None
        authority = Authority.load_or_init(cluster.authority_dir)
        node = cluster.nodes[0]
        assert node.pid is not None
        print(f"{'kind':<22} {'sent':>7} {'node CPU s':>11} {'µs each':>8} {'sender µs':>10}")
        for kind in kinds:
            spy = None
            if py_spy is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                command = [py_spy, "record", "--pid", str(node.pid), "--format", "raw"]
                command += ["--rate", "200", "--output", str(args.profile / f"{kind}.txt")]
                spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(1)
            tenant = SecureConnector(authority.credentials(Role.WRITE))
            row = cost_row(
                kind,
                node.pid,
                functools.partial(
                    trio.run, send_kind, node.address, tenant, hellos, kind, args.rate, args.seconds
                ),
            )
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            print(row, flush=True)
        log = node.log_path.read_text(errors="replace")
    if args.floor:
        print(measure_floor(args.rate, args.seconds), flush=True)
    print(json.dumps({"node_log_lines": log.count("\n"), "tracebacks": log.count("Traceback")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
