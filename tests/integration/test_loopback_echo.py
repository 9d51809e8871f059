"""simulations/loopback_echo.py, the machine-speed yardstick the README's figures cite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "simulations" / "loopback_echo.py"


def test_it_reports_round_trips_latency_and_server_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--round-trips", "300", "--runs", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    runs = re.findall(
        r"^run \d: ([\d,]+) round trips/s, median (\d+) us, server CPU (\d+) us per round trip$",
        done.stdout,
        re.MULTILINE,
    )
    assert len(runs) == 2
    assert all(int(rate.replace(",", "")) > 0 for rate, _median, _cpu in runs)


def test_bad_counts_are_refused_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "0"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr


def test_the_echo_server_exits_when_its_parent_goes_away() -> None:
    server = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert int(server.stdout.readline()) > 0
        assert server.stdin is not None
        server.stdin.close()
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
