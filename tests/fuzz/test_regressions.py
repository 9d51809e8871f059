"""Inputs that once broke a decoder or what follows it, kept as regression tests (the fuzzer
in simulations/fuzz.py writes what it finds to its crash directory; each goes here)."""

from __future__ import annotations

import contextlib

import pytest

from p2pindex.core.versions import MAX_COUNTER, VersionVector, encode_context
from tests.fuzz.targets import targets

TARGETS = {target.name: target for target in targets()}

REGRESSIONS = [
    # Issue 15: a context naming a counter at the top of the range made the next update
    # raise OverflowError (answered internal_error, and the key was wedged for good).
    ("context", encode_context(VersionVector({"n1.e1": MAX_COUNTER}))),
    ("context", encode_context(VersionVector({"n1.e1": MAX_COUNTER, "n1.e1+": MAX_COUNTER}))),
]


@pytest.mark.parametrize(("name", "data"), REGRESSIONS)
def test_a_once_breaking_input_gets_only_the_promised_errors(name: str, data: bytes) -> None:
    target = TARGETS[name]
    with contextlib.suppress(target.expected):
        target.run(data)
