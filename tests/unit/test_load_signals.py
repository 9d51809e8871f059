"""Load signals: rates, percentiles and CPU over the recent windows; timing wrappers keep
the channel's batching (puts and deletes that shared a handler still share one)."""

from __future__ import annotations

import pytest

from p2pindex.net.channel import FastPath
from p2pindex.node.load import WINDOW, LoadMeter
from p2pindex.wire.messages import (
    DeleteRequest,
    GetRequest,
    Message,
    OkReply,
    PutRequest,
    ReplicaRead,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_percentiles_cover_the_recent_windows():
    clock, cpu = Clock(), Clock()
    meter = LoadMeter(clock, cpu)
    assert meter.signals()["p99_ms"] is None
    for i in range(1000):
        meter.record(0.001 if i < 980 else 0.050)  # 2% slow requests
    clock.now += 5
    cpu.now += 2.5
    signals = meter.signals()
    assert signals["requests_per_s"] == 200.0
    assert signals["p50_ms"] == pytest.approx(1.0, rel=0.1)
    assert signals["p99_ms"] == pytest.approx(50.0, rel=0.1)
    assert signals["cpu_percent"] == 50.0
    clock.now += 2 * WINDOW  # two quiet windows: old requests age out
    meter.record(0.002)
    clock.now += 1
    signals = meter.signals()
    assert signals["requests"] == 1 and signals["p99_ms"] == pytest.approx(2.0, rel=0.1)


async def test_timed_fast_path_times_client_requests_and_keeps_batches_together():
    clock = Clock()
    meter = LoadMeter(clock, Clock())
    replies: list[tuple[int, Message]] = []

    async def writes(messages: list[Message], respond) -> None:
        clock.now += 0.004
        for position, _ in enumerate(messages):
            respond(position, OkReply())

    def read(message: Message) -> Message:
        return OkReply()

    timed = meter.timed_fast_path(
        FastPath({ReplicaRead: read}, {PutRequest: writes, DeleteRequest: writes})
    )
    assert timed.batch[PutRequest] is timed.batch[DeleteRequest]
    assert timed.answer[ReplicaRead] is read
    assert GetRequest not in timed.batch
    put = PutRequest(b"k", b"v", None, "quorum", 1000)
    await timed.batch[PutRequest]([put, put], lambda p, r: replies.append((p, r)))
    assert [p for p, _ in replies] == [0, 1]
    signals = meter.signals()
    assert signals["requests"] == 2
    assert signals["p99_ms"] == pytest.approx(4.0, rel=0.1)
