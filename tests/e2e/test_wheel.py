"""The package as a user installs it: a wheel built from this tree, in a fresh virtual
environment, carries its scenarios and its type marker, and its command works."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.stem for p in (ROOT / "p2pindex" / "sim" / "scenarios").glob("*.toml"))


def run(*command: str | Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P2PINDEX_", "PYTHON"))}
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a fresh venv holding the wheel and its dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    built = run(
        sys.executable, "-m", "pip", "wheel", ROOT, "-w", root, "--no-deps", "-q",
        cwd=root, timeout=180,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = root.glob("p2pindex-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "p2pindex/py.typed" in names
    assert {f"p2pindex/sim/scenarios/{name}.toml" for name in SCENARIOS} <= set(names)
    venv = root / "venv"
    made = run(sys.executable, "-m", "venv", venv, cwd=root, timeout=120)
    assert made.returncode == 0, made.stderr
    pip = run(venv / "bin" / "pip", "install", "-q", wheel, cwd=root, timeout=300)
    assert pip.returncode == 0, pip.stderr
    return venv / "bin"


def test_simulate_list_works_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """Run far from the repository, so only the installed package can supply scenarios."""
    where = run(installed / "python", "-c", "import p2pindex; print(p2pindex.__file__)",
                cwd=tmp_path, timeout=60)  # fmt: skip
    assert where.stdout.startswith(str(installed.parent)), where.stdout
    listed = run(installed / "p2pindex", "simulate", "--list", cwd=tmp_path, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == SCENARIOS


def test_demo_exits_0_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    demo = run(installed / "p2pindex", "demo", cwd=tmp_path, timeout=180)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert demo.stdout.rstrip().endswith("done")
