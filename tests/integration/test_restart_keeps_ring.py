"""A restarted node keeps the members that are down in its ring (regression, seed 1 lost
acknowledged writes before the node restored its saved members)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_restarts_while_members_are_down_lose_no_acknowledged_write(tmp_path: Path) -> None:
    scenario = ROOT / "p2pindex" / "sim" / "scenarios" / "restart-with-members-down.toml"
    args = [sys.executable, "-m", "p2pindex", "simulate", str(scenario), "--seed", "1"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    done = subprocess.run(
        [*args, "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    assert "result            PASS" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0
