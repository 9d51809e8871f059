"""The open-files limit a node process needs for the connections it is configured to serve.

Many systems start processes with a soft limit of 1,024 descriptors, below the 4,096 client
and peer connections a node admits by default: past the limit ``accept`` fails and the node
can reach neither clients nor peers. Like Go's runtime, `serve` raises its soft limit up to
what its connection limits need (never past the hard limit, which only the administrator
can raise) and says so when that is not enough.
"""

from __future__ import annotations

import resource

from p2pindex.config import NodeConfig

RESERVE = 256
"""Descriptors besides connections: data files, the UDP socket, logs, outbound peer links."""


def open_files_needed(config: NodeConfig) -> int:
    admission = config.admission
    http = config.http.max_connections if config.http is not None else 0
    return admission.max_connections + admission.max_handshakes + http + RESERVE


def raise_open_files_limit(needed: int) -> tuple[int, int, str | None]:
    """Raise the soft RLIMIT_NOFILE towards ``needed``: (old soft, new soft, a warning if the
    hard limit stops it short)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:  # RLIM_INFINITY is -1: compare nothing with it
        return soft, soft, None
    ceiling = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    target = max(soft, ceiling)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    warning = None
    if target < needed:
        warning = (
            f"the open-files limit is {target} (the hard limit), but the connection limits "
            f"need about {needed} (admission.max_connections + admission.max_handshakes + "
            f"http.max_connections + {RESERVE}): raise the hard limit (`ulimit -Hn`, systemd "
            "LimitNOFILE=) or lower admission.max_connections, or connections will be refused "
            "when descriptors run out"
        )
    return soft, target, warning
