"""`p2pindex demo` runs its whole story against real processes and exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_to_the_end() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pindex", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            # SIGTERM lets the demo stop the nodes it started, by their pids.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    for step in ("1. Starting", "2. Writes", "3. Node 3 crashes", "4. Two clients", "5. Status"):
        assert step in out
    assert "security is on" in out
    assert "a client without credentials is refused: PermissionDenied" in out
    assert "security.handshake.accepted.client" in out
    assert "ALL    put city='rome' -> Unavailable" in out
    assert "2 siblings" in out
    assert "(resolved)" in out
    assert out.rstrip().endswith("done")
