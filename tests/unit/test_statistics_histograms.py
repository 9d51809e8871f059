"""StatisticsStore histograms and request metrics: what /metrics and status read."""

from __future__ import annotations

import trio

from p2pindex.net.channel import FastPath
from p2pindex.node.request_metrics import RequestMetrics
from p2pindex.node.stats import LATENCY_BUCKETS, Histogram, StatisticsStore
from p2pindex.wire.messages import ErrorReply, GetRequest, OkReply, PutRequest


def test_an_observation_lands_in_the_first_bucket_at_or_above_it():
    histogram = Histogram()
    histogram.observe(0.0005)  # on a bound: counted at that bound (Prometheus' le)
    histogram.observe(0.003)
    histogram.observe(99.0)  # above every bound: +Inf only
    cumulative = dict(histogram.cumulative())
    assert cumulative[0.0005] == 1
    assert cumulative[0.0025] == 1
    assert cumulative[0.005] == 2
    assert cumulative[LATENCY_BUCKETS[-1]] == 2
    assert cumulative[float("inf")] == 3
    assert histogram.count == 3
    assert abs(histogram.sum - 99.0035) < 1e-9


def test_status_snapshot_shows_each_histogram_count_and_p99():
    stats = StatisticsStore()
    for _ in range(99):
        stats.observe("latency.put.quorum", 0.001)
    stats.observe("latency.put.quorum", 2.0)
    snapshot = stats.snapshot()
    assert snapshot["latency.put.quorum.count"] == 100
    assert snapshot["latency.put.quorum.p99_seconds"] == 0.001


async def test_timed_fast_path_records_latency_and_errors_but_not_relayed_requests():
    stats = StatisticsStore()
    now = [0.0]
    metrics = RequestMetrics(stats, clock=lambda: now[0])

    async def serve(messages, respond):
        now[0] += 0.004
        for position, message in enumerate(messages):
            if message.key == b"bad":
                respond(position, ErrorReply("unavailable", "too few replicas"))
            else:
                respond(position, OkReply())

    shared = serve
    timed = metrics.timed(FastPath({}, {PutRequest: shared, GetRequest: shared}))
    assert timed.batch[PutRequest] is timed.batch[GetRequest]  # still served together
    answers = []
    await timed.batch[PutRequest](
        [
            PutRequest(b"k", b"v", None, "quorum", 0),
            PutRequest(b"bad", b"v", None, "quorum", 0),
            GetRequest(b"k", 2, 0),
            PutRequest(b"k", b"v", None, "quorum", 0, forwarded=True),
        ],
        lambda position, reply: answers.append(position),
    )
    assert answers == [0, 1, 2, 3]
    histograms = stats.histograms()
    assert histograms["latency.put.quorum"].count == 2  # the relayed one is not counted
    assert histograms["latency.get.n"].count == 1
    assert abs(histograms["latency.put.quorum"].sum - 0.008) < 1e-9
    assert stats.get("requests.errors.put.unavailable") == 1
    await trio.lowlevel.checkpoint()
