"""/metrics from the first scrape: every family with its own HELP, the known series at zero.

Found by a user scraping with Prometheus: a family fed by several counters took its HELP
from whichever was counted first, and fell back to the metric's name when that one had none
(``# HELP p2pindex_requests_succeeded_total p2pindex_requests_succeeded_total`` after a
delete); and series only appeared once counted, so ``rate()`` and ``increase()`` missed the
first burst after every restart (a series has no earlier sample to count from).

Each test scrapes a real node's exposition (the same bytes ``GET /metrics`` answers) on the
simulated network.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pindex.http import metrics as exposition
from p2pindex.http.metrics import metrics_registry, render
from p2pindex.node.node import Node
from p2pindex.wire.messages import DeleteReply, DeleteRequest, ErrorReply, PutReply, PutRequest
from tests.integration.test_metrics_swim_traffic import scrape, value
from tests.support.cluster import running_cluster

OPERATIONS = ("get", "put", "delete")
CONSISTENCIES = ("one", "quorum", "all", "n")
"""The labels RequestMetrics gives a request: three operations, one/quorum/all or n."""
FED_BY_SEVERAL = (
    "p2pindex_requests_succeeded_total",
    "p2pindex_hints_total",
    "p2pindex_handoff_keys_total",
    "p2pindex_antientropy_rounds_total",
    "p2pindex_antientropy_keys_repaired_total",
    "p2pindex_quorum_failures_total",
    "p2pindex_request_errors_total",
    "p2pindex_http_refused_total",
    "p2pindex_http_responses_total",
)
"""Counter families more than one counter feeds, each of which could come first."""


def families(node: Node) -> dict[str, tuple[str, str]]:
    """Every family of the exposition: name (as exposed) -> (type, HELP)."""
    text = render(metrics_registry(node)).decode()
    return {
        family.name + ("_total" if family.type == "counter" else ""): (
            family.type,
            family.documentation,
        )
        for family in text_string_to_metric_families(text)
    }


def assert_real_help(node: Node) -> None:
    for name, (_, help_text) in families(node).items():
        assert help_text.strip(), name
        assert help_text not in (name, name.removesuffix("_total")), name


async def test_a_fresh_node_exports_the_known_series_at_zero(autojump_clock):
    async with running_cluster(3) as cluster:
        samples = scrape(cluster.nodes[0].node)
        zero = {
            ("p2pindex_quorum_failures_total", "cause", "unavailable"),
            ("p2pindex_quorum_failures_total", "cause", "timeout"),
            ("p2pindex_quorum_failures_total", "cause", "quorum_failed"),
            ("p2pindex_hints_total", "event", "refused_full"),
            ("p2pindex_hints_total", "event", "stored"),
            ("p2pindex_http_refused_total", "reason", "malformed"),
            ("p2pindex_http_responses_total", "class", "5xx"),
            ("p2pindex_antientropy_rounds_total", "result", "failed"),
            ("p2pindex_member_transitions_total", "liveness", "dead"),
            ("p2pindex_state_transitions_total", "state", "degraded"),
        }
        for name, label, label_value in zero:
            assert value(samples, name, **{label: label_value}) == 0, (name, label_value)
        for name in ("p2pindex_writes_indeterminate_total", "p2pindex_http_evicted_total"):
            assert value(samples, name) == 0, name
        for operation in OPERATIONS:
            assert value(samples, "p2pindex_requests_succeeded_total", operation=operation) == 0
            for error in ("unavailable", "timeout", "quorum_failed", "overloaded"):
                errors = value(
                    samples, "p2pindex_request_errors_total", operation=operation, error=error
                )
                assert errors == 0, (operation, error)
            for consistency in CONSISTENCIES:
                labels = {"operation": operation, "consistency": consistency}
                for name in ("p2pindex_requests_total", "p2pindex_request_duration_seconds_count"):
                    assert value(samples, name, **labels) == 0, (name, labels)
                bucket = value(
                    samples, "p2pindex_request_duration_seconds_bucket", le="+Inf", **labels
                )
                assert bucket == 0, labels


async def test_a_fresh_node_gives_every_family_a_help_of_its_own(autojump_clock):
    async with running_cluster(3) as cluster:
        node = cluster.nodes[0].node
        assert_real_help(node)
        exposed = families(node)
        for name in FED_BY_SEVERAL:
            assert exposed[name][0] == "counter", name


async def test_a_delete_leaves_the_succeeded_family_its_help(autojump_clock):
    """The user's case: ``requests.delete`` sorts before ``requests.get`` and had no HELP."""
    async with running_cluster(3) as cluster:
        running = cluster.nodes[0]
        put = await cluster.request(running, PutRequest(b"k", b"v", None, "all", 0))
        assert isinstance(put, PutReply), put
        reply = await cluster.request(running, DeleteRequest(b"k", put.context, "all", 0))
        assert isinstance(reply, DeleteReply), reply
        assert_real_help(running.node)
        samples = scrape(running.node)
        assert value(samples, "p2pindex_requests_succeeded_total", operation="delete") == 1
        assert value(samples, "p2pindex_requests_succeeded_total", operation="get") == 0


