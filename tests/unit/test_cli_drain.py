"""`p2pindex drain`: starts a leave, follows its progress until the node is gone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_client_fakes import FakeCluster, FakeNode, serve_in_thread

from p2pindex.cli import main as cli_main
from p2pindex.cli.drain import progress_line
from p2pindex.wire.messages import (
    ErrorReply,
    LeaveRequest,
    Message,
    OkReply,
    StatusReply,
    StatusRequest,
)


@pytest.fixture(autouse=True)
def only_client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())
    monkeypatch.setattr("p2pindex.cli.drain.POLL", 0.01)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with serve_in_thread(FakeCluster(3)) as fake:
        yield fake


HANDOFF = {"direction": "out", "ranges_done": 3, "ranges_total": 12, "percent": 25.0}


def test_progress_line_says_how_far_and_how_long() -> None:
    line = progress_line({"node_id": "n1", "handoff": {**HANDOFF, "keys": 40, "eta_s": 9.4}})
    assert line == "node n1: 25.0% (3 of 12 ranges), 40 keys handed over, about 9s left"
    assert progress_line({"node_id": "n1", "handoff": None}) == "node n1: starting the handoff"


def status_doc(node: FakeNode, **extra: object) -> dict[str, object]:
    """The fields every node's status carries (the client reads them typed)."""
    return {
        "node_id": node.node_id,
        "address": str(node.address),
        "cluster": "p2pindex",
        "state": "active",
        "n_replicas": 3,
        "keys": 0,
        **extra,
    }


def test_drain_follows_the_node_until_it_is_gone(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    polls = 0

    async def draining(node: FakeNode, message: Message) -> Message:
        nonlocal polls
        if isinstance(message, LeaveRequest):
            return OkReply("leaving")
        assert isinstance(message, StatusRequest)
        polls += 1
        if polls > 3:
            node.crash()  # it left and exited
        return StatusReply(status_doc(node, handoff={**HANDOFF, "keys": polls}))

    target = cluster.nodes[1]
    target.behaviour = draining
    assert cli_main.main(["drain", "--node", str(target.address)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"draining node node1 at {target.address}"
    assert "25.0% (3 of 12 ranges)" in out[1]
    assert out[-1] == "ok: node node1 handed its data over and left the cluster"
    assert len(target.requests(LeaveRequest)) == 1


def test_a_refused_drain_says_why_in_one_line(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    async def refusing(node: FakeNode, message: Message) -> Message:
        if isinstance(message, LeaveRequest):
            return ErrorReply("invalid_request", "leave refused: fewer than N=3")
        return StatusReply(status_doc(node))

    cluster.nodes[0].behaviour = refusing
    assert cli_main.main(["drain", "--node", str(cluster.nodes[0].address)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leave refused: fewer than N=3" in err[0]


def test_a_drain_the_node_abandons_ends_with_its_reason_and_exit_1(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    reason = "node n4, which takes over some of this node's ranges, was down for 60s"

    async def abandoning(node: FakeNode, message: Message) -> Message:
        if isinstance(message, LeaveRequest):
            return OkReply("leaving")
        return StatusReply(status_doc(node, handoff={**HANDOFF, "abandoned": reason}))

    target = cluster.nodes[2]
    target.behaviour = abandoning
    assert cli_main.main(["drain", "--node", str(target.address)]) == 1
    captured = capsys.readouterr()
    assert "ok:" not in captured.out
    assert captured.err.strip() == (
        f"error: node node2 abandoned the drain and stays in the cluster, serving: {reason}"
    )
