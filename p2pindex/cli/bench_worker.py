"""One load-generating process of `p2pindex bench`.

A worker keeps one client (one multiplexed connection per node) and ``concurrency`` closed
loops over it, each with one request in flight: no task per request, latencies into a
bucketed histogram. It talks to the parent over a pipe: ``ready``, then for each phase it
waits for ``go``, sends ``progress`` once a second and a ``result`` at the end.

Updates carry the latest context this worker saw for the key, as an application would:
a blind write without context would become one more sibling instead of replacing the value.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import trio

from p2pindex.cli.bench_stats import OpStats, PhaseResult
from p2pindex.cli.bench_workload import ScrambledZipfian, key_name
from p2pindex.cli.common import collect_garbage_rarely, describe, single_error
from p2pindex.client import AsyncClient, BatchResult, Context, GetResult, connect
from p2pindex.errors import P2PIndexError

PROGRESS_EVERY = 1.0
VALUE_POOL = 16


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    addresses: tuple[str, ...]
    read_proportion: float
    records: int
    value_size: int
    concurrency: int
    first_task: int
    """Global number of this worker's first task; load work is striped over all tasks."""
    total_tasks: int
    duration: float
    consistency: str
    timeout: float
    seed: int
    load: bool
    batch: int = 1
    """Keys per call: above 1 every call is a put_many or get_many of this many keys (an
    operation is then one key, timed by the call that carried it)."""


class _Shared:
    """What every task of one worker shares: key names, contexts, counters, the stop flag."""

    def __init__(self, spec: WorkerSpec) -> None:
        rng = random.Random(spec.seed)
        self.keys: list[bytes | None] = [None] * spec.records
        self.contexts: dict[int, Context] = {}
        self.writing: set[int] = set()
        """Records with an update in flight: an application does not race itself on a key
        (that would make siblings, which a versioned store keeps, on every hot key)."""
        self.values = [rng.randbytes(spec.value_size) for _ in range(VALUE_POOL)]
        self.done = 0
        self.stopped = False

    def key(self, record: int) -> bytes:
        key = self.keys[record]
        if key is None:
            key = self.keys[record] = key_name(record)
        return key


def _code(error: P2PIndexError) -> str:
    return f"ERROR({error.code})"


