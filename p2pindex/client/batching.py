"""The client's batch planning, pure: which frames carry which keys of a batch call.

Why: a batch is worth having only if a coordinator gets its keys in one or a few frames, so
keys are grouped by the node the router picked for each (the first live replica, so in
practice by replica set), then each node's keys are cut into frames that hold at most
``MAX_BATCH_ITEMS`` requests and fit the cluster's frame limit; a node refuses a larger one
whole. Duplicate keys are refused before anything is sent, as the node would refuse them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from p2pindex.client.results import Context
from p2pindex.wire.messages import MAX_BATCH_ITEMS

A = TypeVar("A", bound=Hashable)

ITEM_OVERHEAD = 9
"""Most bytes CBOR adds around one item's bytes in the BatchRequest's list."""
FRAME_OVERHEAD = 64
"""The frame's header, envelope and BatchRequest fields besides the items."""


@dataclass(frozen=True, slots=True)
class PutItem:
    """One write of ``put_many``: like the arguments of ``put`` for one key."""

    key: bytes | str
    value: bytes | str
    context: Context | bytes | str | None = None
    overwrite: bool = False
    index: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeleteItem:
    """One delete of ``delete_many``, with the context of a previous read (or None)."""

    key: bytes | str
    context: Context | bytes | str | None = None


def repeated(keys: Iterable[bytes]) -> dict[bytes, int]:
    """The keys that occur more than once, with their counts."""
    return {key: count for key, count in Counter(keys).items() if count > 1}


def plan_frames(
    routed: Iterable[tuple[A, int]],
    max_bytes: int,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[tuple[A, list[int]]]:
    """Cut ``routed`` (each item's destination and encoded size, in call order) into frames.

    Returns (destination, positions) per frame: every position exactly once, each frame to
    one destination, in call order within it, at most ``max_items`` items, and items plus
    overheads within ``max_bytes`` unless a single item is larger alone (it is sent alone,
    and the encoder refuses it if it really outgrows the peer's frame).
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    budget = max_bytes - FRAME_OVERHEAD
    frames: list[tuple[A, list[int]]] = []
    open_frame: dict[A, tuple[list[int], int]] = {}
    for position, (destination, size) in enumerate(routed):
        cost = size + ITEM_OVERHEAD
        current = open_frame.get(destination)
        if current is not None:
            positions, total = current
            if len(positions) < max_items and total + cost <= budget:
                positions.append(position)
                open_frame[destination] = (positions, total + cost)
                continue
        positions = [position]
        frames.append((destination, positions))
        open_frame[destination] = (positions, cost)
    return frames
