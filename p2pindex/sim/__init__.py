"""Deterministic simulation: real nodes on a simulated network, clock and disk, one seed.

Modules, from the bottom up:

* ``determinism`` — seeds, trio's scheduler switch, the trace hash, virtual wall clocks;
* ``network`` — ``SimNetwork`` and the ``SimTransport`` each node uses;
* ``disk`` — ``SimDisk``: commit latency, crash modes, disk-full and fsync faults;
* ``faults`` — fault schedules as data: validation, generation from a seed, the driver;
* ``scenario`` — scenario files (TOML/JSON) and command-line overrides;
* ``history``, ``workloads``, ``checkers`` — what clients did and what must hold;
* ``plan`` — a scenario and a seed become a validated plan, before anything runs;
* ``cluster`` — the simulated machines of a cluster run and the faults applied to them;
* ``runner`` — the phases of one cluster run (form, workload with faults, heal, quiesce);
* ``membership_run`` — the SWIM-only engine built on ``swim_sim``;
* ``recording``, ``outputs``, ``timeline`` — fault events, results and the files a run
  leaves (the SVG picture of a run among them).

Nothing is imported here, so ``import p2pindex.sim.faults`` stays light.
"""
