"""``GET /metrics``: the node's StatisticsStore in the Prometheus text format.

prometheus_client writes the exposition format (escaping, ordering, ``_total`` and
``_bucket`` suffixes); this module only names things. Naming follows Prometheus' rules:
base units (seconds, bytes), counters end in ``_total``, one metric per meaning with
labels for its bounded dimensions (operation, consistency, reason). Every label value comes
from the code (a counter name or an enum) or, for ``p2pindex_member_dead``, from the
cluster's membership, never from a client or a key, so no label is unbounded. A counter the
tables below do not name still appears, as ``p2pindex_events_total{event="..."}``, so
nothing counted is ever hidden.

Each family's HELP is written once, in ``FAMILIES``, not with each counter that feeds it:
a family fed by several counters then says the same thing whichever was counted first.
Label values known before anything happens (``KNOWN``: operations, consistency levels,
quorum causes, refusal reasons, states) are exported at zero from the first scrape: a
series that only appears with its first event has no earlier sample, so ``rate()`` and
``increase()`` would miss the first burst after every restart.

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

from p2pindex import errors
from p2pindex.net.channel import Traffic
from p2pindex.node.request_metrics import LEVELS, OPERATIONS, QUERY_OPERATIONS
from p2pindex.node.stats import Histogram
from p2pindex.types import Liveness, NodeState

if TYPE_CHECKING:
    from p2pindex.node.node import Node

try:
    VERSION = version("p2pindex")
except PackageNotFoundError:  # a source checkout on PYTHONPATH, not installed
    VERSION = "unknown"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    # counter metric -> (help, label names)
    "p2pindex_requests_succeeded_total": (
        "Client requests that succeeded, by operation.", ("operation",)),
    "p2pindex_requests_relayed_total": (
        "Client requests relayed to a node that holds the key.", ()),
    "p2pindex_writes_indeterminate_total": (
        "Writes whose quorum failed or timed out after they were sent: their outcome is "
        "unknown.", ()),
    "p2pindex_read_repairs_total": ("Read repairs sent to stale replicas.", ()),
    "p2pindex_read_repair_failures_total": ("Read repairs that failed.", ()),
    "p2pindex_hints_total": (
        "Hinted-handoff events: hints stored, delivered, delivery_failed, expired, and "
        "refused_full (the target's hint store was full, so the write kept no hint).",
        ("event",)),
    "p2pindex_handoff_keys_total": (
        "Keys moved by ownership handoff, in to or out of this node.", ("direction",)),
    "p2pindex_antientropy_rounds_total": (
        "Anti-entropy rounds, by result (done or failed).", ("result",)),
    "p2pindex_antientropy_pieces_compared_total": (
        "Digest pieces compared with a peer.", ()),
    "p2pindex_antientropy_pieces_differing_total": (
        "Digest pieces that differed from a peer's.", ()),
    "p2pindex_antientropy_keys_repaired_total": (
        "Keys anti-entropy repaired, pulled from or pushed to a peer.", ("direction",)),
    "p2pindex_replica_writes_total": ("Records applied as a replica.", ()),
    "p2pindex_http_connections_total": ("HTTP connections accepted.", ()),
    "p2pindex_http_evicted_total": (
        "HTTP connections closed, while waiting for a request, to admit a new one at "
        "max_connections.", ()),
    "p2pindex_peer_connections_total": ("Connections opened to peers.", ()),
    "p2pindex_peer_timeouts_total": ("Peer requests that timed out.", ()),
    "p2pindex_request_errors_total": (
        "Client requests that failed, by operation and error.", ("operation", "error")),
    "p2pindex_quorum_failures_total": (
        "Client requests that failed for lack of a quorum, by cause: unavailable (definite), "
        "timeout or quorum_failed (indeterminate); each failed request once.", ("cause",)),
    "p2pindex_security_events_total": (
        "Security events: handshakes, refusals (denied.*, bearer.*, handshake.refused.*).",
        ("event",)),
    "p2pindex_http_refused_total": (
        "HTTP requests refused before reaching the node, by reason.", ("reason",)),
    "p2pindex_http_responses_total": ("HTTP responses by status class.", ("class",)),
    "p2pindex_http_batch_items_total": (
        "Items of HTTP batches (POST /v1/batch) by the status class of their result.",
        ("class",)),
    "p2pindex_member_transitions_total": (
        "Members seen entering a liveness state (or removed).", ("liveness",)),
    "p2pindex_replica_errors_total": ("Failed requests to replicas, by error.", ("error",)),
    "p2pindex_state_transitions_total": ("This node entering a state.", ("state",)),
    "p2pindex_rejected_input_total": ("Protocol input refused, by reason.", ("reason",)),
    "p2pindex_events_total": ("Other events the node counts, by name.", ("event",)),
}  # fmt: skip
"""Every counter family built from the StatisticsStore's counters, with its one HELP."""

