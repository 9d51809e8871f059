"""`p2pindex drain`: starts a leave, follows its progress until the node is gone."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import trio
from test_client_fakes import FakeCluster, FakeNode, serve_in_thread

from p2pindex.cli import main as cli_main
from p2pindex.cli.drain import Watch, progress_line
from p2pindex.types import Address
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


STUCK = {
    **HANDOFF,
    "ranges_done": 1976,
    "ranges_total": 5792,
    "percent": 13.4,
    "keys": 190,
    "eta_s": 385.0,
    "last_error": "n4: connection refused",
}
MEMBERS = [
    {"node_id": "n1", "address": "127.0.0.1:7001", "liveness": "alive"},
    {"node_id": "n4", "address": "127.0.0.1:7004", "liveness": "dead"},
]


def test_a_stalled_drain_names_the_node_it_waits_for_instead_of_an_eta() -> None:
    status = {"node_id": "n1", "handoff": STUCK, "members": MEMBERS}
    assert progress_line(status, stalled=True) == (
        "node n1: 13.4% (1976 of 5792 ranges), 190 keys handed over so far; waiting for "
        "node n4 at 127.0.0.1:7004 (dead; connection refused); a leave gives up after a "
        "minute of this"
    )
    # Not stalled (the counts move), or stalled without an error: the usual line.
    assert progress_line(status).endswith("190 keys handed over, about 385s left")
    no_error = {**status, "handoff": {**STUCK, "last_error": ""}}
    assert progress_line(no_error, stalled=True).endswith("about 385s left")
    # A node the member list does not name is still named, from the error.
    alone = {"node_id": "n1", "handoff": STUCK}
    assert "; waiting for node n4 (connection refused); a leave gives up" in progress_line(
        alone, stalled=True
    )


def test_watch_measures_how_long_the_counts_stood_still_by_the_nodes_clock() -> None:
    watch = Watch(Address.parse("127.0.0.1:7001"), "n1")

    def seen(elapsed: float, **changes: object) -> float:
        watch.last = {"handoff": {**STUCK, "elapsed_s": elapsed, **changes}}
        return watch.stalled_for()

    assert seen(1.0) == 0.0
    assert seen(2.0) == 1.0
    assert seen(4.5) == 3.5
    assert seen(5.0, keys=191) == 0.0  # moved
    assert seen(6.0, keys=191) == 1.0
    assert seen(6.5, keys=191, ranges_done=1977) == 0.0
    assert seen(0.5, keys=191, ranges_done=1977) == 0.0  # a new handoff: its clock restarts


def test_a_drain_stuck_on_a_dead_node_says_so_until_the_leave_is_abandoned(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    """The tester's run: about 60 lines at 13.4% with an ETA climbing from 0 s to 385 s,
    never naming the unreachable node. Now the lines name it once the counts stand still."""
    polls = 0
    reason = "node node0, which takes over some of this node's ranges, was down for 60s"

    async def stuck(node: FakeNode, message: Message) -> Message:
        nonlocal polls
        if isinstance(message, LeaveRequest):
            return OkReply("leaving")
        polls += 1
        node.cluster.liveness["node0"] = "dead"
        handoff = {
            **STUCK,
            "elapsed_s": float(polls),  # the node's clock runs; the counts stand still
            "eta_s": float(polls * 5),
            "last_error": "node0: connection refused",
            "abandoned": reason if polls > 8 else "",
        }
        return StatusReply(status_doc(node, handoff=handoff))

    target = cluster.nodes[1]
    target.behaviour = stuck
    assert cli_main.main(["drain", "--node", str(target.address)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()[1:]
    waiting = (
        "node node1: 13.4% (1976 of 5792 ranges), 190 keys handed over so far; waiting for "
        f"node node0 at {cluster.nodes[0].address} (dead; connection refused); a leave "
        "gives up after a minute of this"
    )
    assert waiting in lines
    after = lines[lines.index(waiting) :]
    assert after == [waiting]  # said once, with no ETA after it
    assert len(lines) <= 3  # at most two ETA lines before the counts count as stalled
    assert reason in captured.err
