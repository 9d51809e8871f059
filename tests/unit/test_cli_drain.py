"""`p2pindex drain`: starts a leave, follows its progress until the node is gone."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import trio
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
    monkeypatch.setattr("p2pindex.cli.drain.FINAL_POLL", 0.01)
    monkeypatch.setattr("p2pindex.cli.drain.PROBE_TIMEOUT", 0.3)
    monkeypatch.setattr("p2pindex.cli.drain.CONFIRM_WAIT", 1.5)


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
        "members": node.cluster.members_reply().members,
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
            node.cluster.liveness[node.node_id] = "left"  # the others heard it leave
            node.crash()  # and it exited
        return StatusReply(status_doc(node, handoff={**HANDOFF, "keys": polls}))

    target = cluster.nodes[1]
    target.behaviour = draining
    assert cli_main.main(["drain", "--node", str(target.address)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"draining node node1 at {target.address}"
    assert "25.0% (3 of 12 ranges)" in out[1]
    assert out[-1].startswith("ok: node node1 handed its data over and left the cluster")
    assert "confirmed by another member" in out[-1]
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


def test_progress_line_does_not_call_a_partial_count_final() -> None:
    """Every range read but the last batch not yet sent: 100% with 0 keys was misleading."""
    handoff = {**HANDOFF, "ranges_done": 12, "percent": 100.0, "keys": 0}
    line = progress_line({"node_id": "n1", "handoff": handoff})
    assert line == (
        "node n1: every range read (12 of 12 ranges), 0 keys handed over so far, sending the rest"
    )
    done = progress_line({"node_id": "n1", "handoff": {**handoff, "keys": 40, "done": True}})
    assert done == "node n1: 100.0% (12 of 12 ranges), 40 keys handed over, announcing its leave"


def test_lost_contact_without_confirmation_is_an_unknown_outcome(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    """A node that stops answering (crash, SIGSTOP, cut cable) has not been shown to have
    left: the others still see it alive, so the drain must not report success."""
    polls = 0

    async def vanishing(node: FakeNode, message: Message) -> Message:
        nonlocal polls
        if isinstance(message, LeaveRequest):
            return OkReply("leaving")
        polls += 1
        if polls > 2:
            node.crash()  # crashed: nobody records it as left
        return StatusReply(status_doc(node, handoff=HANDOFF))

    target = cluster.nodes[1]
    target.behaviour = vanishing
    assert cli_main.main(["drain", "--node", str(target.address)]) == 5
    captured = capsys.readouterr()
    assert "ok:" not in captured.out and "left the cluster" not in captured.out
    err = captured.err.strip()
    assert err.count("\n") == 0 and err.startswith("error: contact with node node1")
    assert "may still be running" in err and "crashed" in err
    assert "p2pindex members" in err and f"status --node {target.address}" in err


def test_a_paused_node_that_answers_again_is_followed_to_the_end(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    """Silence (a paused process keeps its connections open) is not a leave: when the node
    answers again the drain goes on following it, and the final count is the node's."""
    polls = 0

    async def pausing(node: FakeNode, message: Message) -> Message:
        nonlocal polls
        if isinstance(message, LeaveRequest):
            return OkReply("leaving")
        polls += 1
        if polls in (2, 3):
            await trio.sleep(5)  # paused: longer than the probe waits
        if polls >= 5:
            node.cluster.liveness[node.node_id] = "left"
            node.crash()
        final = {**HANDOFF, "ranges_done": 12, "keys": 57, "done": polls >= 4}
        return StatusReply(status_doc(node, handoff=final if polls >= 4 else HANDOFF))

    target = cluster.nodes[2]
    target.behaviour = pausing
    assert cli_main.main(["drain", "--node", str(target.address)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "57 keys handed over, announcing its leave" in out[-2]
    assert out[-1] == (
        "ok: node node2 handed its data over and left the cluster "
        "(57 keys handed over; confirmed by another member)"
    )


def test_json_drain_reports_the_confirmed_leave_and_the_final_count(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    polls = 0

    async def leaving(node: FakeNode, message: Message) -> Message:
        nonlocal polls
        if isinstance(message, LeaveRequest):
            return OkReply("leaving")
        polls += 1
        if polls > 2:  # the status before the leave, then one with the handoff done
            node.cluster.liveness[node.node_id] = "left"
            node.crash()
        done = {**HANDOFF, "ranges_done": 12, "keys": 9, "done": True}
        return StatusReply(status_doc(node, handoff=done))

    target = cluster.nodes[0]
    target.behaviour = leaving
    argv = ["drain", "--node", str(target.address), "--format", "json"]
    assert cli_main.main(argv) == 0
    document = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert document == {
        "ok": True,
        "node_id": "node0",
        "left": True,
        "confirmed": True,
        "keys": 9,
        "final": True,
    }
