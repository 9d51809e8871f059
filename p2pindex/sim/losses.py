"""What a crash destroyed for good, in the workload's tokens: the runner's note to the checkers.

A write acknowledged at consistency ONE lives on one node until replication spreads it; if
that node's disk is wiped first, the write is gone, by design. The checkers judge from the
history alone, so the runner writes down, for every crash, which tokens of each key the
node had committed and lost, and which of those no disk held any more (``CopyLoss``).
Records in flight are not counted: nothing acknowledged them, so a node that did (planted
``ack-before-commit``, ``ack-failed-commit``) is still caught.
"""

from __future__ import annotations

from collections.abc import Iterable

from p2pindex.core import versions
from p2pindex.sim.disk import SimDisk
from p2pindex.sim.history import CopyLoss


def record_tokens(record: bytes | None) -> frozenset[bytes]:
    """Every token of every live value in ``record`` (workload values are ASCII words)."""
    if record is None:
        return frozenset()
    try:
        obj = versions.decode_object(record)
    except ValueError:
        return frozenset()
    return frozenset(token for value in obj.values for token in value.split())


def copy_losses(
    time: float,
    node: str,
    before: dict[bytes, bytes],
    crashed: SimDisk | None,
    disks: Iterable[SimDisk],
    *,
    undeliverable_hints: str | None = None,
) -> list[CopyLoss]:
    """The losses of ``crashed`` (``before``: its durable records before the crash), each
    key's lost tokens split by whether any disk in ``disks`` still holds them.

    ``crashed=None`` is a node removed from the cluster: every record it held is lost to
    the cluster, kept or not, and hints meant for it (``undeliverable_hints``, its node id)
    will never be delivered, so they hold nothing either."""
    losses: list[CopyLoss] = []
    disks = list(disks)
    hinted: dict[bytes, set[bytes]] | None = None
    for key, record in before.items():
        now = None if crashed is None else crashed.image.get(key)
        if now == record:
            continue
        lost = record_tokens(record) - record_tokens(now)
        if not lost:
            continue
        if hinted is None:
            hinted = _hinted_tokens(disks, undeliverable_hints)
        held = set(hinted.get(key, ()))
        for disk in disks:
            held |= record_tokens(disk.image.get(key))
        gone = lost - held
        losses.append(
            CopyLoss(
                time,
                node,
                key.decode("utf-8", "backslashreplace"),
                tuple(sorted(lost)),
                tuple(sorted(gone)),
            )
        )
    return losses


def _hinted_tokens(disks: list[SimDisk], skip_target: str | None) -> dict[bytes, set[bytes]]:
    """Tokens held in hints, by key: a fallback delivers them later."""
    hinted: dict[bytes, set[bytes]] = {}
    for disk in disks:
        image = disk.image
        for backlog in image.hint_backlog():
            if backlog.target == skip_target:
                continue
            for hint in image.hints_for(backlog.target, backlog.count):
                hinted.setdefault(hint.key, set()).update(record_tokens(hint.record))
    return hinted