EXACT: dict[str, tuple[str, tuple[str, ...]]] = {
    # counter name -> (metric, label values in the order FAMILIES names the labels)
    "requests.get": ("p2pindex_requests_succeeded_total", ("get",)),
    "requests.put": ("p2pindex_requests_succeeded_total", ("put",)),
    "requests.delete": ("p2pindex_requests_succeeded_total", ("delete",)),
    "requests.forwarded": ("p2pindex_requests_relayed_total", ()),
    # Not a cause of p2pindex_quorum_failures_total: those are counted from the errors
    # below, and this one would count every failed write twice.
    "requests.write_indeterminate": ("p2pindex_writes_indeterminate_total", ()),
    "repairs.read": ("p2pindex_read_repairs_total", ()),
    "repairs.failed": ("p2pindex_read_repair_failures_total", ()),
    "hints.stored": ("p2pindex_hints_total", ("stored",)),
    "hints.delivered": ("p2pindex_hints_total", ("delivered",)),
    "hints.delivery_failures": ("p2pindex_hints_total", ("delivery_failed",)),
    "hints.expired": ("p2pindex_hints_total", ("expired",)),
    "hints.refused_full": ("p2pindex_hints_total", ("refused_full",)),
    "handoff.keys_in": ("p2pindex_handoff_keys_total", ("in",)),
    "handoff.keys_out": ("p2pindex_handoff_keys_total", ("out",)),
    "antientropy.rounds": ("p2pindex_antientropy_rounds_total", ("done",)),
    "antientropy.failed_rounds": ("p2pindex_antientropy_rounds_total", ("failed",)),
    "antientropy.pieces_compared": ("p2pindex_antientropy_pieces_compared_total", ()),
    "antientropy.pieces_differing": ("p2pindex_antientropy_pieces_differing_total", ()),
    "antientropy.keys_pulled": ("p2pindex_antientropy_keys_repaired_total", ("pulled",)),
    "antientropy.keys_pushed": ("p2pindex_antientropy_keys_repaired_total", ("pushed",)),
    "replica.writes": ("p2pindex_replica_writes_total", ()),
    "http.connections": ("p2pindex_http_connections_total", ()),
    "http.evicted": ("p2pindex_http_evicted_total", ()),
    "peer.connects": ("p2pindex_peer_connections_total", ()),
    "peer.timeouts": ("p2pindex_peer_timeouts_total", ()),
}  # fmt: skip

PREFIXES: dict[str, str] = {
    # counter-name prefix -> metric; the rest of the name is the label's value (for two
    # labels, split at its first dot: requests.errors.OPERATION.ERROR)
    "requests.errors.": "p2pindex_request_errors_total",
    "security.": "p2pindex_security_events_total",
    "http.refused.": "p2pindex_http_refused_total",
    "http.responses.": "p2pindex_http_responses_total",
    "http.batch_items.": "p2pindex_http_batch_items_total",
    "membership.": "p2pindex_member_transitions_total",
    "replica.errors.": "p2pindex_replica_errors_total",
    "state.": "p2pindex_state_transitions_total",
    "rejected.": "p2pindex_rejected_input_total",
}

QUORUM_CAUSES = (
    errors.Unavailable.code,
    errors.Timeout.code,
    errors.QuorumFailed.code,
)
"""The errors of p2pindex_request_errors_total that p2pindex_quorum_failures_total counts."""

REQUEST_ERRORS = (
    *QUORUM_CAUSES,
    errors.Overloaded.code,
    errors.NotReady.code,
    errors.StorageFailure.code,
    errors.InvalidRequest.code,
    errors.SiblingLimitExceeded.code,
    errors.RecordLimitExceeded.code,
    errors.PermissionDenied.code,
)
"""The errors a node answers a client request with, exported at zero for every operation.
Others (a client's own: connection_lost, no_node_reachable) appear when counted."""

HTTP_REFUSED = (
    "malformed",
    "headers_too_large",
    "body_too_large",
    "ambiguous_length",
    "http_version",
    "slow_client",
    "truncated",
    "slow_reader",
    "too_many_connections",
    "tls",
    "overloaded",
)
"""The reasons p2pindex/http/server.py counts as ``http.refused.*`` (a test keeps the two
in step)."""

HTTP_CLASSES = ("2xx", "3xx", "4xx", "5xx")
"""Status classes the HTTP API answers with (3xx: a read that found siblings)."""


def _labelled(
    histograms: dict[str, Histogram], known: tuple[str, ...], prefix: str
) -> Iterator[tuple[list[str], Histogram]]:
    """(operation and consistency labels, histogram) for every ``prefix`` histogram: those
    ``known`` in advance (empty until used) and any other that was observed."""
    empty = Histogram()
    names = set(known) | {name for name in histograms if name.startswith(prefix)}
    for name in sorted(names):
        yield name.split(".", 2)[1:], histograms.get(name, empty)


