"""The transmit-limited broadcast queue that feeds piggybacking and the gossip tick.

One entry per member: a newer message about a member replaces the queued one, so the queue
never holds more than one entry per member (plus nothing else) and never drops the freshest
state of anyone. Entries sent least often go first, newest first among equals.
"""

from __future__ import annotations


class _Entry:
    __slots__ = ("order", "payload", "transmits")

    def __init__(self, payload: bytes, order: int) -> None:
        self.payload = payload
        self.order = order
        self.transmits = 0


class BroadcastQueue:
    __slots__ = ("_counter", "_entries")

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, payload: bytes) -> None:
        self._counter += 1
        self._entries[key] = _Entry(payload, self._counter)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def take(self, budget: int, limit: int, max_items: int = 1 << 16) -> list[bytes]:
        """Payloads that fit in ``budget`` bytes; each counts as one transmission."""
        if not self._entries or budget <= 0:
            return []
        ranked = sorted(self._entries.items(), key=lambda kv: (kv[1].transmits, -kv[1].order))
        chosen: list[bytes] = []
        for key, entry in ranked:
            size = len(entry.payload)
            if size > budget:
                if budget < 16:
                    break
                continue
            chosen.append(entry.payload)
            budget -= size
            entry.transmits += 1
            if entry.transmits >= limit:
                del self._entries[key]
            if len(chosen) >= max_items:
                break
        return chosen
