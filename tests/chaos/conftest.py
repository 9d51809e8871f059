"""Chaos tests run real node processes inside a network namespace they create; they need
root, ``unshare``, ``nft`` and ``ip``, and skip with the reason when any is missing."""

from __future__ import annotations

import pytest

from p2pindex.chaos import missing_requirements


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = missing_requirements()
    if not missing:
        return
    skip = pytest.mark.skip(reason="chaos harness cannot run here: " + "; ".join(missing))
    for item in items:
        if "chaos" in item.keywords:
            item.add_marker(skip)
