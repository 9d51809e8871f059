"""The chaos run's convergence bound: replicas are sampled once, after the quiesce, so the
bound it checks against must reach past the quiesce, or every key of a long quiesce fails."""

from __future__ import annotations

import pytest

from p2pindex.chaos import SHAPES, parse_args


def test_the_default_bound_is_a_minute() -> None:
    assert parse_args([]).agreement_bound == 60.0


def test_a_long_quiesce_stretches_the_default_bound_past_the_sample() -> None:
    options = parse_args(["--quiesce", "120"])
    assert options.agreement_bound == 150.0


def test_a_bound_given_is_kept() -> None:
    assert parse_args(["--quiesce", "120", "--convergence-bound", "200"]).agreement_bound == 200


def test_a_bound_the_sample_cannot_meet_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--quiesce", "120", "--convergence-bound", "60"])
    assert "not past --quiesce 120" in capsys.readouterr().err


def test_every_fault_kind_by_default_and_a_subset_when_asked() -> None:
    assert parse_args([]).faults == SHAPES
    assert parse_args(["--faults", "lossy, kill,lossy"]).faults == ("lossy", "kill")


@pytest.mark.parametrize(
    ("given", "said"), [("lossy,flood", "unknown kind flood"), (",", "no kind")]
)
def test_an_unknown_fault_kind_is_refused_naming_the_kinds(
    capsys: pytest.CaptureFixture[str], given: str, said: str
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--faults", given])
    err = capsys.readouterr().err
    assert said in err and "choose from halves" in err
