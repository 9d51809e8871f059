"""The audit log: one JSON line per refusal and per admin operation, append-only.

Counters say how often something happened; the audit log says who and what, for the
operator who has to decide whether it was an attack or a misconfigured client. Lines are
rate-limited (a flood of bad input must not become a flood of disk writes) and a line after a
burst says how many were left out, so the counters and the log never silently disagree.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.log"
BURST = 200
RATE = 50.0
"""Lines per second sustained after a burst of ``BURST``."""


class AuditLog:
    """Appends to ``path`` (created 0600) or, with ``path=None``, keeps lines in memory."""

    def __init__(self, path: Path | None, wall_clock: Callable[[], float]) -> None:
        self.path = path
        self._wall_clock = wall_clock
        self.lines: list[dict[str, object]] = []
        """Lines written, when kept in memory (tests); empty for a file-backed log."""
        self._tokens = float(BURST)
        self._refilled = wall_clock()
        self.suppressed = 0
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, event: str, **fields: object) -> None:
        now = self._wall_clock()
        self._tokens = min(float(BURST), self._tokens + (now - self._refilled) * RATE)
        self._refilled = now
        if self._tokens < 1:
            self.suppressed += 1
            return
        self._tokens -= 1
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **fields,
        }
        if self.suppressed:
            line["suppressed_before"] = self.suppressed
            self.suppressed = 0
        if self._fd is None:
            self.lines.append(line)
            return
        try:
            os.write(self._fd, (json.dumps(line, default=str) + "\n").encode())
        except OSError as exc:
            log.error("cannot write the audit log %s: %s", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
