"""YCSB's request distribution and core workloads, reproduced so figures compare with YCSB's.

Keys are chosen by YCSB's *scrambled* zipfian generator (theta 0.99): a zipfian draw over
10^10 items, hashed with 64-bit FNV and folded onto the record count, which keeps YCSB's
skew but spreads the hot keys over the key space instead of clustering them at the start.
Key names follow YCSB's hashed insert order (``user`` + FNV hash of the record number).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
FNV_PRIME_64 = 1099511628211
_MASK_64 = (1 << 64) - 1

ZIPFIAN_CONSTANT = 0.99
SCRAMBLE_ITEMS = 10_000_000_000
"""YCSB's ScrambledZipfianGenerator draws over this many items..."""
SCRAMBLE_ZETAN = 26.46902820178302
"""...whose zeta(10^10, 0.99) YCSB precomputes (it takes minutes to sum)."""


SCRAMBLE_MEMO = 1 << 16
"""Hashed draws a ScrambledZipfian remembers (a few MB at most)."""


def fnvhash64(value: int) -> int:
    """YCSB's ``Utils.fnvhash64``: FNV-1a over the 8 low bytes, then Java's ``Math.abs``."""
    hashval = FNV_OFFSET_BASIS_64
    for _ in range(8):
        hashval = ((hashval ^ (value & 0xFF)) * FNV_PRIME_64) & _MASK_64
        value >>= 8
    if hashval >= 1 << 63:
        hashval = (1 << 64) - hashval
    return hashval


def zeta(n: int, theta: float) -> float:
    return sum(1.0 / (i**theta) for i in range(1, n + 1))


class ZipfianGenerator:
    """Gray et al.'s zipfian generator as YCSB implements it: item 0 is the most popular."""

    def __init__(
        self,
        items: int,
        rng: random.Random,
        theta: float = ZIPFIAN_CONSTANT,
        zetan: float | None = None,
    ) -> None:
        if items < 2:
            raise ValueError("a zipfian distribution needs at least 2 items")
        if not 0 < theta < 1:
            raise ValueError("theta must lie strictly between 0 and 1")
        self.items = items
        self._rng = rng
        self._theta = theta
        self._zetan = zeta(items, theta) if zetan is None else zetan
        zeta2theta = zeta(2, theta)
        self._alpha = 1.0 / (1.0 - theta)
        self._eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2theta / self._zetan)
        self._second = 1.0 + 0.5**theta

    def next(self) -> int:
        u = self._rng.random()
        uz = u * self._zetan
        if uz < 1.0:
            return 0
        if uz < self._second:
            return 1
        return int(self.items * (self._eta * u - self._eta + 1) ** self._alpha)


class ScrambledZipfian:
    """Record numbers in ``[0, records)`` with YCSB's scrambled zipfian popularity."""

    def __init__(self, records: int, rng: random.Random) -> None:
        if records < 1:
            raise ValueError("records must be at least 1")
        self.records = records
        self._zipf = ZipfianGenerator(
            SCRAMBLE_ITEMS + 1, rng, ZIPFIAN_CONSTANT, zetan=SCRAMBLE_ZETAN
        )
        self._scrambled: dict[int, int] = {}
        """Draws already hashed: the popular ones repeat, and hashing costs the load
        generator more CPU than the rest of a request's client-side work."""

    def next(self) -> int:
        drawn = self._zipf.next()
        record = self._scrambled.get(drawn)
        if record is None:
            record = fnvhash64(drawn) % self.records
            if len(self._scrambled) < SCRAMBLE_MEMO:
                self._scrambled[drawn] = record
        return record


def key_name(record: int) -> bytes:
    """YCSB's key for record ``record`` with hashed (not ordered) inserts."""
    return b"user%d" % fnvhash64(record)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    read_proportion: float
    """The rest of the operations are updates."""

    def describe(self) -> str:
        read = round(self.read_proportion * 100)
        return f"workload {self.name} ({read}% read, {100 - read}% update)"


WORKLOADS = {
    "a": Workload("A", 0.5),
    "b": Workload("B", 0.95),
    "c": Workload("C", 1.0),
    "write-only": Workload("write-only", 0.0),
}
