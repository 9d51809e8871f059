"""`p2pindex status | explain | leave | remove`: rendering and requests."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_client_fakes import FakeCluster, FakeNode, serve_in_thread

from p2pindex.cli import main as cli_main
from p2pindex.cli.admin import (
    format_explain,
    format_handoff,
    format_status,
    resolve_node_id,
    table,
)
from p2pindex.wire.messages import LeaveRequest, Message, RemoveRequest, StatusReply, StatusRequest

STATUS = {
    "node_id": "aa11",
    "address": "127.0.0.1:7001",
    "cluster": "p2pindex",
    "state": "active",
    "state_reason": "",
    "handoff": None,
    "n_replicas": 3,
    "keys": 42,
    "members": [
        {
            "node_id": "bb22",
            "address": "127.0.0.1:7002",
            "liveness": "dead",
            "state": "active",
            "incarnation": 3,
            "ownership": 0.25,
        },
        {
            "node_id": "aa11",
            "address": "127.0.0.1:7001",
            "liveness": "alive",
            "state": "active",
            "incarnation": 1,
            "ownership": 0.755,
        },
    ],
    "hints": [{"target": "bb22", "count": 7, "bytes": 900, "oldest": 12.5}],
    "statistics": {"requests.put": 10, "requests.get": 5},
}


@pytest.fixture(autouse=True)
def only_client_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with serve_in_thread(FakeCluster(3)) as fake:
        yield fake


def test_status_text_shows_members_hints_and_statistics() -> None:
    text = format_status(STATUS, now=12.5 + 42)
    lines = text.splitlines()
    assert lines[0] == "node aa11 at 127.0.0.1:7001: state active"
    assert "42 keys" in lines[1]
    header = next(i for i, line in enumerate(lines) if line.startswith("ID"))
    assert lines[header].split() == [
        "ID",
        "ADDRESS",
        "LIVENESS",
        "STATE",
        "INCARNATION",
        "OWNERSHIP",
    ]
    assert lines[header + 1].split() == ["aa11", "127.0.0.1:7001", "alive", "active", "1", "75.5%"]
    assert lines[header + 2].split() == ["bb22", "127.0.0.1:7002", "dead", "active", "3", "25.0%"]
    assert "2 members: 1 alive, 1 dead" in text
    assert any(line.split() == ["bb22", "7", "900", "42s", "ago"] for line in lines)
    assert any(line.split() == ["requests.get", "5"] for line in lines)


def test_table_aligns_columns() -> None:
    assert table(["A", "NUM"], [["long-name", 1], ["x", 100]], right=(1,)) == (
        "A          NUM\nlong-name    1\nx          100"
    )


def test_explain_text() -> None:
    explain = {
        "key": "6b",
        "n_replicas": 3,
        "nodes": [
            {
                "node_id": "aa",
                "role": "primary",
                "address": "h:1",
                "liveness": "alive",
                "state": "active",
                "usable": True,
                "hints_held_here": 0,
            },
            {
                "node_id": "bb",
                "role": "fallback",
                "address": "h:2",
                "liveness": "dead",
                "state": "active",
                "usable": False,
                "hints_held_here": 2,
            },
        ],
    }
    lines = format_explain("k", explain).splitlines()
    assert lines[0] == "key 'k' (hex 6b), N=3"
    assert lines[2].split() == ["primary", "aa", "h:1", "alive", "active", "yes", "0"]
    assert lines[3].split() == ["fallback", "bb", "h:2", "dead", "active", "no", "2"]


def test_resolve_node_id() -> None:
    known = ["abc123", "abd456", "ff"]
    assert resolve_node_id("abc", known) == "abc123"
    assert resolve_node_id("FF", known) == "ff"
    with pytest.raises(ValueError, match="several members"):
        resolve_node_id("ab", known)
    with pytest.raises(ValueError, match="no member"):
        resolve_node_id("99", known)
    with pytest.raises(ValueError, match="empty"):
        resolve_node_id(" ", known)


def test_status_asks_the_named_node(cluster: FakeCluster, capsys: pytest.CaptureFixture) -> None:
    async def status(node: FakeNode, message: Message) -> Message:
        return StatusReply(STATUS)

    target = cluster.nodes[1]
    target.behaviour = status
    assert cli_main.main(["status", "--node", str(target.address), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == STATUS
    assert document["hints"][0]["oldest"] == 12.5  # JSON keeps the node's wall-clock time
    assert len(target.requests(StatusRequest)) == 1
    assert cli_main.main(["status", "--node", str(target.address)]) == 0
    text = capsys.readouterr().out
    assert "75.5%" in text
    assert "d ago" in text and "12.5" not in text  # text shows the age, not the time


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (0.4, "0s ago"),
        (42.9, "42s ago"),
        (59, "59s ago"),
        (60, "1m ago"),
        (3 * 60 + 59, "3m ago"),
        (2 * 3600 + 5, "2h ago"),
        (3 * 86400 + 7200, "3d ago"),
        (-30, "0s ago"),  # another machine's clock a little ahead
    ],
)
def test_hints_show_the_age_of_the_oldest_in_human_units(age: float, shown: str) -> None:
    now = 1_796_668_136.0  # a wall-clock time, as the node records a hint's
    status = {
        **STATUS,
        "hints": [{"target": "bb22", "count": 7, "bytes": 900, "oldest": now - age}],
    }
    lines = format_status(status, now=now).splitlines()
    header = lines.index("hints waiting for delivery:") + 1
    assert lines[header].split() == ["FOR", "NODE", "COUNT", "BYTES", "OLDEST"]
    assert lines[header + 1].split() == ["bb22", "7", "900", *shown.split()]
    assert "e+09" not in "\n".join(lines)


def test_hint_ages_use_the_documents_own_time_else_the_local_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hint = {"target": "bb22", "count": 1, "bytes": 10, "oldest": 1_000.0}
    monkeypatch.setattr("p2pindex.cli.admin.time.time", lambda: 1_000.0 + 7200)
    assert "2h ago" in format_status({**STATUS, "hints": [hint]})
    own_time = {**STATUS, "hints": [hint], "time": 1_000.0 + 42}
    assert "42s ago" in format_status(own_time)
    no_time = {**hint, "oldest": None}
    lines = format_status({**STATUS, "hints": [no_time]}).splitlines()
    assert ["bb22", "1", "10", "-"] in [line.split() for line in lines]


def test_leave_and_remove(cluster: FakeCluster, capsys: pytest.CaptureFixture) -> None:
    target = cluster.nodes[2]
    assert cli_main.main(["leave", "--node", str(target.address)]) == 0
    assert len(target.requests(LeaveRequest)) == 1
    out = capsys.readouterr().out
    # Exit 0 says the leave started, not that it is done: it can still be abandoned a
    # minute later, and the text says where to see how it ends.
    assert out.startswith(f"ok: the node at {target.address} started its leave (not finished")
    assert "is handing over its data and leaving" not in out
    assert "abandons the leave and serves on if a node taking over stays unreachable" in out
    assert f"`p2pindex drain --node {target.address}` follows the leave to its end" in out
    assert f"`p2pindex status --node {target.address}` shows how it ends" in out
    argv = ["leave", "--node", str(target.address), "--format", "json"]
    assert cli_main.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "node": str(target.address),
        "leaving": True,
    }
    assert cli_main.main(["remove", "node1", "--node", str(cluster.nodes[0].address)]) == 0
    removes = [m for node in cluster.nodes for m in node.requests(RemoveRequest)]
    assert removes == [RemoveRequest("node1")]
    assert cli_main.main(["remove", "nobody", "--node", str(cluster.nodes[0].address)]) == 1
    assert capsys.readouterr().err.startswith("error: no member has an id starting with 'nobody'")


def test_handoff_is_one_line() -> None:
    done = {"direction": "in", "done": True, "keys": 1, "elapsed_s": 0.5, "last_error": ""}
    assert format_handoff(done) == "handoff (in): done, 1 key moved in 0.5s"
    running = {
        "direction": "out",
        "done": False,
        "keys": 10,
        "ranges_done": 2,
        "ranges_total": 5,
        "last_error": "peer gone",
    }
    assert format_handoff(running) == (
        "handoff (out): 2 of 5 ranges, 10 keys so far; last error: peer gone"
    )
    with_eta = {**running, "eta_s": 12.4}
    assert format_handoff(with_eta) == (
        "handoff (out): 2 of 5 ranges, 10 keys so far, about 12s left; last error: peer gone"
    )
    abandoned = {**running, "done": True, "abandoned": "node n4 was down for 60s"}
    assert format_handoff(abandoned) == (
        "handoff (out): abandoned after 10 keys moved, the node stays a member: "
        "node n4 was down for 60s"
    )


def test_status_text_shows_version_disk_n_warning_last_known_state_and_removed_count() -> None:
    members = [dict(m) for m in STATUS["members"]]
    members[0]["state_last_known"] = True  # bb22 is dead
    status = {
        **STATUS,
        "members": members,
        "version": "9.9.9",
        "disk": {"database": 8 << 20, "wal": 3 << 19},
        "warnings": ["the cluster keeps N=3 copies of each key but has only 2 member(s)"],
        "removed_members": 2,
    }
    text = format_status(status)
    assert "version 9.9.9, disk: database 8.0 MiB, wal 1.5 MiB" in text
    assert "warning: the cluster keeps N=3 copies of each key but has only 2 member(s)" in text
    bb22 = next(line for line in text.splitlines() if line.startswith("bb22"))
    assert "active (last known)" in bb22
    assert "2 members: 1 alive, 1 dead; 2 removed (not listed)" in text
    aa11 = next(line for line in text.splitlines() if line.startswith("aa11"))
    assert "last known" not in aa11


def test_status_text_shows_load_tombstones_and_copies_outside_ranges() -> None:
    status = {
        **STATUS,
        "load": {
            "requests_per_s": 12.5,
            "p99_ms": 4.2,
            "cpu_percent": 30.0,
            "storage_bytes": 4096,
            "pending_hints": 3,
            "window_s": 10.0,
        },
        "tombstones": {"held": 7, "reaped": 5, "markers": 5, "stale_dropped": 1},
        "keys_outside_ranges": 2,
        "leaving": True,
    }
    text = format_status(status)
    assert (
        "load over the last 10.0s: 12.5 requests/s, p99 4.2 ms, cpu 30.0%; "
        "now 4096 bytes stored, 3 hints pending" in text
    )
    assert "tombstones: 7 held, 5 reaped, 5 markers, 1 stale copies dropped; 2 keys" in text
    assert "leaving: handing its ranges over" in text


STUCK = {
    "direction": "out",
    "done": False,
    "keys": 190,
    "ranges_done": 1976,
    "ranges_total": 5792,
    "percent": 34.1,
    "eta_s": 385.0,
    "last_error": "bb22: all attempts to connect to 127.0.0.1:7002 failed",
    "abandoned": "",
}


def test_a_leave_waiting_for_a_down_member_says_so_instead_of_an_eta() -> None:
    """The ETA of a leave whose pushes to a dead node fail only grows (the tester saw 0 s
    climb to 385 s); the status names the node it waits for and when the leave gives up."""
    text = format_status({**STATUS, "handoff": STUCK, "leaving": True})
    line = next(line for line in text.splitlines() if line.startswith("handoff"))
    assert line == (
        "handoff (out): 1976 of 5792 ranges, 190 keys so far; waiting for node bb22 at "
        "127.0.0.1:7002 (dead; all attempts to connect to 127.0.0.1:7002 failed); "
        "a leave gives up after a minute of this"
    )
    assert "left" not in line


def test_a_handoff_with_an_error_from_a_live_member_keeps_its_eta() -> None:
    """A last error naming a member that is alive (a past, passing failure) or unknown
    does not show the handoff as stuck; nor does a join's, which pulls from another owner."""
    members = [dict(m) for m in STATUS["members"]]
    members[0]["liveness"] = "alive"
    assert format_handoff(STUCK, members) == (
        "handoff (out): 1976 of 5792 ranges, 190 keys so far, about 385s left; last error: "
        "bb22: all attempts to connect to 127.0.0.1:7002 failed"
    )
    assert "about 385s left" in format_handoff(STUCK, [])
    joining = {**STUCK, "direction": "in"}
    assert "about 385s left" in format_handoff(joining, STATUS["members"])
