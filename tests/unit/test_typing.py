"""The public API is fully typed: ``mypy --strict`` on a program that uses every public
method of both clients finds no error and no ``Any`` that came from p2pindex."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import p2pindex

USAGE = Path(__file__).parent.parent / "typing" / "client_usage.py"
MYPY = ["-m", "mypy", "--strict", "--disallow-any-expr", "--follow-imports=silent"]
"""``--follow-imports=silent``: p2pindex's own modules give their types but are not
reported on; ``--disallow-any-expr``: any expression of type Any in the program fails."""


def mypy(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *MYPY, "--cache-dir", str(tmp_path / "cache"), *map(str, files)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )


def test_the_package_says_it_is_typed() -> None:
    assert (Path(p2pindex.__file__).parent / "py.typed").is_file()


def test_a_program_using_every_public_method_type_checks_without_any(tmp_path: Path) -> None:
    result = mypy(tmp_path, USAGE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_would_see_an_any_from_p2pindex(tmp_path: Path) -> None:
    """Negative control: the wire's free-form documents are Any, and the check says so."""
    leaky = tmp_path / "leaky.py"
    leaky.write_text(
        "from p2pindex.wire.messages import StatusReply\nstate = StatusReply({}).status['state']\n"
    )
    result = mypy(tmp_path, leaky)
    assert result.returncode == 1
    assert 'Expression has type "Any"' in result.stdout
