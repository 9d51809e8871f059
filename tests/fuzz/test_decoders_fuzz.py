"""Short fuzz runs of every decoder that reads bytes from outside (the long run is
``simulations/fuzz.py``): random and mutated inputs raise only the errors each decoder
promises for bad input."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import Target, targets

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "simulations"))
import contextlib

import fuzz

TARGETS = {target.name: target for target in targets()}


def check(target: Target, data: bytes) -> None:
    with contextlib.suppress(target.expected):
        target.run(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_and_mutated_inputs_raise_only_the_promised_errors(
    name: str, data: st.DataObject
) -> None:
    target = TARGETS[name]
    seed = data.draw(st.sampled_from(target.seeds))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    raw = data.draw(st.binary(max_size=64))
    check(target, raw)
    check(target, fuzz.mutate_bytes(seed, rng, list(target.seeds)))
    structured = fuzz.mutate_structure(seed, rng)
    if structured is not None:
        check(target, structured)


def test_the_mutating_fuzzer_finds_nothing_in_a_short_run() -> None:
    assert (
        fuzz.run(6000, seed=3, hang_seconds=5.0, crash_dir=Path("/nonexistent"), report_every=1e9)
        == 0
    )


def test_the_fuzzer_reports_a_crash_it_is_shown(tmp_path: Path) -> None:
    """Negative control: a decoder that fails in an unpromised way is caught and saved."""

    def fragile(data: bytes) -> None:
        if len(data) > 3:
            raise KeyError("boom")

    fuzzer = fuzz.Fuzzer(Target("fragile", fragile, (ValueError,), (b"abcd",)), random.Random(1))
    fuzzer.one(b"abcd", 5.0)
    assert len(fuzzer.crashes) == 1 and "KeyError" in fuzzer.crashes[0][1]
    assert fuzz.save(tmp_path, "fragile", 0, b"abcd", "x").read_bytes() == b"abcd"
