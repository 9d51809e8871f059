"""The index workload: objects whose terms change, deletes, concurrent writes, and queries.

Processes write to a small pool of keys (``ix:NN``), each version filed under one integer
term of index ``t``: most writes read the key at quorum first and replace what they saw
(the term changes), some are blind (concurrent writes become siblings, found under both
terms), some delete. A share of each writer's writes go to a key of its own (``ix:wNN``),
which no other process writes: the shared keys are nearly always being written by someone,
and the checker holds a read or a query to a key's last acknowledged write only when no
other write of it raced them, so without quiet keys most answers could not be judged.
Writes are strict (primaries only), at QUORUM or ALL, so what they acknowledge is what
coverage queries promise to see, and what the strict QUORUM read each write takes its
context from must see too (those reads are recorded and checked). Other processes page
through range queries at ``one`` and ``quorum`` (small pages, so a query
spans many requests while faults and membership changes go on). After heal and
quiescence, ``final_queries`` asks every range at ``one`` once more: by then every replica
holds every write.

Everything is recorded in an ``IndexHistory`` for ``p2pindex.sim.index_checker``. Time is
``trio.current_time()``, randomness only from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from p2pindex.errors import DefiniteError, P2PIndexError
from p2pindex.sim.determinism import derive_rng

INDEX = "t"
TERMS = 10
KEYS = 16
PAGE = 4
OWN_KEY_SHARE = 0.3
"""The share of a writer's writes that go to its own key."""


@dataclass(slots=True)
class IndexWrite:
    key: bytes
    term: int | None
    """None: a delete."""
    level: str
    read_invoke: float | None
    """When the read whose context this write carries began (None: a blind write)."""
    invoke: float
    complete: float | None = None
    outcome: str = "pending"
    """ok, fail (definite: nothing written) or unknown."""
    value: bytes | None = None
    """What a put stored (unique to this write); None for a delete."""


@dataclass(slots=True)
class IndexRead:
    """A strict QUORUM read of one key (the one a write reads its context with)."""

    key: bytes
    invoke: float
    complete: float
    values: tuple[bytes, ...]


@dataclass(slots=True)
class IndexQuery:
    level: str
    lo: int
    hi: int
    invoke: float
    complete: float | None = None
    rows: list[tuple[int, bytes]] = field(default_factory=list)
    claimed_complete: bool = True
    outcome: str = "pending"
    final: bool = False
    """Asked after heal and quiescence."""


@dataclass(slots=True)
class IndexHistory:
    writes: list[IndexWrite] = field(default_factory=list)
    queries: list[IndexQuery] = field(default_factory=list)
    membership_changes: list[float] = field(default_factory=list)
    """Times of joins, leaves and removals (the ``one`` checks hold only on a steady ring)."""
    heal_time: float | None = None
    copy_losses: list[float] = field(default_factory=list)
    """Times a node's copies were destroyed for good: removals and wiped disks."""
    replicas: int = 3
    reads: list[IndexRead] = field(default_factory=list)
    """The strict QUORUM reads that ended ok, checked like one-key queries."""


class IndexWorkload:
    def __init__(
        self, rng: random.Random, processes: int, timeout: float, think: float = 0.5
    ) -> None:
        self.history = IndexHistory()
        self._rng = rng
        self._processes = processes
        self._timeout = timeout
        self._think = think
        self._keys = [f"ix:{i:02d}".encode() for i in range(KEYS)]

    async def run(self, clients: Mapping[str, Any], duration: float) -> None:
        deadline = trio.current_time() + duration
        names = sorted(clients)
        async with trio.open_nursery() as nursery:
            for number in range(self._processes):
                client = clients[names[number % len(names)]]
                rng = random.Random(self._rng.getrandbits(64))
                own = None if number % 3 == 2 else f"ix:w{number:02d}".encode()
                nursery.start_soon(self._loop, client, rng, deadline, own)

    async def _loop(
        self, client: Any, rng: random.Random, deadline: float, own: bytes | None
    ) -> None:
        """A writer (``own``: the key only it writes) or, without a key, a querier."""
        while trio.current_time() < deadline:
            await trio.sleep(rng.expovariate(1.0 / self._think))
            if trio.current_time() >= deadline:
                return
            if own is None:
                await self._query(client, rng.choice(("one", "quorum")), rng, final=False)
                continue
            key = own if rng.random() < OWN_KEY_SHARE else rng.choice(self._keys)
            await self._write(client, key, rng, delete=rng.random() < 0.2)

    async def _write(self, client: Any, key: bytes, rng: random.Random, *, delete: bool) -> None:
        level = rng.choice(("quorum", "all"))
        context = None
        read_invoke = None
        if delete or rng.random() < 0.7:
            read_invoke = trio.current_time()
            try:
                got = await client.get(
                    key, consistency="quorum", timeout=self._timeout, strict=True
                )
            except P2PIndexError:
                return
            context = got.context
            read = IndexRead(key, read_invoke, trio.current_time(), tuple(map(bytes, got.values)))
            self.history.reads.append(read)
        term = None if delete else rng.randrange(TERMS)
        write = IndexWrite(key, term, level, read_invoke, trio.current_time())
        self.history.writes.append(write)
        if not delete:
            write.value = b"v%d" % len(self.history.writes)
        try:
            if delete:
                await client.delete(
                    key, context=context, consistency=level, timeout=self._timeout, strict=True
                )
            else:
                await client.put(
                    key,
                    write.value,
                    context=context,
                    consistency=level,
                    timeout=self._timeout,
                    strict=True,
                    index={INDEX: [term]},
                )
        except DefiniteError:
            write.outcome = "fail"
        except P2PIndexError:
            write.outcome = "unknown"
        else:
            write.outcome = "ok"
        write.complete = trio.current_time()

    async def _query(self, client: Any, level: str, rng: random.Random, *, final: bool) -> None:
        lo = rng.randrange(TERMS)
        hi = rng.randrange(lo, TERMS)
        query = IndexQuery(level, lo, hi, trio.current_time(), final=final)
        self.history.queries.append(query)
        token = None
        try:
            while True:
                page = await client.query(
                    INDEX,
                    lo,
                    hi,
                    limit=PAGE,
                    continuation=token,
                    consistency=level,
                    timeout=self._timeout,
                )
                query.rows += [(row.term, row.key) for row in page.rows]
                query.claimed_complete = query.claimed_complete and page.complete
                token = page.continuation
                if token is None:
                    break
        except P2PIndexError:
            query.outcome = "fail"
        else:
            query.outcome = "ok"
        query.complete = trio.current_time()

    async def final_queries(self, clients: Mapping[str, Any]) -> None:
        """Every range once at ``one``, after heal and anti-entropy."""
        client = clients[sorted(clients)[0]]
        rng = random.Random(self._rng.getrandbits(64))
        for _ in range(6):
            await self._query(client, "one", rng, final=True)


def index_workload_for(seed: int, options: Any) -> IndexWorkload | None:
    """The run's index workload when its options ask for one (``index_processes``)."""
    processes = getattr(options, "index_processes", 0)
    if not processes:
        return None
    return IndexWorkload(derive_rng(seed, "index"), processes, options.timeout, options.think)
