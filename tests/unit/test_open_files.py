"""`serve` raises its open-files limit to what its connection limits need, within the hard
limit, and says when the hard limit is too low."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from p2pindex.cli import open_files
from p2pindex.config import AdmissionLimits, HttpConfig, NodeConfig
from p2pindex.types import Address


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[int, int]]:
    state = {"nofile": (1024, 4096)}

    def getrlimit(which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return state["nofile"]

    def setrlimit(which: int, value: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        assert value[1] == state["nofile"][1], "the hard limit is never changed"
        state["nofile"] = value

    monkeypatch.setattr(open_files.resource, "getrlimit", getrlimit)
    monkeypatch.setattr(open_files.resource, "setrlimit", setrlimit)
    return state


def test_what_a_node_needs_counts_every_kind_of_connection(tmp_path: Path) -> None:
    config = NodeConfig(
        listen=Address("127.0.0.1", 7400),
        data_dir=tmp_path,
        admission=AdmissionLimits(max_connections=1000, max_handshakes=100),
        http=HttpConfig(listen=Address("127.0.0.1", 8400), max_connections=50),
    )
    assert open_files.open_files_needed(config) == 1000 + 100 + 50 + open_files.RESERVE


def test_the_soft_limit_is_raised_to_what_is_needed(limits) -> None:
    assert open_files.raise_open_files_limit(3000) == (1024, 3000, None)
    assert limits["nofile"] == (3000, 4096)


def test_a_higher_soft_limit_is_left_alone(limits) -> None:
    limits["nofile"] = (8000, 9000)
    assert open_files.raise_open_files_limit(3000) == (8000, 8000, None)


def test_a_low_hard_limit_is_reached_and_named_in_a_warning(limits) -> None:
    before, after, warning = open_files.raise_open_files_limit(6000)
    assert (before, after) == (1024, 4096)
    assert warning is not None
    assert "4096" in warning and "6000" in warning and "LimitNOFILE" in warning


def test_an_unlimited_soft_limit_is_never_lowered(limits) -> None:
    limits["nofile"] = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    soft, after, warning = open_files.raise_open_files_limit(6000)
    assert soft == after == resource.RLIM_INFINITY and warning is None
    assert limits["nofile"] == (resource.RLIM_INFINITY, resource.RLIM_INFINITY)


def test_an_unlimited_hard_limit_lets_the_soft_one_reach_the_need(limits) -> None:
    limits["nofile"] = (1024, resource.RLIM_INFINITY)
    assert open_files.raise_open_files_limit(6000) == (1024, 6000, None)
