"""The HTTP server's own limits, against real loopback sockets in one trio process."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from p2pindex.http.server import HttpLimits, HttpServer, Request, Response, problem
from p2pindex.net.channel import NodeLoad
from p2pindex.node.stats import StatisticsStore

BIG = 8 * 1024 * 1024


class Served:
    def __init__(self, port: int, stats: StatisticsStore, seen: list[Request]) -> None:
        self.port, self.stats, self.seen = port, stats, seen

    async def connect(self, *, receive_buffer: int | None = None) -> trio.SocketStream:
        sock = trio.socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.connect(("127.0.0.1", self.port))
        return trio.SocketStream(sock)

    async def exchange(self, payload: bytes) -> bytes:
        """Send ``payload`` whole, then read everything until the server closes."""
        stream = await self.connect()
        async with stream:
            await stream.send_all(payload)
            return await read_all(stream)


async def read_all(stream: trio.SocketStream) -> bytes:
    chunks = []
    with trio.fail_after(10):
        while data := await stream.receive_some(65536):
            chunks.append(data)
    return b"".join(chunks)


async def answer(request: Request) -> Response:
    if request.target == "/big":
        return Response(200, b"x" * BIG)
    if request.target == "/empty":
        return Response(204)
    if request.target == "/crash":
        raise RuntimeError("a handler bug")
    return Response(200, request.target.encode())


def refuse_unauthenticated(request: Request) -> Response | None:
    if "authorization" not in request.headers:
        return problem(401, "unauthenticated", "this node needs a token")
    return None


@asynccontextmanager
async def served(**limits: float) -> AsyncIterator[Served]:
    stats = StatisticsStore()
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return await answer(request)

    server = HttpServer(
        handler,
        stats,
        HttpLimits(**limits),  # type: ignore[arg-type]
        screen=refuse_unauthenticated,
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield Served(port, stats, seen)
        nursery.cancel_scope.cancel()


def head_and_body(answer: bytes) -> tuple[str, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1").lower(), body


async def test_a_client_that_stops_reading_is_cut_off_and_frees_its_place() -> None:
    async with served(send_timeout=0.5, max_connections=1) as server:
        stuck = await server.connect(receive_buffer=4096)
        await stuck.send_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            while not server.stats.get("http.refused.slow_reader"):
                await trio.sleep(0.05)
        # its place under the cap of one is free again: a new client is served
        answer = await server.exchange(
            b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"/next")
        await stuck.aclose()


async def test_a_body_far_over_the_limit_gets_its_413_not_a_reset() -> None:
    async with served(max_body=1024 * 1024) as server:
        stream = await server.connect()
        body = b"x" * (5 * 1024 * 1024)
        head = b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        async with stream:
            # the client sends it all before reading, as http.client and curl do
            with trio.move_on_after(5):
                await stream.send_all(head + body)
            answer = await read_all(stream)
        head_text, doc = head_and_body(answer)
        assert head_text.startswith("http/1.1 413")
        assert "content-type: application/problem+json" in head_text
        problem_doc = json.loads(doc)
        assert problem_doc["outcome"] == "definite" and problem_doc["type"].endswith(":too_large")
        assert server.seen == []


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        # a head that arrives whole is held to the limit too (h11 bounds only a partial one)
        (b"GET /k HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (b"GET /k HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /k#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /caf\xc3\xa9 raw HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
    ids=["header", "request-line", "http-2", "fragment", "raw-utf8"],
)
async def test_refusals_are_problem_documents_in_words(payload: bytes, status: int) -> None:
    async with served(max_header_bytes=1024) as server:
        answer = await server.exchange(payload)
        head, body = head_and_body(answer)
        assert head.startswith(f"http/1.1 {status}"), head
        assert "content-type: application/problem+json" in head
        doc = json.loads(body)
        assert doc["status"] == status and doc["outcome"] == "definite"
        assert "bytearray" not in doc["detail"] and "\\x" not in doc["detail"]
        assert server.seen == []


async def test_an_absolute_target_is_served_as_its_path() -> None:
    async with served() as server:
        answer = await server.exchange(
            b"GET http://127.0.0.1:1/livez?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200")
        assert [r.target for r in server.seen] == ["/livez?x=1"]


async def test_a_204_carries_neither_length_nor_type() -> None:
    async with served() as server:
        answer = await server.exchange(
            b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        head, body = head_and_body(answer)
        assert head.startswith("http/1.1 204")
        assert "content-length" not in head and "content-type" not in head and body == b""


async def test_expect_continue_is_refused_from_the_head_before_the_body_is_sent() -> None:
    async with served() as server:
        answer = await server.exchange(  # the body is never sent
            b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
        assert b"100 Continue" not in answer
        assert server.seen == []
        # with a token the client is told to go ahead, and its request is served
        stream = await server.connect()
        async with stream:
            await stream.send_all(
                b"PUT /k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            with trio.fail_after(5):
                first = await stream.receive_some(65536)
            assert first.startswith(b"HTTP/1.1 100 Continue")
            await stream.send_all(b"hello")
            answer = first + await read_all(stream)
        assert b"HTTP/1.1 200" in answer
        assert [r.body for r in server.seen] == [b"hello"]


async def test_a_handler_bug_is_a_500_problem_open_for_a_write() -> None:
    async with served() as server:
        answer = await server.exchange(
            b"PUT /crash HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv"
        )
        head, body = head_and_body(answer)
        assert head.startswith("http/1.1 500")
        assert json.loads(body)["outcome"] == "indeterminate"
        assert server.stats.get("http.internal_errors") == 1


def test_a_failed_read_is_definite_whatever_the_error() -> None:
    from p2pindex.errors import Timeout
    from p2pindex.http.problems import problem_for

    timed_out = Timeout(required=2, acknowledged=1)
    assert json.loads(problem_for(timed_out).body)["outcome"] == "indeterminate"
    assert json.loads(problem_for(timed_out, read=True).body)["outcome"] == "definite"


async def test_bodies_count_in_the_node_budget_until_answered_and_past_it_are_refused() -> None:
    """Bodies held by every HTTP connection together stay within the node's in-flight
    budget: one past its ceiling is refused with a 503 as it arrives, and what a request held
    is given back once its answer is sent."""
    load = NodeLoad(100_000)  # ceiling 125,000
    stats = StatisticsStore()
    held_while_served: list[int] = []

    async def handler(request: Request) -> Response:
        held_while_served.append(load.held)
        return Response(200, b"ok")

    server = HttpServer(handler, stats, HttpLimits(max_body=1_000_000), body_budget=load)

    def put(size: int) -> bytes:
        head = f"PUT /k HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n"
        return head.encode() + b"connection: close\r\n\r\n" + b"v" * size

    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        served = Served(port, stats, [])
        answer = await served.exchange(put(60_000))
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert held_while_served == [60_000]
        assert load.held == 0
        load.held = 90_000  # other connections' requests and replies
        refused = await served.exchange(put(60_000))
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1\r\n" in refused.lower()
        assert b"try again shortly" in refused
        assert held_while_served == [60_000]  # the refused body never reached the handler
        assert load.held == 90_000 and load.refused == 1
        assert stats.get("http.refused.overloaded") == 1
        nursery.cancel_scope.cancel()


async def test_an_answer_counts_in_the_node_budget_until_the_client_takes_it() -> None:
    """A client that asks for a large answer and does not read it holds the answer's bytes
    in the node's budget (so the bodies of other requests see what is left) until it is
    sent or the client is cut off."""
    load = NodeLoad(100 * 1024 * 1024)
    stats = StatisticsStore()
    server = HttpServer(answer, stats, HttpLimits(send_timeout=60.0), body_budget=load)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        served = Served(port, stats, [])
        stream = await served.connect(receive_buffer=4096)
        await stream.send_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(10):
            while load.held < BIG:
                await trio.sleep(0.01)
        answer_bytes = await read_all_of(stream, BIG)
        assert answer_bytes.endswith(b"x" * 1000)
        with trio.fail_after(10):
            while load.held:
                await trio.sleep(0.01)
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def read_all_of(stream: trio.SocketStream, body: int) -> bytes:
    """Read until at least ``body`` bytes and a head have come."""
    chunks: list[bytes] = []
    size = 0
    with trio.fail_after(10):
        while size < body + 20:
            data = await stream.receive_some(65536)
            assert data
            chunks.append(data)
            size += len(data)
    return b"".join(chunks)
