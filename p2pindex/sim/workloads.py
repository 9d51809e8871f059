"""Client workloads that generate the operation patterns the checkers need to see bugs.

The workloads drive any client that has the ``get``/``put``/``delete`` shape of
``p2pindex.AsyncClient`` (the real one over real processes, or the simulator's), record
every operation in a ``History`` and, after heal and quiescence, read every key at ALL.

Each pattern is aimed at a class of bug (see ``p2pindex.sim.checkers``):

* **set_add**: many processes read-modify-write the same few keys, each read's context
  sent with the write. Concurrent contexts are what last-write-wins resolution and vector
  clocks without dots get wrong (lost elements, or siblings that are not concurrent).
* **register**: plain puts at ONE, QUORUM and ALL, some blind (no context, so concurrent
  by construction), some replacing what a read saw; many acknowledged ONE writes are what
  acknowledging before the storage commit, or dropping hints on restart, loses.
* **delete_recreate**: put, delete with the read's context, put again, on a few keys,
  so a tombstone reaped before every replica has it lets the deleted value come back.
* **supersede**: blind puts that make siblings, reads, and the two writes a user makes
  without a context to replace what is there: ``delete`` without one and ``put`` with
  ``overwrite``, which the node serves by reading the key first. Their outcomes must be
  as honest as any write's (see ``checkers`` for what an unseen read leaves checkable).
* **batch**: a few keys read with one ``get_many`` and written back with one ``put_many``
  (or deleted with one ``delete_many``), each with its own read's context: the client's
  grouping and retries and the node's batch handling, judged key by key like single
  calls. A batch outcome that says "nothing was done" for a key that was written is what
  the checkers catch here (each key is its own op, so its outcome stands on its own).
* **churn**: nodes join, leave and are removed while the others run.

Values follow the token model of ``p2pindex.sim.history``: every write's token is its
invocation's op index, so it is unique and names the op that wrote it.

Time is ``trio.current_time()`` (virtual under the simulator's MockClock) and randomness
comes only from the ``random.Random`` passed in.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import trio

from p2pindex.errors import DefiniteError, IndeterminateError, P2PIndexError
from p2pindex.sim.history import EventKind, FaultEvent, History, Op, OpF, OpType

LEVELS = ("one", "quorum", "all")


class KVClient(Protocol):
    """What a workload needs from a client (``p2pindex.AsyncClient`` fits)."""

    async def get(
        self, key: bytes, *, consistency: Any = None, timeout: float | None = None
    ) -> Any:
        """Returns an object with ``.values`` (list of bytes) and ``.context``."""
        ...

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        context: Any = None,
        consistency: Any = None,
        timeout: float | None = None,
        overwrite: bool = False,
    ) -> Any: ...

    async def delete(
        self,
        key: bytes,
        *,
        context: Any = None,
        consistency: Any = None,
        timeout: float | None = None,
    ) -> Any: ...

    async def get_many(
        self, keys: Sequence[bytes], *, consistency: Any = None, timeout: float | None = None
    ) -> Any:
        """Returns each key's outcome in order: ``.error`` (None on success, else with
        ``.definite``) and ``.result`` (as ``get`` returns)."""
        ...

    async def put_many(
        self,
        items: Sequence[tuple[Any, ...]],
        *,
        consistency: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """``(key, value, context)`` items; each key's outcome in order (see ``get_many``)."""
        ...

    async def delete_many(
        self,
        items: Sequence[tuple[Any, ...]],
        *,
        consistency: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """``(key, context)`` items; each key's outcome in order (see ``get_many``)."""
        ...


class ClusterControl(Protocol):
    """Membership operations of a runner; the churn workload records them as faults."""

    def members(self) -> list[str]:
        """Names of the nodes currently in the cluster."""
        ...

    async def join(self) -> str:
        """Start a new node that joins the cluster; returns its name."""
        ...

    async def leave(self, node: str) -> None:
        """Ask ``node`` to hand its data over and leave."""
        ...

    async def remove(self, node: str) -> None:
        """Stop ``node`` for good and have the others remove it from the ring."""
        ...


Replacer = Callable[[str], Awaitable[str | None]]
"""Stops a node for good and starts a new machine in its place (`serve --replace`); returns
the new node's name (None: it was only removed). The simulated cluster's ``replace``."""


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    processes: int = 10
    """Concurrent client processes."""
    think: float = 0.05
    """Mean pause between two operations of one process (exponential), seconds."""
    paced: bool = False
    """True: ``think`` is the mean interval between the *starts* of a process's patterns
    (an open-loop client with a steady offered rate): time an operation spends waiting on
    a partition is made up afterwards by starting the next ones at once, so the operation
    count hardly depends on the faults. False: the pause follows each pattern."""
    timeout: float = 2.0
    """Request timeout passed to the client."""
    active_keys: int = 3
    """Keys in use at once per pattern: few keys, many writers, real concurrency."""
    writes_per_key: int = 32
    """A key is retired after this many writes, which bounds set-add value sizes."""
    mix: Mapping[str, float] = field(
        default_factory=lambda: {"set_add": 3.0, "register": 2.0, "delete_recreate": 1.0}
    )
    """Relative weight of each pattern."""
    write_levels: tuple[str, ...] = LEVELS
    read_levels: tuple[str, ...] = LEVELS
    blind_fraction: float = 0.3
    """Share of register puts sent without a context."""
    index_processes: int = 0
    """Processes of the index workload (``p2pindex.sim.index_workload``); 0 runs none."""

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError("a workload needs at least one process")
        if not isinstance(self.paced, bool):
            raise ValueError(f"paced must be true or false, not {self.paced!r}")
        if self.think < 0 or self.timeout <= 0:
            raise ValueError("think time must be >= 0 and timeout > 0")
        if self.active_keys < 1 or self.writes_per_key < 1:
            raise ValueError("active_keys and writes_per_key must be at least 1")
        unknown = set(self.mix) - set(PATTERNS)
        if unknown or not any(w > 0 for w in self.mix.values()):
            raise ValueError(f"mix needs positive weights for {sorted(PATTERNS)}; bad: {unknown}")
        if not self.write_levels or not self.read_levels:
            raise ValueError("write_levels and read_levels must not be empty")
        if not 0.0 <= self.blind_fraction <= 1.0:
            raise ValueError("blind_fraction must be within 0..1")
        if type(self.index_processes) is not int or self.index_processes < 0:
            raise ValueError("index_processes must be a non-negative integer")


PATTERNS = ("set_add", "register", "delete_recreate", "batch", "supersede")

BATCH_DELETE_FRACTION = 0.3
"""Share of batch patterns that delete the keys they read with values instead of writing."""


class _KeyPool:
    """A few active keys; each is retired after a number of writes and replaced."""

    def __init__(self, prefix: str, active: int, per_key: int) -> None:
        self._prefix = prefix
        self._per_key = per_key
        self._serial = itertools.count()
        self._active = [self._fresh() for _ in range(active)]
        self._writes: dict[str, int] = {}

    def _fresh(self) -> str:
        return f"{self._prefix}-{next(self._serial)}"

    def pick(self, rng: random.Random) -> str:
        return rng.choice(self._active)

    def sample(self, rng: random.Random) -> list[str]:
        """Two or more distinct active keys (all of them at most), in key-pool order."""
        count = rng.randint(min(2, len(self._active)), len(self._active))
        return sorted(rng.sample(self._active, count), key=self._active.index)

    def wrote(self, key: str) -> None:
        count = self._writes.get(key, 0) + 1
        self._writes[key] = count
        if count >= self._per_key and key in self._active:
            self._active[self._active.index(key)] = self._fresh()


@dataclass(slots=True)
class _Process:
    """One client process: its id changes after an indeterminate outcome (Jepsen rule)."""

    id: int
    name: str
    client: KVClient
    rng: random.Random


@dataclass(slots=True)
class _ReadResult:
    op: Op
    values: list[bytes]
    context: Any


def _error_code(exc: BaseException) -> str:
    return getattr(exc, "code", None) or type(exc).__name__


def _outcome(exc: BaseException) -> OpType:
    return OpType.FAIL if isinstance(exc, DefiniteError) else OpType.INFO


class Workload:
    """Runs the patterns against a cluster and records everything in ``history``."""

    def __init__(
        self, history: History, rng: random.Random, options: WorkloadOptions | None = None
    ) -> None:
        self.history = history
        self.options = options or WorkloadOptions()
        self._rng = rng
        self._pools = {
            name: _KeyPool(
                name.replace("_", "-"),
                self.options.active_keys * (2 if name == "batch" else 1),
                self.options.writes_per_key,
            )
            for name in PATTERNS
        }
        self._next_process = max((op.process for op in history.ops), default=-1) + 1

    def _new_process_id(self) -> int:
        process = self._next_process
        self._next_process += 1
        return process

    async def run(self, clients: Mapping[str, KVClient], duration: float) -> None:
        """Run every process until ``duration`` seconds of (virtual) time have passed."""
        if not clients:
            raise ValueError("a workload needs at least one client")
        names = sorted(clients)
        deadline = trio.current_time() + duration
        async with trio.open_nursery() as nursery:
            for worker in range(self.options.processes):
                name = names[worker % len(names)]
                process = _Process(
                    self._new_process_id(),
                    name,
                    clients[name],
                    random.Random(self._rng.getrandbits(64)),
                )
                nursery.start_soon(self._loop, process, deadline)

    async def _loop(self, process: _Process, deadline: float) -> None:
        patterns = [p for p in PATTERNS if self.options.mix.get(p, 0) > 0]
        weights = [self.options.mix[p] for p in patterns]
        next_start = trio.current_time()
        while trio.current_time() < deadline:
            pattern = process.rng.choices(patterns, weights)[0]
            await getattr(self, f"_{pattern}")(process)
            if self.options.think:
                pause = process.rng.expovariate(1.0 / self.options.think)
                if self.options.paced:
                    next_start += pause
                    await trio.sleep_until(next_start)
                else:
                    await trio.sleep(pause)

    # --- patterns ---------------------------------------------------------------------------

    async def _set_add(self, process: _Process) -> None:
        pool = self._pools["set_add"]
        key = pool.pick(process.rng)
        read = await self._read(process, key, self._level(process, self.options.read_levels))
        if read is None:
            return
        token = self._token("a")
        level = self._level(process, self.options.write_levels)
        await self._write(process, OpF.ADD, key, token, _set_value(token, read), read, level)
        pool.wrote(key)

    async def _register(self, process: _Process) -> None:
        pool = self._pools["register"]
        key = pool.pick(process.rng)
        read = None
        if process.rng.random() >= self.options.blind_fraction:
            read = await self._read(process, key, self._level(process, self.options.read_levels))
            if read is None:
                return
        token = self._token("r")
        level = self._level(process, self.options.write_levels)
        await self._write(process, OpF.PUT, key, token, token, read, level)
        pool.wrote(key)

    async def _delete_recreate(self, process: _Process) -> None:
        pool = self._pools["delete_recreate"]
        key = pool.pick(process.rng)
        read = await self._read(process, key, self._level(process, self.options.read_levels))
        if read is None:
            return
        level = self._level(process, self.options.write_levels)
        if read.values:
            await self._write(process, OpF.DELETE, key, None, None, read, level)
        else:
            token = self._token("d")
            await self._write(process, OpF.PUT, key, token, token, read, level)
        pool.wrote(key)

    async def _supersede(self, process: _Process) -> None:
        pool = self._pools["supersede"]
        key = pool.pick(process.rng)
        roll = process.rng.random()
        if roll < 0.2:
            await self._read(process, key, self._level(process, self.options.read_levels))
            return
        level = self._level(process, self.options.write_levels)
        if roll < 0.5:
            token = self._token("s")
            await self._write(process, OpF.PUT, key, token, token, None, level)
        elif roll < 0.75:
            token = self._token("o")
            await self._write(process, OpF.PUT, key, token, token, None, level, read_first=True)
        else:
            await self._write(process, OpF.DELETE, key, None, None, None, level, read_first=True)
        pool.wrote(key)

    async def _batch(self, process: _Process) -> None:
        pool = self._pools["batch"]
        keys = pool.sample(process.rng)
        reads: dict[str, _ReadResult] = {}
        if process.rng.random() >= self.options.blind_fraction:
            level = self._level(process, self.options.read_levels)
            reads = await self._read_many(process, keys, level)
            keys = [key for key in keys if key in reads]
            if not keys:
                return
        level = self._level(process, self.options.write_levels)
        if reads and process.rng.random() < BATCH_DELETE_FRACTION:
            holding = [key for key in keys if reads[key].values]
            if holding:
                await self._write_many(process, OpF.DELETE, holding, reads, level)
                for key in holding:
                    pool.wrote(key)
                return
        await self._write_many(process, OpF.PUT, keys, reads, level)
        for key in keys:
            pool.wrote(key)

    @staticmethod
    def _level(process: _Process, levels: tuple[str, ...]) -> str:
        return process.rng.choice(levels)

    def _token(self, prefix: str) -> bytes:
        """The token of the write about to be invoked: its own op index, so it is unique."""
        return f"{prefix}{self.history.next_index}".encode()

    # --- recording --------------------------------------------------------------------------

    async def _read(
        self, process: _Process, key: str, consistency: str, f: OpF = OpF.READ
    ) -> _ReadResult | None:
        invocation = self.history.invoke(
            process.id, f, key, time=trio.current_time(), node=process.name, consistency=consistency
        )
        result = await self._call(
            process,
            invocation,
            process.client.get,
            key.encode(),
            consistency=consistency,
            timeout=self.options.timeout,
        )
        if result is None:
            return None
        values = [bytes(v) for v in result.values]
        done = self.history.complete(
            invocation, OpType.OK, time=trio.current_time(), value=tuple(values)
        )
        return _ReadResult(done, values, result.context)

    async def _write(
        self,
        process: _Process,
        f: OpF,
        key: str,
        token: bytes | None,
        payload: bytes | None,
        read: _ReadResult | None,
        consistency: str,
        *,
        read_first: bool = False,
    ) -> None:
        """One put or delete; ``read_first``: a delete without a context or a put with
        ``overwrite`` (then ``read`` is None)."""
        invocation = self.history.invoke(
            process.id,
            f,
            key,
            token,
            time=trio.current_time(),
            node=process.name,
            consistency=consistency,
            ctx=None if read is None else read.op.index,
            read_first=read_first,
        )
        options: dict[str, Any] = {"context": None if read is None else read.context}
        call: Callable[..., Awaitable[object]]
        args: tuple[bytes | None, ...]
        if f is OpF.DELETE:
            call, args = process.client.delete, (key.encode(),)
        else:
            call, args = process.client.put, (key.encode(), payload)
            if read_first:
                options["overwrite"] = True
        result = await self._call(
            process,
            invocation,
            call,
            *args,
            consistency=consistency,
            timeout=self.options.timeout,
            **options,
        )
        if result is not None:
            self.history.complete(invocation, OpType.OK, time=trio.current_time())

    async def _read_many(
        self, process: _Process, keys: list[str], consistency: str
    ) -> dict[str, _ReadResult]:
        """One ``get_many``; each key is its own read op. Returns the keys read, by key."""
        invocations = [
            self.history.invoke(
                self._new_process_id(),
                OpF.READ,
                key,
                time=trio.current_time(),
                node=process.name,
                consistency=consistency,
            )
            for key in keys
        ]
        results = await self._call_many(
            invocations,
            process.client.get_many,
            [key.encode() for key in keys],
            consistency=consistency,
            timeout=self.options.timeout,
        )
        reads = {}
        for invocation, result in zip(invocations, results, strict=True):
            if result is None:
                continue
            values = [bytes(v) for v in result.values]
            done = self.history.complete(
                invocation, OpType.OK, time=trio.current_time(), value=tuple(values)
            )
            reads[invocation.key] = _ReadResult(done, values, result.context)
        return reads

    async def _write_many(
        self,
        process: _Process,
        f: OpF,
        keys: list[str],
        reads: Mapping[str, _ReadResult],
        consistency: str,
    ) -> None:
        """One ``put_many`` (tokens as values) or ``delete_many`` over ``keys``, each with
        the context of its read in ``reads`` (none for a key not in it: a blind put)."""
        invocations = []
        items: list[tuple[Any, ...]] = []
        for key in keys:
            read = reads.get(key)
            token = None if f is OpF.DELETE else self._token("b")
            invocations.append(
                self.history.invoke(
                    self._new_process_id(),
                    f,
                    key,
                    token,
                    time=trio.current_time(),
                    node=process.name,
                    consistency=consistency,
                    ctx=None if read is None else read.op.index,
                )
            )
            context = None if read is None else read.context
            items.append(
                (key.encode(), context) if token is None else (key.encode(), token, context)
            )
        call = process.client.delete_many if f is OpF.DELETE else process.client.put_many
        results = await self._call_many(
            invocations, call, items, consistency=consistency, timeout=self.options.timeout
        )
        for invocation, result in zip(invocations, results, strict=True):
            if result is not None:
                self.history.complete(invocation, OpType.OK, time=trio.current_time())

    async def _call_many(
        self, invocations: list[Op], call: Any, *args: Any, **kwargs: Any
    ) -> list[Any]:
        """Run one batch call over ``invocations`` (one op per key, in order): each key that
        failed is recorded fail or info by its own outcome, and its place in the returned
        list is None; a key that succeeded has its result there, for the caller to record.

        A call that raises as a whole, or neither answers nor raises within twice its
        timeout, ends every key's op the same way (``_call``'s rule for a single call).
        """
        results: list[Any] = [None] * len(invocations)
        whole: tuple[OpType, str] = (OpType.INFO, "no_answer")
        with trio.move_on_after(2 * self.options.timeout + 1.0):
            try:
                batch = await call(*args, **kwargs)
            except (P2PIndexError, OSError) as exc:
                whole = (_outcome(exc), _error_code(exc))
            else:
                outcomes = list(batch)
                if len(outcomes) != len(invocations):
                    raise AssertionError(
                        f"a batch of {len(invocations)} keys came back with "
                        f"{len(outcomes)} outcomes"
                    )
                for position, (invocation, outcome) in enumerate(
                    zip(invocations, outcomes, strict=True)
                ):
                    if outcome.error is None:
                        results[position] = outcome.result
                    else:
                        self.history.complete(
                            invocation,
                            _outcome(outcome.error),
                            time=trio.current_time(),
                            error=_error_code(outcome.error),
                        )
                return results
        for invocation in invocations:
            self.history.complete(invocation, whole[0], time=trio.current_time(), error=whole[1])
        return results

    async def _call(
        self, process: _Process, invocation: Op, call: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """Run one client call; record fail or info and return None when it did not succeed.

        A client that neither answers nor raises within twice its timeout is abandoned and
        the op recorded as ``info``: it may still land.
        """
        outcome = OpType.INFO
        error = "no_answer"
        with trio.move_on_after(2 * self.options.timeout + 1.0):
            try:
                return await call(*args, **kwargs)
            except (P2PIndexError, OSError) as exc:
                outcome, error = _outcome(exc), _error_code(exc)
        self.history.complete(invocation, outcome, time=trio.current_time(), error=error)
        if outcome is OpType.INFO:
            process.id = self._new_process_id()
        return None

    # --- final phase ------------------------------------------------------------------------

    async def final_reads(
        self,
        clients: Mapping[str, KVClient],
        *,
        attempts: int = 5,
        retry_pause: float = 1.0,
        level: str = "all",
    ) -> list[str]:
        """Read every key the run touched at ``level``, retrying; returns keys never read.

        Run after heal and quiescence: these reads are what the checkers compare against.
        """
        names = sorted(clients)
        unread = []
        for number, key in enumerate(self.history.keys()):
            for attempt in range(attempts):
                name = names[(number + attempt) % len(names)]
                process = _Process(self._new_process_id(), name, clients[name], self._rng)
                if await self._read(process, key, level, OpF.FINAL) is not None:
                    break
                await trio.sleep(retry_pause)
            else:
                unread.append(key)
        return unread


# --- membership churn -----------------------------------------------------------------------


async def run_churn(
    control: ClusterControl,
    history: History,
    rng: random.Random,
    *,
    duration: float,
    interval: float,
    min_members: int,
    max_members: int,
    replacer: Replacer | None = None,
) -> None:
    """Every ``interval`` seconds on average, a node joins, leaves, or is removed (or, with
    a ``replacer``, is replaced by a new machine: recorded as its removal and the newcomer's
    join; the real-process chaos cluster cannot replace, so it churns without one).

    The member count stays within ``min_members..max_members``. Each change is recorded as
    a fault event (the control must not record it again); a change whose outcome is
    unknown is recorded with that said in its detail.
    """
    if not 1 <= min_members <= max_members:
        raise ValueError("need 1 <= min_members <= max_members")
    deadline = trio.current_time() + duration
    while True:
        await trio.sleep(rng.expovariate(1.0 / interval))
        if trio.current_time() >= deadline:
            return
        members = sorted(control.members())
        choices: list[EventKind | Literal["replace"]] = []
        if len(members) < max_members:
            choices.append(EventKind.JOIN)
        if len(members) > min_members:
            choices += [EventKind.LEAVE, EventKind.REMOVE]
        if replacer is not None:
            choices.append(REPLACE)
        if not choices:
            return
        kind = rng.choice(choices)
        if kind == REPLACE:
            assert replacer is not None  # a choice only with one
            await _replace(replacer, history, rng.choice(members))
            continue
        if kind is EventKind.JOIN:
            try:
                node = await control.join()
            except DefiniteError:
                continue
            history.append(FaultEvent(trio.current_time(), kind, (node,)))
            continue
        node = rng.choice(members)
        started = trio.current_time()
        action = control.leave if kind is EventKind.LEAVE else control.remove
        detail = ""
        try:
            await action(node)
        except DefiniteError:
            continue
        except IndeterminateError as exc:
            detail = f"outcome unknown: {_error_code(exc)}"
        history.append(FaultEvent(started, kind, (node,), detail=detail))


REPLACE: Final = "replace"


async def _replace(replacer: Replacer, history: History, node: str) -> None:
    started = trio.current_time()
    try:
        new = await replacer(node)
    except DefiniteError:
        return
    if new is None:  # removed when the wait ended (a fault may have restarted it meanwhile)
        now = trio.current_time()
        history.append(FaultEvent(now, EventKind.REMOVE, (node,), detail="not replaced"))
        return
    history.append(FaultEvent(started, EventKind.REMOVE, (node,), detail=f"replaced by {new}"))
    now = trio.current_time()
    history.append(FaultEvent(now, EventKind.JOIN, (new,), detail=f"in {node}'s place"))


# --- replay -----------------------------------------------------------------------------------


async def replay(
    source: History,
    clients: Mapping[str, KVClient],
    history: History,
    *,
    timeout: float = 2.0,
) -> None:
    """Issue the client ops of ``source`` (e.g. a shortened history) again, at their times.

    Each process repeats its reads and writes with the same keys, tokens and consistency
    levels; a write that carried a read's context carries the context of the replayed
    read, and a set-add rebuilds its value from it. The final phase is not replayed: run
    ``Workload.final_reads`` afterwards, and the fault events through the runner.
    """
    names = sorted(clients)
    completion_of: dict[int, int] = {}
    pending: dict[int, Op] = {}
    plans: dict[int, list[Op]] = {}
    for op in source.ops:
        if op.type is OpType.INVOKE:
            pending[op.process] = op
            if op.f is not OpF.FINAL:
                plans.setdefault(op.process, []).append(op)
        elif op.process in pending:
            completion_of[pending.pop(op.process).index] = op.index
    if not plans:
        return
    start = trio.current_time()
    first = min(op.time for ops in plans.values() for op in ops)
    workload = Workload(history, random.Random(0), WorkloadOptions(timeout=timeout))
    reads: dict[int, _ReadResult] = {}

    async def run_process(ops: Sequence[Op]) -> None:
        node = ops[0].node
        name = node if node is not None and node in clients else names[ops[0].process % len(names)]
        process = _Process(workload._new_process_id(), name, clients[name], random.Random(0))
        for op in ops:
            await trio.sleep_until(start + op.time - first)
            level = op.consistency or "quorum"
            if op.f is OpF.READ:
                read = await workload._read(process, op.key, level)
                if read is not None and op.index in completion_of:
                    reads[completion_of[op.index]] = read
                continue
            read = reads.get(op.ctx) if op.ctx is not None else None
            if op.ctx is not None and read is None:
                continue
            token = op.value if isinstance(op.value, bytes) else None
            payload = token
            if op.f is OpF.ADD and token is not None:
                payload = _set_value(token, read)
            await workload._write(
                process, op.f, op.key, token, payload, read, level, read_first=op.read_first
            )

    async with trio.open_nursery() as nursery:
        for ops in plans.values():
            nursery.start_soon(run_process, ops)


def _set_value(token: bytes, read: _ReadResult | None) -> bytes:
    """A set-add's stored value: its own token first, then every token the read returned."""
    seen = sorted({t for value in read.values for t in value.split()}) if read else []
    return b" ".join([token, *seen])
