"""How fast this machine is for a trio node: sequential echo round trips over loopback.

The README's benchmark figures depend on the machine far more than on anything else (the node
is pure Python and CPU-bound), and a shared VM can be several times slower one day than the
next. This measures the same thing as the "trio echo, 1 conn" row of
``../shared/research/anchors-perf.md`` so a ``p2pindex bench`` figure can be read against
the speed of the machine it came from: a server process echoes length-prefixed 264-byte
frames on 127.0.0.1, one client sends them one at a time, and the script prints round trips
per second, the median round trip and the server's CPU per round trip.

    python simulations/loopback_echo.py [--round-trips 20000] [--runs 3]

The reference machine of anchors-perf.md made 10,173 round trips/s at a 97 us median, with
62 us of server CPU per round trip.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import subprocess
import sys
import time

import trio

from p2pindex.cli.bench import cpu_seconds

PAYLOAD_BYTES = 264
_HEADER = struct.Struct(">I")
FRAME = _HEADER.pack(PAYLOAD_BYTES) + b"x" * PAYLOAD_BYTES


async def _echo(stream: trio.SocketStream) -> None:
    buffer = b""
    while data := await stream.receive_some(65536):
        buffer += data
        while len(buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + length:
                break
            frame, buffer = buffer[: _HEADER.size + length], buffer[_HEADER.size + length :]
            await stream.send_all(frame)


async def _serve() -> None:
    """Echo until standard input closes: the measuring process holds the other end, so the
    server cannot outlive it, even if it is killed."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(port, flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, _echo, listeners)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


async def _client(port: int, round_trips: int) -> tuple[float, list[float]]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    latencies = []
    started = time.perf_counter()
    for _ in range(round_trips):
        sent = time.perf_counter()
        await stream.send_all(FRAME)
        received = 0
        while received < len(FRAME):
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("the echo server closed the connection")
            received += len(data)
        latencies.append(time.perf_counter() - sent)
    elapsed = time.perf_counter() - started
    await stream.aclose()
    return elapsed, latencies


def measure(round_trips: int) -> tuple[float, float, float]:
    """(round trips/s, median round trip in us, server CPU us per round trip) of one run."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        cpu_before = cpu_seconds([server.pid])
        elapsed, latencies = trio.run(_client, port, round_trips)
        cpu_after = cpu_seconds([server.pid])
    finally:
        server.kill()
        server.wait()
    if cpu_before is None or cpu_after is None:
        raise SystemExit("cannot read the echo server's CPU time from /proc")
    median = statistics.median(latencies)
    return round_trips / elapsed, median * 1e6, (cpu_after - cpu_before) / round_trips * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=20_000, help="per run (default 20000)")
    parser.add_argument("--runs", type=int, default=3, help="runs to make (default 3)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(_serve)
        return 0
    if args.round_trips < 1 or args.runs < 1:
        parser.error("--round-trips and --runs must be at least 1")
    for run in range(1, args.runs + 1):
        rate, median_us, server_cpu_us = measure(args.round_trips)
        print(
            f"run {run}: {rate:,.0f} round trips/s, median {median_us:.0f} us, "
            f"server CPU {server_cpu_us:.0f} us per round trip",
            flush=True,
        )
    print("reference machine (anchors-perf.md): 10,173 round trips/s, median 97 us, 62 us CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