async def _load_task(db: AsyncClient, shared: _Shared, records: range, inserts: OpStats) -> None:
    clock = time.perf_counter_ns
    latency = inserts.latency
    returns = inserts.returns
    values = shared.values
    for record in records:
        start = clock()
        try:
            result = await db.put(shared.key(record), values[record % VALUE_POOL])
        except P2PIndexError as exc:
            code = _code(exc)
        else:
            shared.contexts[record] = result.context
            code = "OK"
        latency.record((clock() - start) // 1000)
        returns[code] += 1
        shared.done += 1


async def _run_task(
    db: AsyncClient,
    shared: _Shared,
    keys: ScrambledZipfian,
    rng: random.Random,
    read_proportion: float,
    reads: OpStats,
    updates: OpStats,
) -> None:
    clock = time.perf_counter_ns
    contexts = shared.contexts
    values = shared.values
    while not shared.stopped:
        record = keys.next()
        key = shared.key(record)
        if rng.random() < read_proportion:
            stats = reads
            start = clock()
            try:
                got = await db.get(key)
            except P2PIndexError as exc:
                code = _code(exc)
            else:
                contexts[record] = got.context
                code = "OK" if got.values else "NOT_FOUND"
        else:
            while record in shared.writing:
                record = keys.next()
            key = shared.key(record)
            stats = updates
            shared.writing.add(record)
            start = clock()
            try:
                put = await db.put(
                    key, values[shared.done % VALUE_POOL], context=contexts.get(record)
                )
            except P2PIndexError as exc:
                code = _code(exc)
            else:
                contexts[record] = put.context
                code = "OK"
            finally:
                shared.writing.discard(record)
        stats.latency.record((clock() - start) // 1000)
        stats.returns[code] += 1
        shared.done += 1


def _note_outcomes(
    stats: OpStats, outcomes: BatchResult[Any], micros: int, shared: _Shared, records: list[int]
) -> None:
    """Each key of a batch call is one operation, timed by its call."""
    contexts = shared.contexts
    for record, outcome in zip(records, outcomes, strict=True):
        if outcome.error is not None:
            code = _code(outcome.error)
        else:
            result = outcome.result
            contexts[record] = result.context  # type: ignore[union-attr]
            code = "OK" if not isinstance(result, GetResult) or result.values else "NOT_FOUND"
        stats.latency.record(micros)
        stats.returns[code] += 1
    shared.done += len(records)


async def _load_batch_task(
    db: AsyncClient, shared: _Shared, records: range, batch: int, inserts: OpStats
) -> None:
    clock = time.perf_counter_ns
    values = shared.values
    for first in range(0, len(records), batch):
        chosen = list(records[first : first + batch])
        items = [(shared.key(r), values[r % VALUE_POOL]) for r in chosen]
        start = clock()
        outcomes = await db.put_many(items)
        _note_outcomes(inserts, outcomes, (clock() - start) // 1000, shared, chosen)


async def _run_batch_task(
    db: AsyncClient,
    shared: _Shared,
    keys: ScrambledZipfian,
    rng: random.Random,
    spec: WorkerSpec,
    reads: OpStats,
    updates: OpStats,
) -> None:
    """Like ``_run_task``, but ``spec.batch`` distinct keys per call, all read or all
    written (a zipfian pick repeated within one call is skipped: a batch takes a key once)."""
    clock = time.perf_counter_ns
    contexts = shared.contexts
    values = shared.values
    while not shared.stopped:
        reading = rng.random() < spec.read_proportion
        chosen: dict[int, None] = {}
        tries = 0
        while len(chosen) < spec.batch and tries < 20 * spec.batch:
            tries += 1
            record = keys.next()
            if reading or record not in shared.writing:
                chosen[record] = None
        records = list(chosen)
        start = clock()
        if reading:
            outcomes: BatchResult[Any] = await db.get_many([shared.key(r) for r in records])
            stats = reads
        else:
            shared.writing.update(records)
            value = values[shared.done % VALUE_POOL]
            try:
                outcomes = await db.put_many(
                    [(shared.key(r), value, contexts.get(r)) for r in records]
                )
            finally:
                shared.writing.difference_update(records)
            stats = updates
        _note_outcomes(stats, outcomes, (clock() - start) // 1000, shared, records)


async def _progress(shared: _Shared, conn: Connection, phase: str) -> None:
    while True:
        await trio.sleep(PROGRESS_EVERY)
        conn.send(("progress", phase, shared.done))


async def _wait_go(conn: Connection) -> None:
    message = await trio.to_thread.run_sync(conn.recv)
    if message != "go":
        raise RuntimeError(f"unexpected instruction {message!r}")


async def _phase(
    conn: Connection, phase: str, shared: _Shared, body: Callable[[trio.Nursery, PhaseResult], None]
) -> None:
    await _wait_go(conn)
    shared.done = 0
    result = PhaseResult()
    started = time.perf_counter()
    cpu_started = time.process_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_progress, shared, conn, phase)
        async with trio.open_nursery() as workers:
            body(workers, result)
        nursery.cancel_scope.cancel()
    result.runtime = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu_started
    conn.send(("result", phase, result.to_dict()))


async def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    shared = _Shared(spec)
    async with connect(
        list(spec.addresses), consistency=spec.consistency, timeout=spec.timeout
    ) as db:
        collect_garbage_rarely()
        conn.send(("ready", spec.index))
        if spec.load:

            def start_load(nursery: trio.Nursery, result: PhaseResult) -> None:
                inserts = result.stats("INSERT")
                for task in range(spec.concurrency):
                    stripe = range(spec.first_task + task, spec.records, spec.total_tasks)
                    if spec.batch > 1:
                        nursery.start_soon(
                            _load_batch_task, db, shared, stripe, spec.batch, inserts
                        )
                    else:
                        nursery.start_soon(_load_task, db, shared, stripe, inserts)

            await _phase(conn, "load", shared, start_load)

        def start_run(nursery: trio.Nursery, result: PhaseResult) -> None:
            reads = result.stats("READ") if spec.read_proportion > 0 else OpStats()
            updates = result.stats("UPDATE") if spec.read_proportion < 1 else OpStats()
            for task in range(spec.concurrency):
                rng = random.Random(spec.seed * 7919 + task)
                keys = ScrambledZipfian(spec.records, rng)
                if spec.batch > 1:
                    nursery.start_soon(_run_batch_task, db, shared, keys, rng, spec, reads, updates)
                else:
                    nursery.start_soon(
                        _run_task, db, shared, keys, rng, spec.read_proportion, reads, updates
                    )
            nursery.start_soon(_stop_after, shared, spec.duration)

        shared.stopped = False
        await _phase(conn, "run", shared, start_run)


async def _stop_after(shared: _Shared, duration: float) -> None:
    await trio.sleep(duration)
    shared.stopped = True


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Process entry point; any failure goes back to the parent as one line of text.

    Ctrl-C is left to the parent, which stops its workers by pid; a parent that went away
    (closed pipe) simply ends the worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        trio.run(run_worker, spec, conn)
    except (EOFError, BrokenPipeError):
        pass
    except (P2PIndexError, OSError, ValueError, RuntimeError) as exc:
        _send_error(conn, spec.index, describe(exc))
    except BaseExceptionGroup as group:
        error = single_error(group)
        if not isinstance(error, EOFError | BrokenPipeError):
            _send_error(conn, spec.index, describe(error) if error else repr(group))
    finally:
        conn.close()


def _send_error(conn: Connection, index: int, text: str) -> None:
    with contextlib.suppress(OSError):
        conn.send(("error", index, text))
