"""Entry script for the real-process chaos run (what `.ci/run` calls when it is root).

    python simulations/chaos_run.py --duration 60 [--seed N] [--nodes 5] [--workdir DIR]

The same as ``python -m p2pindex.chaos``: five node processes in a private network
namespace, a fault every few seconds, every checker at the end; exits non-zero on a
violation (1), on missing requirements (2) or when the cluster cannot run (3).
"""

from __future__ import annotations

import sys

from p2pindex.chaos import main

if __name__ == "__main__":
    sys.exit(main())