@pytest.mark.parametrize("counter", sorted(exposition.EXACT))
async def test_whichever_counter_comes_first_its_family_keeps_its_help(autojump_clock, counter):
    """A family's HELP is there before anything is counted and stays what it was."""
    async with running_cluster(1, n_replicas=1) as cluster:
        node = cluster.nodes[0].node
        metric = exposition.EXACT[counter][0]
        before = families(node).get(metric)
        node.stats.incr(counter)
        assert families(node)[metric] == before
        assert_real_help(node)


async def test_the_first_quorum_failure_after_a_start_moves_a_series_that_was_at_zero(
    autojump_clock,
):
    async with running_cluster(3) as cluster:
        node = cluster.nodes[0].node
        before = scrape(node)
        cluster.crash(cluster.nodes[2])
        reply = await cluster.request(cluster.nodes[0], PutRequest(b"k", b"v", None, "all", 500))
        assert isinstance(reply, ErrorReply), reply
        after = scrape(node)
        moved = {
            (name, labels): (before[name, labels], count)
            for (name, labels), count in after.items()
            if name in ("p2pindex_quorum_failures_total", "p2pindex_writes_indeterminate_total")
            and count != before[name, labels]  # a KeyError here: the series was missing
        }
        assert len(moved) == 2 and all(old == 0 for old, _ in moved.values()), moved


async def test_a_hint_refused_for_a_full_store_moves_a_series_that_was_at_zero(autojump_clock):
    """``hints.refused_full`` is what P2PIndexHintsRefused alerts on: a hint store with no
    room for the hints of a dead member (here, a budget of 0 bytes)."""
    async with running_cluster(4, node_options={"hint_max_bytes_per_target": 0}) as cluster:
        dead = cluster.nodes[3]
        cluster.crash(dead)
        others = cluster.nodes[:3]
        await cluster.wait_dead(dead.node.node_id, among=others)
        before = [
            value(scrape(r.node), "p2pindex_hints_total", event="refused_full") for r in others
        ]
        for i in range(20):  # some of these keys have the dead member as a replica
            await cluster.request(others[0], PutRequest(b"k%d" % i, b"v", None, "one", 2000))
        after = [
            value(scrape(r.node), "p2pindex_hints_total", event="refused_full") for r in others
        ]
        assert before == [0, 0, 0]
        assert sum(after) > 0


async def test_each_dead_member_is_named_once_by_every_node_that_sees_it_dead(autojump_clock):
    async with running_cluster(3) as cluster:
        crashed = cluster.nodes[0]
        survivors = cluster.nodes[1:]
        for running in cluster.nodes:
            names = {name for name, _ in scrape(running.node)}
            assert "p2pindex_member_dead" not in names
        cluster.crash(crashed)
        await cluster.wait_dead(crashed.node.node_id, among=survivors)
        for running in survivors:
            dead = {
                labels: count
                for (name, labels), count in scrape(running.node).items()
                if name == "p2pindex_member_dead"
            }
            member = (("address", str(crashed.address)), ("member", crashed.node.node_id))
            assert dead == {member: 1}


async def test_every_http_refusal_reason_is_exported_at_zero(autojump_clock):
    """The reasons are string literals in p2pindex/http/server.py (``_Refused(status,
    reason, ...)``, ``self._refuse(reason)`` and ``reason = "a" if ... else "b"``): a reason
    added there and not to the exported ones would appear only when first counted."""
    reasons = _http_refusal_reasons()
    assert len(reasons) >= 8, reasons  # the scan still finds them
    async with running_cluster(1, n_replicas=1) as cluster:
        samples = scrape(cluster.nodes[0].node)
        exported = {
            dict(labels)["reason"]
            for (name, labels), count in samples.items()
            if name == "p2pindex_http_refused_total" and count == 0
        }
        assert reasons <= exported, reasons - exported


def _http_refusal_reasons() -> set[str]:
    source = Path(exposition.__file__).with_name("server.py").read_text()
    reasons: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            position = {"_Refused": 1, "_refuse": 0}.get(name)
            if position is not None and len(node.args) > position:
                reasons |= _literals(node.args[position])
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant | ast.IfExp)  # not a status's phrase
            and any(
                isinstance(target, ast.Name) and target.id == "reason" for target in node.targets
            )
        ):
            reasons |= _literals(node.value)
    return reasons


def _literals(expression: ast.expr) -> set[str]:
    return {
        node.value
        for node in ast.walk(expression)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
