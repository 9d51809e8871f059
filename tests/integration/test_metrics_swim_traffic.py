"""SWIM and connection figures on /metrics move when the thing they count happens.

Each test scrapes a real node's exposition (the same bytes ``GET /metrics`` answers) on the
simulated network, makes the event happen, and scrapes again.
"""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families

from p2pindex.http.metrics import metrics_registry, render
from p2pindex.node.node import Node
from p2pindex.wire.messages import GetRequest, PutReply, PutRequest
from tests.support.cluster import running_cluster


def scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by (sample name, sorted labels)."""
    text = render(metrics_registry(node)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_probes_fill_the_round_trip_histogram_and_the_probe_counter(autojump_clock):
    async with running_cluster(3) as cluster:
        node = cluster.nodes[0].node
        before = scrape(node)
        await trio.sleep(10)
        after = scrape(node)
        probes = value(after, "p2pindex_swim_probes_total")
        assert probes > value(before, "p2pindex_swim_probes_total")
        rtt_count = value(after, "p2pindex_swim_probe_rtt_seconds_count")
        assert rtt_count > value(before, "p2pindex_swim_probe_rtt_seconds_count")
        assert rtt_count <= probes
        # the simulated network's delays are milliseconds: every round trip is under 0.5 s
        assert value(after, "p2pindex_swim_probe_rtt_seconds_bucket", le="0.5") == rtt_count
        assert 0 < value(after, "p2pindex_swim_probe_rtt_seconds_sum") < rtt_count * 0.5
        assert value(after, "p2pindex_swim_members", state="alive") == 2
        assert value(after, "p2pindex_swim_members", state="dead") == 0
        for direction in ("in", "out"):  # membership bytes have a counter of their own
            sent = value(after, "p2pindex_swim_bytes_total", kind="datagram", direction=direction)
            assert sent > value(
                before, "p2pindex_swim_bytes_total", kind="datagram", direction=direction
            )
        events = {labels for name, labels in after if name == "p2pindex_swim_events_total"}
        assert not [labels for labels in events if "bytes" in dict(labels)["event"]], events


async def test_a_crashed_node_is_suspected_then_counted_dead(autojump_clock):
    async with running_cluster(3) as cluster:
        watchers = [running.node for running in cluster.nodes[1:]]
        before = [value(scrape(node), "p2pindex_swim_suspicions_total") for node in watchers]
        cluster.crash(cluster.nodes[0])
        await trio.sleep(30)
        after = [scrape(node) for node in watchers]
        suspicions = [value(s, "p2pindex_swim_suspicions_total") for s in after]
        assert sum(suspicions) > sum(before)
        for samples in after:
            assert value(samples, "p2pindex_swim_members", state="dead") == 1
            assert value(samples, "p2pindex_swim_members", state="alive") == 1


async def test_a_paused_node_refutes_the_suspicion_when_it_resumes(autojump_clock):
    async with running_cluster(3) as cluster:
        paused = cluster.nodes[0]
        before = value(scrape(paused.node), "p2pindex_swim_refutations_total")
        cluster.network.pause(paused.address.host)
        others = [running.node for running in cluster.nodes[1:]]
        with trio.fail_after(20):
            while not any(
                value(scrape(node), "p2pindex_swim_members", state="suspect") for node in others
            ):
                await trio.sleep(0.1)
        cluster.network.resume(paused.address.host)
        await trio.sleep(5)
        assert value(scrape(paused.node), "p2pindex_swim_refutations_total") > before


async def test_a_request_moves_the_frame_and_byte_counters_and_connections_open(
    autojump_clock,
):
    async with running_cluster(3) as cluster:
        node = cluster.nodes[0].node
        before = scrape(node)
        channel = await cluster.channel(cluster.nodes[0])
        await trio.sleep(0.1)
        opened = scrape(node)
        assert value(opened, "p2pindex_connections_open", direction="in") == (
            value(before, "p2pindex_connections_open", direction="in") + 1
        )
        assert value(opened, "p2pindex_connections_opened_total", direction="in") == (
            value(before, "p2pindex_connections_opened_total", direction="in") + 1
        )
        quiet = scrape(node)
        value_bytes = b"x" * 5000
        reply = await channel.request(PutRequest(b"k", value_bytes, None, "all", 0))
        assert isinstance(reply, PutReply)
        await channel.request(GetRequest(b"k", "one", 0))
        after = scrape(node)
        # N=3 on three nodes: the node coordinated the write and connected to both others
        assert value(after, "p2pindex_connections_open", direction="out") == 2
        assert value(after, "p2pindex_connections_opened_total", direction="out") == 2
        received = value(after, "p2pindex_received_bytes_total") - value(
            quiet, "p2pindex_received_bytes_total"
        )
        sent = value(after, "p2pindex_sent_bytes_total") - value(quiet, "p2pindex_sent_bytes_total")
        # the value came in from the client, went out to two replicas and back to the
        # client with the read
        assert received >= len(value_bytes)
        assert sent >= 3 * len(value_bytes)
        assert value(after, "p2pindex_frames_received_total") >= (
            value(quiet, "p2pindex_frames_received_total") + 2
        )
        assert value(after, "p2pindex_frames_sent_total") >= (
            value(quiet, "p2pindex_frames_sent_total") + 2
        )
        await channel.aclose()
        await trio.sleep(0.1)
        closed = scrape(node)
        assert value(closed, "p2pindex_connections_open", direction="in") == value(
            before, "p2pindex_connections_open", direction="in"
        )


async def test_a_write_that_times_out_is_one_quorum_failure_and_one_unknown_outcome(
    autojump_clock,
):
    """Found by a helper: one failed write moved p2pindex_quorum_failures_total twice,
    under cause="write_indeterminate" and cause="timeout", so the alert on its rate saw
    double."""
    async with running_cluster(3) as cluster:
        node = cluster.nodes[0].node
        cluster.crash(cluster.nodes[2])
        before = scrape(node)
        reply = await cluster.request(cluster.nodes[0], PutRequest(b"k", b"v", None, "all", 500))
        assert not isinstance(reply, PutReply), reply
        after = scrape(node)
        failures = {
            labels: count
            for (name, labels), count in after.items()
            if name == "p2pindex_quorum_failures_total" and count != before.get((name, labels), 0.0)
        }
        assert len(failures) == 1 and sum(failures.values()) == 1, failures
        unknown = value(after, "p2pindex_writes_indeterminate_total")
        assert unknown == 1 + before.get(("p2pindex_writes_indeterminate_total", ()), 0.0)
