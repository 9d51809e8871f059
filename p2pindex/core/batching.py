"""Cutting (key, record) lists into batches that fit a node-to-node frame.

Why: hint delivery, ownership handoff and range scans send many records per message; with
records of up to ``Limits.record_limit`` bytes a batch counted in items can outgrow the frame
a peer accepts, and a refused batch is retried for ever. A batch always carries at least one
record, and one record always fits (the record limit is a quarter of a frame).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Item = tuple[bytes, bytes]
T = TypeVar("T")


def fitting_prefix(items: list[Item], max_bytes: int) -> list[Item]:
    """The longest prefix of ``items`` whose keys and records total at most ``max_bytes``,
    but never empty when ``items`` is not."""
    size = 0
    for count, (key, record) in enumerate(items):
        size += len(key) + len(record)
        if count and size > max_bytes:
            return items[:count]
    return items


def batches(items: Iterable[Item], max_bytes: int) -> Iterator[list[Item]]:
    """``items`` in order, in batches of at most ``max_bytes`` (or one item each)."""
    return sized_groups(items, _item_size, max_bytes)


def sized_groups(
    items: Iterable[T], size_of: Callable[[T], int], max_bytes: int
) -> Iterator[list[T]]:
    """``items`` in order, in groups whose sizes total at most ``max_bytes`` (or one item)."""
    group: list[T] = []
    total = 0
    for item in items:
        size = size_of(item)
        if group and total + size > max_bytes:
            yield group
            group, total = [], 0
        group.append(item)
        total += size
    if group:
        yield group


def _item_size(item: Item) -> int:
    return len(item[0]) + len(item[1])
