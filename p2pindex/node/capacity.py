"""How many bytes a node stores, estimated cheaply enough for every `status` call.

Exact byte counts would need a full scan of the store (or a counter in its schema); keys
sit on the ring by a hash, so the keys with the lowest tokens after a few spread points
are a random sample, and the sample's mean size times the key count is within a few per
cent once a few thousand keys are sampled. That is what capacity planning and
autoscalers need.
"""

from __future__ import annotations

from p2pindex.core.ring import RING_SIZE
from p2pindex.storage.base import Storage

SAMPLE_POINTS = 8
SAMPLE_KEYS_PER_POINT = 256


def estimate_stored_bytes(storage: Storage) -> int:
    """Bytes of keys and records stored (tombstones included), estimated from a sample."""
    count = storage.count()
    if count == 0:
        return 0
    sampled = 0
    size = 0
    for point in range(SAMPLE_POINTS):
        start = point * (RING_SIZE // SAMPLE_POINTS)
        items = storage.scan_range(start, start, None, SAMPLE_KEYS_PER_POINT)
        sampled += len(items)
        size += sum(len(key) + len(record) for key, record in items)
        if sampled >= count:  # a small store was read whole (and more than once)
            break
    if sampled == 0:
        return 0
    return round(size / sampled * count)