def _known() -> tuple[str, ...]:
    """Every counter whose name is known before it is counted, to export at zero."""
    operations = OPERATIONS.values()
    return (
        *EXACT,
        *(f"requests.errors.{op}.{error}" for op in operations for error in REQUEST_ERRORS),
        *(f"http.refused.{reason}" for reason in HTTP_REFUSED),
        *(f"http.responses.{status}" for status in HTTP_CLASSES),
        *(f"http.batch_items.{status}" for status in HTTP_CLASSES),
        *(f"membership.{liveness.value}" for liveness in Liveness),
        "membership.removed",
        "membership.removed_self",
        *(f"state.{state.value}" for state in NodeState),
    )


KNOWN = _known()
LATENCIES = tuple(
    f"latency.{operation}.{level}"
    for operation in OPERATIONS.values()
    for level in (*sorted(LEVELS), "n")
)
"""The request latency histograms (``RequestMetrics``' names), exported empty until used."""

QUERY_LATENCIES = tuple(
    f"query_latency.{operation}.{level}"
    for operation in QUERY_OPERATIONS
    for level in (*sorted(LEVELS), "n")
)
"""The query page latency histograms, exported empty until used. Not ``latency.*``: a page
reads a share of every arc of the ring, so it is timed apart from the key requests whose
p99 ``P2PIndexRequestLatencyHigh`` and the dashboard watch."""


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


def _place(counter: str) -> tuple[str, tuple[str, ...]]:
    """The counter family and label values a StatisticsStore counter is exported as."""
    exact = EXACT.get(counter)
    if exact is not None:
        return exact
    for prefix, metric in PREFIXES.items():
        if counter.startswith(prefix):
            labels = FAMILIES[metric][1]
            values = tuple(counter[len(prefix) :].split(".", len(labels) - 1))
            if len(values) == len(labels):
                return metric, values
            break
    return "p2pindex_events_total", (counter,)


def _quorum_causes(counters: dict[str, int]) -> dict[str, int]:
    """Quorum failures by cause, summed over operations from the requests' errors."""
    causes = dict.fromkeys(QUORUM_CAUSES, 0)
    for counter, value in counters.items():
        if counter.startswith("requests.errors."):
            error = counter.rsplit(".", 1)[-1]
            if error in causes:
                causes[error] += value
    return causes


class _CounterFamilies:
    """Counter families being filled, each made on first use with FAMILIES' HELP and
    labels, whichever of its counters comes first."""

    def __init__(self) -> None:
        self.families: dict[str, CounterMetricFamily] = {}

    def add(self, metric: str, values: tuple[str, ...], value: float) -> None:
        family = self.families.get(metric)
        if family is None:
            help_text, labels = FAMILIES[metric]
            family = self.families[metric] = CounterMetricFamily(
                metric.removesuffix("_total"), help_text, labels=list(labels)
            )
        family.add_metric(list(values), value)


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
        counters = dict.fromkeys(KNOWN, 0) | counters
        families = _CounterFamilies()
        for counter, value in sorted(counters.items()):
            families.add(*_place(counter), value)
        for cause, value in _quorum_causes(counters).items():
            families.add("p2pindex_quorum_failures_total", (cause,), value)
        yield from families.families.values()

    def _histograms(self, histograms: dict[str, Histogram]) -> Iterator[Metric]:
        empty = Histogram()
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
        for labels, histogram in _labelled(histograms, LATENCIES, "latency."):
            requests.add_metric(labels, _histogram_buckets(histogram), histogram.sum)
            counts.add_metric(labels, histogram.count)
        yield requests
        yield counts
        queries = HistogramMetricFamily(
            "p2pindex_query_duration_seconds",
            "Latency of one page of a key listing (keys) or an index query (query) at its "
            "coordinator, any outcome, by operation and consistency.",
            labels=["operation", "consistency"],
        )
        for labels, histogram in _labelled(histograms, QUERY_LATENCIES, "query_latency."):
            queries.add_metric(labels, _histogram_buckets(histogram), histogram.sum)
        yield queries
        for name, (metric, help_text) in HISTOGRAMS.items():
            histogram = histograms.get(name, empty)
            family = HistogramMetricFamily(metric, help_text)
            family.add_metric([], _histogram_buckets(histogram), histogram.sum)
            yield family

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
        yield from _members(node)
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


def _members(node: Node) -> Iterator[Metric]:
    """Members by liveness, and which ones are dead: one series per dead member (none in a
    healthy cluster), so an alert can name the member and page once for it however many
    nodes see it dead."""
    members = GaugeMetricFamily(
        "p2pindex_members",
        "Members of the cluster as this node sees them (itself included), by liveness.",
        labels=["liveness"],
    )
    dead = GaugeMetricFamily(
        "p2pindex_member_dead",
        "1 for each member this node sees dead, by node id and address (the members that "
        'p2pindex_members{liveness="dead"} counts).',
        labels=["member", "address"],
    )
    by_liveness = dict.fromkeys(Liveness, 0)
    for member in node.members():
        by_liveness[member.liveness] += 1
        if member.liveness is Liveness.DEAD:
            dead.add_metric([member.node_id, str(member.address)], 1)
    for liveness, count in by_liveness.items():
        members.add_metric([liveness.value], count)
    yield members
    yield dead


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
        "Other members in this node's SWIM view (itself excluded), by state.",
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
