"""`p2pindex plan`: reads the ring and the members' loads, prints the plan, changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_client_fakes import FakeCluster, FakeNode, serve_in_thread

from p2pindex.cli import main as cli_main
from p2pindex.wire.messages import Message, StatusReply, StatusRequest


@pytest.fixture(autouse=True)
def only_client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())


async def loaded(node: FakeNode, message: Message) -> Message:
    assert isinstance(message, StatusRequest)
    return StatusReply(
        {
            "node_id": node.node_id,
            "address": str(node.address),
            "cluster": "p2pindex",
            "state": "active",
            "n_replicas": 3,
            "keys": 1000,
            "bytes": 100_000,
        }
    )


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with serve_in_thread(FakeCluster(3)) as fake:
        for node in fake.nodes:
            node.behaviour = loaded
        yield fake


def test_plan_add_prints_shares_and_moved_bytes_and_changes_nothing(
    cluster: FakeCluster, capsys: pytest.CaptureFixture
) -> None:
    node = str(cluster.nodes[0].address)
    assert cli_main.main(["plan", "add", "1", "--node", node, "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["distinct_keys"] == 1000 and plan["distinct_bytes"] == 100_000
    # 3 of 4 copies land on the new node (the fakes use few vnodes, so the share varies).
    assert plan["moved_bytes"] == pytest.approx(75_000, rel=0.15)
    assert [n["node_id"] for n in plan["nodes"] if n["joining"]] == ["new-1"]
    asked = [type(m).__name__ for n in cluster.nodes for m in n.received]
    # nothing that changes anything (the client also asks the node for its limits on opening)
    assert set(asked) <= {"MembersRequest", "StatusRequest", "LimitsRequest"}
    assert cli_main.main(["plan", "add", "2", "--node", node]) == 0
    text = capsys.readouterr().out
    assert text.startswith("plan: add 2 nodes (N=3); nothing has been changed")
    assert "new-2 (new)" in text


def test_the_data_estimate_asks_each_member_whether_it_is_still_syncing(
    capsys: pytest.CaptureFixture,
) -> None:
    """Right after a join the joiner's gossip still says SYNCING while its own status says
    ACTIVE, and the former owners still hold the copies they gave away (their reaper has not
    counted them yet). The joiner is the one exact estimate then; a member whose own status
    says SYNCING holds part of its ranges and is left out."""

    async def status(node: FakeNode, message: Message) -> Message:
        assert isinstance(message, StatusRequest)
        exact = node.node_id == "node3"
        return StatusReply(
            {
                "node_id": node.node_id,
                "address": str(node.address),
                "cluster": "p2pindex",
                "state": "syncing" if node.node_id == "node4" else "active",
                "n_replicas": 3,
                # on 5 nodes each holds 3/5 of the copies: 600 of 1000 keys when exact
                "keys": 600 if exact else 30 if node.node_id == "node4" else 900,
                "bytes": 60_000 if exact else 3_000 if node.node_id == "node4" else 90_000,
            }
        )

    with serve_in_thread(FakeCluster(5)) as fake:
        for node in fake.nodes:
            node.behaviour = status
        fake.states["node3"] = "syncing"  # as gossip still has it
        node = str(fake.nodes[0].address)
        assert cli_main.main(["plan", "add", "1", "--node", node, "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    # the fakes' few vnodes make shares uneven: the exact node's estimate is near 1000
    assert plan["distinct_keys"] == pytest.approx(1000, rel=0.25)
    assert plan["distinct_keys"] < 1200


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["plan", "remove", "node1"], "would leave 2 nodes, fewer than N=3"),
        (["plan", "remove", "zzz"], "no member has an id starting with 'zzz'"),
    ],
)
def test_bad_plans_are_refused_with_one_clear_line(
    cluster: FakeCluster, capsys: pytest.CaptureFixture, argv: list[str], reason: str
) -> None:
    assert cli_main.main([*argv, "--node", str(cluster.nodes[0].address)]) != 0
    err = capsys.readouterr().err
    assert reason in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("count", ["0", "65", "-1", "two"])
def test_a_bad_count_is_a_usage_error(capsys: pytest.CaptureFixture, count: str) -> None:
    """The README's table: a bad command line exits 2 (it was 1, after a round trip)."""
    with pytest.raises(SystemExit) as exit_:
        cli_main.main(["plan", "add", count, "--node", "127.0.0.1:1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument COUNT: ") and len(err.splitlines()) == 1
    assert "must be 1..64" in err or "not a whole number" in err
