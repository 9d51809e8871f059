"""The layers of ARCHITECTURE.md hold: `lint-imports` keeps the contracts in pyproject.toml.

The negative control plants an upward import (core importing the node) in a copy of the
package and runs the same contracts over it, so a contract that could never break, or a
tool that stopped reading them, fails here too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_RUN_ON_COPY = """
import sys
# The editable install finds the package through a meta path finder that would win over
# sys.path; drop it so the copy under test is the one analysed.
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f)]
sys.path.insert(0, sys.argv[1])
import p2pindex
assert p2pindex.__file__.startswith(sys.argv[1]), p2pindex.__file__
from importlinter.cli import lint_imports_command
sys.argv = ["lint-imports", "--config", sys.argv[2], "--no-cache"]
lint_imports_command()
"""


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN_ON_COPY, str(package_parent), str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def copy_of_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "p2pindex", tmp_path / "p2pindex", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_the_import_contracts_are_kept(tmp_path: Path) -> None:
    result = lint_imports(copy_of_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_a_contract(tmp_path: Path) -> None:
    parent = copy_of_package(tmp_path)
    ring = parent / "p2pindex" / "core" / "ring.py"
    ring.write_text(ring.read_text() + "\nfrom p2pindex.node import node as _upward  # noqa\n")
    result = lint_imports(parent)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "p2pindex.core.ring -> p2pindex.node.node" in result.stdout


def test_the_client_may_not_import_node_internals(tmp_path: Path) -> None:
    parent = copy_of_package(tmp_path)
    routing = parent / "p2pindex" / "client" / "routing.py"
    routing.write_text(routing.read_text() + "\nfrom p2pindex.node import peers  # noqa\n")
    result = lint_imports(parent)
    assert result.returncode != 0
    assert "p2pindex.client.routing -> p2pindex.node.peers" in result.stdout


def test_the_package_names_the_client_lazily_and_completely() -> None:
    import p2pindex
    import p2pindex.client

    assert set(p2pindex.__dict__["_CLIENT_NAMES"]) == set(p2pindex.client.__all__)
    code = "import sys, p2pindex.types; print('p2pindex.client' in sys.modules)"
    lower = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert lower.stdout.strip() == "False"
