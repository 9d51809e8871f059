"""Cutting (key, record) lists into batches that fit a node-to-node frame.

Why: hint delivery, ownership handoff and range scans send many records per message; with
records of up to ``Limits.record_limit`` bytes a batch counted in items can outgrow the frame
a peer accepts, and a refused batch is retried for ever. A batch always carries at least one
record, and one record always fits (the record limit is a quarter of a frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

Item = tuple[bytes, bytes]


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
    batch: list[Item] = []
    size = 0
    for key, record in items:
        grown = size + len(key) + len(record)
        if batch and grown > max_bytes:
            yield batch
            batch, grown = [], len(key) + len(record)
        batch.append((key, record))
        size = grown
    if batch:
        yield batch
