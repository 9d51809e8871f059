"""Handoff bookkeeping on a disk that refuses writes: the node waits, it never dies of it.

Found by the CI batch (seed 55): a node syncing its ranges after a wipe hit a full disk
while saving its progress, and the StorageFailure escaped and killed the process.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from p2pindex.node.handoff import PROGRESS_META, OwnershipHandoff
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.memory import MemoryStorage


def handoff(storage: MemoryStorage, stats: StatisticsStore) -> OwnershipHandoff:
    unused: Any = None  # the metadata paths touch neither the view, the peers nor the applier
    return OwnershipHandoff(unused, storage, unused, unused, stats, 3)


async def test_marking_synced_waits_for_the_disk_to_take_writes_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage(fail_writes="disk full")
    stats = StatisticsStore()
    subject = handoff(storage, stats)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(subject.mark_synced)
        await trio.sleep(5.0)
        assert not subject.already_synced()
        storage.fail_writes = None
    assert subject.already_synced()
    assert stats.get("handoff.meta_failures") >= 4


async def test_progress_that_cannot_be_saved_is_counted_not_raised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage(fail_writes="disk full")
    stats = StatisticsStore()
    await handoff(storage, stats)._save_progress([True, False])
    assert storage.get_meta(PROGRESS_META) is None
    assert stats.get("handoff.meta_failures") == 1
