"""Deterministic simulation: real nodes on a simulated network, clock and disk, one seed.

Modules, from the bottom up:

* ``determinism`` — seeds, trio's scheduler switch, the trace hash, virtual wall clocks;
* ``network`` — ``SimNetwork`` and the ``SimTransport`` each node uses;
* ``disk`` — ``SimDisk``: commit latency, crash modes, disk-full and fsync faults;
* ``faults`` — fault schedules as data: validation, generation from a seed, the driver;
* ``scenario`` — scenario files (TOML/JSON) and command-line overrides;
* ``history``, ``workloads``, ``checkers`` — what clients did and what must hold;
* ``runner`` — one run end to end (cluster engine, and the SWIM-only membership engine
  built on ``swim_sim``); ``timeline`` — the SVG picture of a run.

Nothing is imported here, so ``import p2pindex.sim.faults`` stays light.
"""
