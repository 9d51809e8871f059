"""``GET /metrics``: the node's StatisticsStore in the Prometheus text format.

prometheus_client writes the exposition format (escaping, ordering, ``_total`` and
``_bucket`` suffixes); this module only names things. Naming follows Prometheus' rules:
base units (seconds, bytes), counters end in ``_total``, one metric per meaning with
labels for its bounded dimensions (operation, consistency, reason). Every label value comes
from the code (a counter name or an enum), never from a client or a key, so no label is
unbounded. A counter the tables below do not name still appears, as
``p2pindex_events_total{event="..."}``, so nothing counted is ever hidden.

The collector reads the store when scraped and keeps nothing: a scrape costs the node
nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from p2pindex.net.channel import Traffic
from p2pindex.node.stats import Histogram
from p2pindex.types import Liveness, NodeState

if TYPE_CHECKING:
    from p2pindex.node.node import Node

try:
    VERSION = version("p2pindex")
except PackageNotFoundError:  # a source checkout on PYTHONPATH, not installed
    VERSION = "unknown"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

EXACT: dict[str, tuple[str, str, dict[str, str]]] = {
    # counter name -> (metric, help, labels)
    "requests.get": ("p2pindex_requests_succeeded_total", "Client requests that succeeded.",
                     {"operation": "get"}),
    "requests.put": ("p2pindex_requests_succeeded_total", "", {"operation": "put"}),
    "requests.delete": ("p2pindex_requests_succeeded_total", "", {"operation": "delete"}),
    "requests.forwarded": ("p2pindex_requests_relayed_total",
                           "Client requests relayed to a node that holds the key.", {}),
    # Not a cause of p2pindex_quorum_failures_total: those are counted from the errors
    # below, and this one would count every failed write twice.
    "requests.write_indeterminate": ("p2pindex_writes_indeterminate_total",
                                     "Writes whose quorum failed or timed out after they "
                                     "were sent: their outcome is unknown.", {}),
    "repairs.read": ("p2pindex_read_repairs_total", "Read repairs sent to stale replicas.", {}),
    "repairs.failed": ("p2pindex_read_repair_failures_total", "Read repairs that failed.", {}),
    "hints.stored": ("p2pindex_hints_total", "Hinted-handoff events.", {"event": "stored"}),
    "hints.delivered": ("p2pindex_hints_total", "", {"event": "delivered"}),
    "hints.delivery_failures": ("p2pindex_hints_total", "", {"event": "delivery_failed"}),
    "hints.expired": ("p2pindex_hints_total", "", {"event": "expired"}),
    "hints.refused_full": ("p2pindex_hints_total", "", {"event": "refused_full"}),
    "handoff.keys_in": ("p2pindex_handoff_keys_total", "Keys moved by ownership handoff.",
                        {"direction": "in"}),
    "handoff.keys_out": ("p2pindex_handoff_keys_total", "", {"direction": "out"}),
    "antientropy.rounds": ("p2pindex_antientropy_rounds_total", "Anti-entropy rounds.",
                           {"result": "done"}),
    "antientropy.failed_rounds": ("p2pindex_antientropy_rounds_total", "",
                                  {"result": "failed"}),
    "antientropy.pieces_compared": ("p2pindex_antientropy_pieces_compared_total",
                                    "Digest pieces compared with a peer.", {}),
    "antientropy.pieces_differing": ("p2pindex_antientropy_pieces_differing_total",
                                     "Digest pieces that differed from a peer's.", {}),
    "antientropy.keys_pulled": ("p2pindex_antientropy_keys_repaired_total",
                                "Keys anti-entropy repaired.", {"direction": "pulled"}),
    "antientropy.keys_pushed": ("p2pindex_antientropy_keys_repaired_total", "",
                                {"direction": "pushed"}),
    "replica.writes": ("p2pindex_replica_writes_total", "Records applied as a replica.", {}),
    "http.connections": ("p2pindex_http_connections_total", "HTTP connections accepted.", {}),
    "http.evicted": ("p2pindex_http_evicted_total",
                     "HTTP connections closed, while waiting for a request, to admit a new "
                     "one at max_connections.", {}),
    "peer.connects": ("p2pindex_peer_connections_total", "Connections opened to peers.", {}),
    "peer.timeouts": ("p2pindex_peer_timeouts_total", "Peer requests that timed out.", {}),
}  # fmt: skip

PREFIXES: tuple[tuple[str, str, str, str], ...] = (
    # counter-name prefix -> (metric, help, label for the rest of the name)
    ("requests.errors.", "p2pindex_request_errors_total",
     "Client requests that failed, by operation and error.", "operation_error"),
    ("security.", "p2pindex_security_events_total",
     "Security events: handshakes, refusals (denied.*, bearer.*, handshake.refused.*).",
     "event"),
    ("http.refused.", "p2pindex_http_refused_total",
     "HTTP requests refused before reaching the node, by reason.", "reason"),
    ("http.responses.", "p2pindex_http_responses_total", "HTTP responses by status class.",
     "class"),
    ("membership.", "p2pindex_member_transitions_total",
     "Members seen entering a liveness state.", "liveness"),
    ("replica.errors.", "p2pindex_replica_errors_total",
     "Failed requests to replicas, by error.", "error"),
    ("state.", "p2pindex_state_transitions_total", "This node entering a state.", "state"),
    ("rejected.", "p2pindex_rejected_input_total", "Protocol input refused, by reason.",
     "reason"),
)  # fmt: skip

HISTOGRAMS: dict[str, tuple[str, str]] = {
    "replica.apply": ("p2pindex_replica_apply_seconds", "Time to apply replica writes."),
    "storage.commit": ("p2pindex_storage_commit_seconds", "Time of one storage commit."),
    "swim.probe_rtt": (
        "p2pindex_swim_probe_rtt_seconds",
        "Round trip of SWIM probes that were acknowledged (ping to ack, direct or relayed).",
    ),
}

SWIM_COUNTERS: dict[str, tuple[str, str]] = {
    # SWIM core statistic -> (metric, help); the others go to p2pindex_swim_events_total
    "probes": ("p2pindex_swim_probes_total", "SWIM probes this node started."),
    "probe_failures": (
        "p2pindex_swim_probe_failures_total",
        "SWIM probes that got no ack, direct or relayed, in time.",
    ),
    "suspicions": (
        "p2pindex_swim_suspicions_total",
        "Members this node suspected after a failed probe.",
    ),
    "refutations": (
        "p2pindex_swim_refutations_total",
        "Times this node refuted a suspicion or false claim about itself.",
    ),
}

SWIM_GAUGES: dict[str, tuple[str, str]] = {
    # SWIM core statistics that are levels, not counts
    "local_health": (
        "p2pindex_swim_local_health",
        "Lifeguard's local health score (0 is healthy; higher scales timeouts up).",
    ),
    "broadcast_queue": (
        "p2pindex_swim_broadcast_queue",
        "Membership updates waiting to be gossiped.",
    ),
}
SWIM_BYTES: dict[str, tuple[str, str]] = {
    # SWIM core statistic -> (kind, direction) of p2pindex_swim_bytes_total
    "bytes_in": ("datagram", "in"),
    "bytes_out": ("datagram", "out"),
    "push_pull_bytes_in": ("push_pull", "in"),
    "push_pull_bytes_out": ("push_pull", "out"),
}
SWIM_TABLE = frozenset({"members", "live_members"})
"""Member counts the SWIM core reports, exported by state as p2pindex_swim_members."""


def _histogram_buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), float(count))
        for bound, count in histogram.cumulative()
    ]


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        stats = node.stats
        info = GaugeMetricFamily(
            "p2pindex_build_info", "Version of this node (value 1).", labels=["version"]
        )
        info.add_metric([VERSION], 1)
        yield info
        yield from self._counters(stats.counters())
        yield from self._histograms(stats.histograms())
        yield from self._gauges()

    def _counters(self, counters: dict[str, int]) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}

        def family(name: str, help_text: str, labels: list[str]) -> CounterMetricFamily:
            existing = families.get(name)
            if existing is None:
                existing = families[name] = CounterMetricFamily(
                    name.removesuffix("_total"), help_text or name, labels=labels
                )
            return existing

        for counter, value in sorted(counters.items()):
            exact = EXACT.get(counter)
            if exact is not None:
                name, help_text, labels = exact
                family(name, help_text, list(labels)).add_metric(list(labels.values()), value)
                continue
            for prefix, name, help_text, label in PREFIXES:
                if counter.startswith(prefix):
                    rest = counter[len(prefix) :]
                    if label == "operation_error":
                        operation, _, error = rest.partition(".")
                        family(name, help_text, ["operation", "error"]).add_metric(
                            [operation, error], value
                        )
                    else:
                        family(name, help_text, [label]).add_metric([rest], value)
                    break
            else:
                family(
                    "p2pindex_events_total", "Other events the node counts, by name.", ["event"]
                ).add_metric([counter], value)
        # quorum failures by cause, from the errors of coordinated requests
        quorum = families.get("p2pindex_quorum_failures_total") or family(
            "p2pindex_quorum_failures_total", "Quorum failures by cause.", ["cause"]
        )
        causes: dict[str, int] = {}
        for counter, value in counters.items():
            if counter.startswith("requests.errors."):
                error = counter.rsplit(".", 1)[-1]
                if error in ("unavailable", "timeout", "quorum_failed"):
                    causes[error] = causes.get(error, 0) + value
        for cause, value in sorted(causes.items()):
            quorum.add_metric([cause], value)
        yield from families.values()

    def _histograms(self, histograms: dict[str, Histogram]) -> Iterator[Metric]:
        requests = HistogramMetricFamily(
            "p2pindex_request_duration_seconds",
            "Client request latency at the coordinator, by operation and consistency.",
            labels=["operation", "consistency"],
        )
        counts = CounterMetricFamily(
            "p2pindex_requests",
            "Client requests answered (any outcome), by operation and consistency.",
            labels=["operation", "consistency"],
        )
        for name, histogram in sorted(histograms.items()):
            if name.startswith("latency."):
                _, operation, consistency = name.split(".", 2)
                requests.add_metric(
                    [operation, consistency], _histogram_buckets(histogram), histogram.sum
                )
                counts.add_metric([operation, consistency], histogram.count)
            elif name in HISTOGRAMS:
                metric, help_text = HISTOGRAMS[name]
                family = HistogramMetricFamily(metric, help_text)
                family.add_metric([], _histogram_buckets(histogram), histogram.sum)
                yield family
        yield requests
        yield counts

    def _gauges(self) -> Iterator[Metric]:
        node = self._node
        state = GaugeMetricFamily(
            "p2pindex_node_state", "1 for this node's current state.", labels=["state"]
        )
        for value in NodeState:
            state.add_metric([value.value], 1 if node.state is value else 0)
        yield state
        from p2pindex.http.api import readiness  # the same rule /readyz answers with

        yield GaugeMetricFamily(
            "p2pindex_ready", "1 when /readyz would answer 200.", value=0 if readiness(node) else 1
        )
        members = GaugeMetricFamily(
            "p2pindex_members", "Members this node knows, by liveness.", labels=["liveness"]
        )
        by_liveness = {value: 0 for value in Liveness}
        for member in node.members():
            by_liveness[member.liveness] += 1
        for liveness, count in by_liveness.items():
            members.add_metric([liveness.value], count)
        yield members
        yield GaugeMetricFamily(
            "p2pindex_ring_members", "Nodes in this node's ring.", value=len(node.ring.nodes)
        )
        backlog = node.storage.hint_backlog()
        pending = sum(b.count for b in backlog)
        yield GaugeMetricFamily("p2pindex_hints_pending", "Hints held for others.", value=pending)
        yield GaugeMetricFamily(
            "p2pindex_hints_pending_bytes",
            "Bytes of hints held for other nodes.",
            value=sum(b.bytes for b in backlog),
        )
        keys = node.storage.count()
        yield GaugeMetricFamily("p2pindex_keys", "Keys stored on this node.", value=keys)
        yield from _swim(node)
        yield from _connections(node.traffic)


def _swim(node: Node) -> Iterator[Metric]:
    statistics = node.membership_statistics()
    for name, (metric, help_text) in SWIM_COUNTERS.items():
        yield CounterMetricFamily(metric, help_text, value=statistics.get(name, 0))
    for name, (metric, help_text) in SWIM_GAUGES.items():
        yield GaugeMetricFamily(metric, help_text, value=statistics.get(name, 0))
    events = CounterMetricFamily(
        "p2pindex_swim_events", "Other SWIM membership engine events, by name.", labels=["event"]
    )
    traffic = CounterMetricFamily(
        "p2pindex_swim_bytes",
        "Membership bytes: SWIM datagrams (sealed) and push-pull exchanges, each way.",
        labels=["kind", "direction"],
    )
    for name, labels in SWIM_BYTES.items():
        traffic.add_metric(list(labels), statistics.get(name, 0))
    yield traffic
    named = SWIM_COUNTERS.keys() | SWIM_GAUGES.keys() | SWIM_BYTES.keys() | SWIM_TABLE
    for name, value in sorted(statistics.items()):
        if name not in named:
            events.add_metric([name], value)
    yield events
    members = GaugeMetricFamily(
        "p2pindex_swim_members",
        "Other members in this node's SWIM view, by state.",
        labels=["state"],
    )
    by_state = {value: 0 for value in Liveness}
    for member in node.members():
        if member.node_id != node.node_id:
            by_state[member.liveness] += 1
    for liveness, count in by_state.items():
        members.add_metric([liveness.value], count)
    yield members


def _connections(traffic: Traffic) -> Iterator[Metric]:
    """The binary protocol's connections (clients and peers); HTTP counts its own."""
    open_ = GaugeMetricFamily(
        "p2pindex_connections_open",
        "Binary-protocol connections open: in (accepted) or out (opened to peers).",
        labels=["direction"],
    )
    open_.add_metric(["in"], traffic.open_in)
    open_.add_metric(["out"], traffic.open_out)
    yield open_
    opened = CounterMetricFamily(
        "p2pindex_connections_opened",
        "Binary-protocol connections opened: in (accepted) or out (opened to peers).",
        labels=["direction"],
    )
    opened.add_metric(["in"], traffic.opened_in)
    opened.add_metric(["out"], traffic.opened_out)
    yield opened
    yield CounterMetricFamily(
        "p2pindex_frames_received", "Protocol frames received.", value=traffic.frames_received
    )
    yield CounterMetricFamily(
        "p2pindex_frames_sent", "Protocol frames sent.", value=traffic.frames_sent
    )
    yield CounterMetricFamily(
        "p2pindex_received_bytes", "Protocol bytes received.", value=traffic.bytes_received
    )
    yield CounterMetricFamily(
        "p2pindex_sent_bytes", "Protocol bytes sent.", value=traffic.bytes_sent
    )


def metrics_registry(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(namespace="", registry=registry)  # process_cpu_seconds_total and friends
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
