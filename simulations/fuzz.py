"""Fuzz every decoder that reads bytes from outside, and report what was tried and found.

    python simulations/fuzz.py --inputs 1000000 [--seed 1] [--crash-dir DIR]

The targets (tests/fuzz/targets.py) are the real decoders: frames and every message schema,
handshake messages, session records, SWIM datagrams (through a real SWIM core with a sealer
and claims) and push-pull payloads, contexts and records, certificates, capabilities and
revocation lists, credential and trust files, scenario files. Inputs are mutations of each
target's valid seeds: byte-level (flips, interesting bytes, inserts, deletes, splices,
truncations) and, for CBOR inputs, structural (a random node of the decoded value replaced by
a random value, re-encoded). An input whose outcome (the error type and the shape of its
message) is new joins the target's corpus, a cheap stand-in for coverage feedback.

A crash is any exception the target does not promise for bad input; a hang is an input that
takes longer than --hang-seconds. Each is written to --crash-dir (input bytes and traceback)
and becomes a regression test in tests/fuzz/test_regressions.py. Runs in one process.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import cbor2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.targets import Target, targets  # noqa: E402

INTERESTING = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x17",
    b"\x18",
    b"\x19",
    b"\x1a",
    b"\x1b",
    b"\x1f",
    b"\x5b",
    b"\x7b",
    b"\x9b",
    b"\xbb",
    b"\x9f",
    b"\xbf",
    b"\xd8\x1e",
    b"\xc1",
    b"\xfb",
    b"\xf9",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x7f\xff\xff\xff",
    b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x3b\xff\xff\xff\xff\xff\xff\xff\xff",
)
CORPUS_LIMIT = 400


class Hang(Exception):
    pass


def _alarm(_signum: int, _frame: object) -> None:
    raise Hang("input took too long")


# --- mutation ---------------------------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return rng.choice([0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**64), 2**53])
    if kind == 1:
        return rng.randrange(-1000, 1000)
    if kind == 2:
        return rng.randbytes(rng.choice([0, 1, 16, 32, 33, 64, rng.randrange(300)]))
    if kind == 3:
        return "".join(rng.choice("ab.+/\x00é\u20ac") for _ in range(rng.randrange(20)))
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5:
        return rng.choice([0.0, -1.5, math.inf, math.nan, 1e300])
    if kind == 6:
        return "n1"
    if kind == 7:
        return b""
    if kind in (8, 9):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 10:
        return {random_value(rng, 3): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return cbor2.CBORTag(rng.choice([0, 1, 2, 24, 258, 55799]), random_value(rng, depth + 1))


def _replace_node(value: Any, rng: random.Random) -> Any:
    """``value`` with one node (itself, or somewhere inside) changed."""
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = rng.randrange(len(value))
        copy = list(value)
        action = rng.randrange(6)
        if action == 0:
            del copy[index]
        elif action == 1:
            copy.insert(index, random_value(rng))
        elif action == 2:
            copy.append(copy[index])
        else:
            copy[index] = _replace_node(copy[index], rng)
        return copy
    if isinstance(value, dict) and value and rng.random() < 0.8:
        copy = dict(value)
        key = rng.choice(list(copy))
        action = rng.randrange(5)
        if action == 0:
            del copy[key]
        elif action == 1:
            copy[random_value(rng, 3)] = random_value(rng)
        else:
            copy[key] = _replace_node(copy[key], rng)
        return copy
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return value + rng.choice([-1, 1, 2**32, -(2**63), 2**64])
    if isinstance(value, bytes) and value and rng.random() < 0.5:
        return mutate_bytes(value, rng, [value])
    return random_value(rng)


def mutate_structure(data: bytes, rng: random.Random) -> bytes | None:
    """A structural mutation of ``data`` if it is CBOR (frames: of the payload)."""
    prefix = b""
    body = data
    if len(data) > 4 and int.from_bytes(data[:4], "big") == len(data) - 4:
        prefix, body = b"", data[4:]
    try:
        value = cbor2.loads(body)
    except Exception:
        return None
    try:
        out = cbor2.dumps(_replace_node(value, rng), canonical=rng.random() < 0.5)
    except Exception:
        return None
    if body is not data:
        prefix = len(out).to_bytes(4, "big")
    return prefix + out


def mutate_bytes(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(1 + int(rng.expovariate(1.0))):
        size = len(out)
        action = rng.randrange(9)
        position = rng.randrange(size + 1)
        if action == 0 and size:
            index = rng.randrange(size)
            out[index] ^= 1 << rng.randrange(8)
        elif action == 1 and size:
            out[rng.randrange(size)] = rng.randrange(256)
        elif action == 2:
            out[position:position] = rng.choice(INTERESTING)
        elif action == 3:
            out[position:position] = rng.randbytes(rng.randrange(1, 9))
        elif action == 4 and size:
            del out[position : position + rng.randrange(1, 17)]
        elif action == 5:
            del out[position:]
        elif action == 6 and size:
            start = rng.randrange(size)
            out[position:position] = out[start : start + rng.randrange(1, 33)]
        elif action == 7:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            out = out[:position] + other[cut:]
        elif size:
            chunk = rng.choice(INTERESTING)
            out[position : position + len(chunk)] = chunk
    return bytes(out)


def next_input(corpus: list[bytes], rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.04:
        return rng.randbytes(rng.randrange(64))
    base = rng.choice(corpus)
    if roll < 0.45:
        mutated = mutate_structure(base, rng)
        if mutated is not None:
            return mutated
    return mutate_bytes(base, rng, corpus)


_DIGITS = re.compile(r"\d+|'[^']*'|\"[^\"]*\"|b'[^']*'")


def outcome_of(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    return f"{type(exc).__name__}:{_DIGITS.sub('#', str(exc))[:60]}"


# --- the loop -------------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, target: Target, rng: random.Random) -> None:
        self.target = target
        self.rng = rng
        self.corpus = list(target.seeds) or [b""]
        self.seen: set[str] = set()
        self.tried = 0
        self.crashes: list[tuple[bytes, str]] = []
        self.hangs: list[bytes] = []

    def one(self, data: bytes, hang_seconds: float) -> None:
        self.tried += 1
        signal.setitimer(signal.ITIMER_REAL, hang_seconds)
        try:
            self.target.run(data)
            result: BaseException | None = None
        except Hang:
            self.hangs.append(data)
            return
        except self.target.expected as exc:
            result = exc
        except Exception:
            self.crashes.append((data, traceback.format_exc()))
            return
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        key = outcome_of(result)
        if key not in self.seen:
            self.seen.add(key)
            if len(self.corpus) < CORPUS_LIMIT:
                self.corpus.append(data)

    def step(self, hang_seconds: float) -> None:
        self.one(next_input(self.corpus, self.rng), hang_seconds)


def save(crash_dir: Path, name: str, index: int, data: bytes, detail: str) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"{name}-{index}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(detail)
    return path


def run(inputs: int, seed: int, hang_seconds: float, crash_dir: Path, report_every: float) -> int:
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(seed)
    fuzzers = [Fuzzer(target, random.Random(rng.getrandbits(64))) for target in targets()]
    for fuzzer in fuzzers:  # every seed once, as given
        for data in fuzzer.target.seeds:
            fuzzer.one(data, hang_seconds)
    start = last = time.perf_counter()
    total = sum(f.tried for f in fuzzers)
    while total < inputs:
        for fuzzer in fuzzers:
            for _ in range(50):
                fuzzer.step(hang_seconds)
        total += 50 * len(fuzzers)
        now = time.perf_counter()
        if now - last >= report_every:
            last = now
            crashes = sum(len(f.crashes) for f in fuzzers)
            print(
                f"  {total:>10,} inputs  {total / (now - start):>8,.0f}/s  crashes {crashes}",
                flush=True,
            )
    elapsed = time.perf_counter() - start
    print(f"{'target':<16}{'inputs':>12}{'corpus':>8}{'crashes':>9}{'hangs':>7}")
    found = 0
    for fuzzer in fuzzers:
        name = fuzzer.target.name
        print(
            f"{name:<16}{fuzzer.tried:>12,}{len(fuzzer.corpus):>8}"
            f"{len(fuzzer.crashes):>9}{len(fuzzer.hangs):>7}"
        )
        for index, (data, detail) in enumerate(fuzzer.crashes[:20]):
            path = save(crash_dir, name, index, data, detail)
            print(f"    crash: {path}: {detail.strip().splitlines()[-1]}")
        for index, data in enumerate(fuzzer.hangs[:20]):
            path = save(crash_dir, f"{name}-hang", index, data, "hang")
            print(f"    hang: {path}")
        found += len(fuzzer.crashes) + len(fuzzer.hangs)
    total = sum(f.tried for f in fuzzers)
    crashes = sum(len(f.crashes) for f in fuzzers)
    hangs = sum(len(f.hangs) for f in fuzzers)
    print(
        f"inputs tried {total:,} in {elapsed:.1f} s ({total / elapsed:,.0f} inputs/s); "
        f"crashes {crashes}, hangs {hangs}"
    )
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hang-seconds", type=float, default=2.0)
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--report-every", type=float, default=30.0)
    args = parser.parse_args(argv)
    return run(args.inputs, args.seed, args.hang_seconds, args.crash_dir, args.report_every)


if __name__ == "__main__":
    sys.exit(main())
