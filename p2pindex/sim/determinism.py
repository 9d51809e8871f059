"""Everything that makes a simulation a pure function of its seed, and the trace that proves it.

Three sources of nondeterminism remain once the node reads time, randomness and the network
only through injected seams:

1. **trio's scheduler.** Each batch of runnable tasks is reversed with probability 1/2 using a
   module-level ``random.Random`` (``trio._core._run._r``, trio 0.35). trio has a private
   switch, ``_ALLOW_DETERMINISTIC_SCHEDULING``, that its Hypothesis plugin turns on: each batch
   is then sorted by task creation order and shuffled with ``_r``. We turn that switch on and
   seed ``_r`` from the simulation seed, so scheduling is still varied *between* seeds (it
   explores interleavings) but identical for one seed. Deadline ties are broken by object id in
   trio's deadline heap, which would otherwise leak memory addresses into the order; the sort
   by creation order makes those ties harmless. These are private names, so
   :func:`seed_trio_scheduler` checks that they exist and fails loudly if a trio upgrade
   removes them (a test pins this).
2. **Hash randomisation.** Iterating a set of ``str`` or ``bytes`` depends on
   ``PYTHONHASHSEED``. It cannot be changed inside a running interpreter, so the ``simulate``
   command re-executes itself with ``PYTHONHASHSEED=0`` (:func:`reexec_with_fixed_hash_seed`).
3. **Random streams.** Every consumer gets its own ``random.Random`` derived from the seed
   and a label (:func:`derive_rng`), so adding a consumer does not shift the others' streams.
   Seeding with a string goes through SHA-512 in CPython, independent of the hash seed.

The :class:`Trace` is an ordered record of everything observable (deliveries, drops, faults,
client operations) with its virtual time, folded into a BLAKE2b hash as it happens.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import sys
from collections import deque
from typing import Final

import trio
import trio.testing

HASH_SEED_VARIABLE: Final = "PYTHONHASHSEED"
TRACE_TAIL: Final = 200
"""How many recent trace records to keep in memory for a failure report."""


class DeterminismUnavailable(RuntimeError):
    """The installed trio no longer has the private names deterministic scheduling needs."""


def derive_rng(seed: int, label: str) -> random.Random:
    """An independent random stream for one consumer (``label``) of a run with ``seed``."""
    return random.Random(f"p2pindex-sim:{seed}:{label}")


def derive_seed(seed: int, label: str) -> int:
    """A 63-bit integer seed for one consumer, for APIs that want an int rather than a Random."""
    return derive_rng(seed, label).getrandbits(63)


def seed_trio_scheduler(seed: int) -> None:
    """Make trio's batch ordering a function of ``seed`` (see the module docstring, item 1).

    Call it before ``trio.run``; it affects every later run in this process until called again.
    """
    run_module = getattr(getattr(trio, "_core", None), "_run", None)
    scheduler_rng = getattr(run_module, "_r", None)
    if run_module is None or not isinstance(scheduler_rng, random.Random):
        raise DeterminismUnavailable(
            f"trio {trio.__version__} has no trio._core._run._r; deterministic scheduling "
            "needs the trio version pinned in pyproject.toml"
        )
    if not hasattr(run_module, "_ALLOW_DETERMINISTIC_SCHEDULING"):
        raise DeterminismUnavailable(
            f"trio {trio.__version__} has no _ALLOW_DETERMINISTIC_SCHEDULING switch"
        )
    run_module._ALLOW_DETERMINISTIC_SCHEDULING = True
    scheduler_rng.seed(derive_seed(seed, "trio-scheduler"))


def hash_seed_is_fixed() -> bool:
    """True when string hashing (and so set iteration order) is the same in every process."""
    return os.environ.get(HASH_SEED_VARIABLE) == "0"


def reexec_with_fixed_hash_seed() -> None:
    """Replace this process with the same command line under ``PYTHONHASHSEED=0``.

    Does nothing when the hash seed is already fixed. Never returns otherwise.
    """
    if hash_seed_is_fixed():
        return
    env = dict(os.environ)
    env[HASH_SEED_VARIABLE] = "0"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


class Trace:
    """An ordered, hashed record of a run's observable events.

    Records are short text lines (virtual time first); message payloads are hashed in but not
    kept. ``hexdigest`` is the trace hash printed at the end of every run.
    """

    def __init__(self, *, keep: int = TRACE_TAIL) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self._tail: deque[str] = deque(maxlen=keep)
        self.count = 0

    def record(self, line: str, payload: bytes = b"") -> None:
        """Add one event; ``line`` should start with the virtual time it happened at."""
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if payload:
            self._hash.update(payload)
        self._tail.append(line)
        self.count += 1

    def event(self, kind: str, detail: str, payload: bytes = b"") -> None:
        """Record ``kind detail`` stamped with the current virtual time (inside trio.run)."""
        self.record(f"{trio.current_time():.6f} {kind} {detail}", payload)

    def at(self, now: float, kind: str, detail: str, payload: bytes = b"") -> None:
        """Record ``kind detail`` at virtual time ``now`` (for callers that already know it)."""
        self.record(f"{now:.6f} {kind} {detail}", payload)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def tail(self) -> list[str]:
        """The most recent records, oldest first (for a failure report)."""
        return list(self._tail)


EPOCH: Final = 1_750_000_000.0
"""Wall-clock seconds at virtual time 0: a fixed date, so wall times are the same every run."""


class SimWallClock:
    """A node's wall clock: virtual time plus a skew that faults can change.

    ``wall = EPOCH + offset + virtual_now * (1 + drift)``; a skew sets offset and drift for a
    while, a jump moves the offset for good. Nodes call the instance as ``wall_clock()``.
    """

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.drift = 0.0

    def __call__(self) -> float:
        return EPOCH + self.offset + trio.current_time() * (1.0 + self.drift)

    def jump(self, seconds: float) -> None:
        self.offset += seconds

    def skew(self, offset: float, drift: float) -> None:
        """Start a skew of ``offset`` seconds and ``drift`` (a rate, e.g. 0.001 = 1 ms/s)."""
        now = trio.current_time()
        self.offset += offset - now * (drift - self.drift)
        self.drift = drift

    def unskew(self, offset: float) -> None:
        """End a skew started with ``offset``: the clock loses the offset and runs at rate 1."""
        now = trio.current_time()
        self.offset += -offset + now * self.drift
        self.drift = 0.0


def tick_clock(tick: float) -> trio.testing.MockClock:
    """A MockClock whose virtual time advances in whole ticks.

    Like ``MockClock(autojump_threshold=0)`` it jumps ahead whenever every task is blocked,
    but to the next deadline *rounded up to a tick*, so every timer that falls due within
    one tick (node timers, timeouts, deliveries, disk commits) fires in the same scheduler
    pass. A simulation's cost is mostly scheduler passes, so this makes runs several times
    cheaper, at the price of a timer resolution of one tick. Timers due in the same tick
    fire in the (seeded) scheduling order, as timers of a coarse OS clock would.

    trio's run loop calls ``clock._autojump()`` and insists on a MockClock (which cannot be
    subclassed), so the rounding replaces that method on this one instance; a test checks
    that timers still land on tick boundaries after a trio upgrade.
    """
    if not tick > 0:
        raise ValueError("tick must be positive")
    clock = trio.testing.MockClock(autojump_threshold=0)

    def autojump() -> None:
        jump = trio.lowlevel.current_statistics().seconds_to_next_deadline
        if not 0 < jump < math.inf:
            return
        now = clock.current_time()
        target = max(math.ceil((now + jump) / tick - 1e-9) * tick, now + jump)
        clock.jump(target - now)

    clock._autojump = autojump  # type: ignore[method-assign]
    return clock
