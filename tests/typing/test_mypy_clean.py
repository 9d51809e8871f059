"""The package type-checks: ``mypy p2pindex``, run as a developer runs it (from the project
root, so the project's configuration applies), reports no error.

An annotation that stops saying the truth fails here rather than piling up unnoticed; a
cold run (a fresh cache) takes a few seconds. Skipped where mypy is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (pip install -e '.[test]')",
)


def test_mypy_reports_no_error_in_the_package(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "p2pindex"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout, result.stdout + result.stderr
