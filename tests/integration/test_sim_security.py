"""Cluster simulations run the nodes secure unless told ``insecure``.

Every simulated machine holds a certificate from the run's in-memory authority and each node
process runs the production SecurityManager, so handshakes, sealed sessions and signed SWIM
datagrams are exercised under the simulator's faults; the simulated clients authenticate with
issued credentials, as real ones do. These tests look inside a run: an outsider without
credentials is refused (and counted), a datagram that is not sealed is dropped (and counted),
and secure runs stay a function of their seed.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from p2pindex.client.async_client import AsyncClient
from p2pindex.errors import P2PIndexError, PermissionDenied
from p2pindex.sim import runner
from p2pindex.sim.plan import plan_run
from p2pindex.sim.runner import Simulation, run_simulation
from p2pindex.sim.scenario import Scenario, scenario_from_dict
from p2pindex.types import Address

QUIET = {
    "name": "quiet",
    "nodes": 3,
    "replicas": 3,
    "duration": 8.0,
    "quiesce": 4.0,
    "faults": {"count": 0},
    "workload": {"processes": 2, "think": 0.3},
    "checks": {"convergence_bound": 4.0},
}
FAULTY = {
    "name": "faulty",
    "nodes": 3,
    "replicas": 3,
    "duration": 25.0,
    "quiesce": 12.0,
    "faults": {
        "count": 8,
        "kinds": ["partition", "crash", "pause", "loss", "duplicate", "clock_skew", "slow"],
    },
    "workload": {"processes": 3, "think": 0.3},
    "checks": {"convergence_bound": 12.0},
}


def scenario(document: dict[str, Any], *, insecure: bool = False) -> Scenario:
    return scenario_from_dict(document).with_overrides(insecure=insecure)


def probe(monkeypatch: pytest.MonkeyPatch, plan_scenario: Scenario) -> dict[str, Any]:
    """Run ``plan_scenario`` with an outsider that, once the cluster has formed, sends a
    plain (unauthenticated) request and an unsealed datagram to n1; what happened."""
    seen: dict[str, Any] = {}

    class Probed(Simulation):
        async def _run_phase(self, clients: dict[str, AsyncClient]) -> None:
            assert self.network is not None and self.cluster is not None
            n1 = self.cluster.slots["n1"]
            assert n1.node is not None
            seen["security"] = [slot.node.security for slot in self.cluster.up() if slot.node]
            before = n1.node.stats.counters()
            outsider = self.network.transport_for(Address("mallory", 9999))
            await outsider.send_datagram(n1.address, b"\x01" + bytes(200))
            try:
                async with AsyncClient([n1.address], timeout=1.0, transport=outsider) as plain:
                    await plain.put(b"mallory", b"was here")
                    seen["plain_put"] = "ok"
            except P2PIndexError as exc:
                seen["plain_put"] = exc
            await trio.sleep(1.0)
            after = n1.node.stats.counters()
            seen["counted"] = {
                name: after[name] - before.get(name, 0)
                for name in after
                if name.startswith("security.") and after[name] != before.get(name, 0)
            }
            seen["totals"] = after
            await super()._run_phase(clients)

    monkeypatch.setattr(runner, "Simulation", Probed)
    seen["result"] = run_simulation(plan_run(plan_scenario, 5))
    return seen


def test_a_simulated_cluster_is_secure_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = probe(monkeypatch, scenario(QUIET))
    result = seen["result"]
    assert result.passed, result.report
    assert result.ok > 10  # the workload's clients authenticated with issued credentials
    assert seen["security"] and all(security is not None for security in seen["security"])
    assert isinstance(seen["plain_put"], PermissionDenied)
    assert seen["counted"].get("security.handshake.failed.not_secure", 0) >= 1
    assert seen["counted"].get("security.swim.malformed", 0) == 1
    totals = seen["totals"]
    assert totals["security.handshake.accepted.node"] > 0
    assert totals["security.handshake.accepted.client"] > 0
    assert totals["security.swim.accepted"] > 0  # signed datagrams flow and are checked


def test_insecure_switches_security_off(monkeypatch: pytest.MonkeyPatch) -> None:
    insecure = scenario(QUIET, insecure=True)
    assert not insecure.secure and insecure.options()["security"] == "off"
    seen = probe(monkeypatch, insecure)
    assert seen["result"].passed, seen["result"].report
    assert seen["security"] and all(security is None for security in seen["security"])
    assert seen["plain_put"] == "ok"
    assert not seen["counted"]


def test_secure_runs_under_faults_are_a_function_of_their_seed() -> None:
    """Handshake keys, nonces, certificates and signatures all come from the seed: the
    bytes on the simulated wire, which the trace hashes, repeat exactly."""
    secure = scenario(FAULTY)
    assert secure.secure and secure.options()["security"] == "on"
    first = run_simulation(plan_run(secure, 21))
    second = run_simulation(plan_run(secure, 21))
    assert first.passed, first.report
    assert first.trace_hash == second.trace_hash and first.ops == second.ops > 50
    insecure = run_simulation(plan_run(scenario(FAULTY, insecure=True), 21))
    assert insecure.trace_hash != first.trace_hash  # sealed bytes differ from plain ones


DISTANT_CLOCKS = {
    "name": "distant-clocks",
    "nodes": 3,
    "replicas": 3,
    "duration": 40.0,
    "quiesce": 10.0,
    "faults": {
        "schedule": [
            # n1's clock ends up over four minutes behind the others (a broken NTP) ...
            {"at": 2.0, "kind": "clock_jump", "nodes": ["n1"], "offset": -250.0},
            # ... then each side restarts once, forgetting the windows it kept
            {"at": 8.0, "kind": "crash", "nodes": ["n2"], "duration": 3.0},
            {"at": 20.0, "kind": "crash", "nodes": ["n1"], "duration": 3.0},
        ]
    },
    "workload": {"processes": 2, "think": 0.3},
    "checks": {"convergence_bound": 10.0},
}


def test_members_whose_clocks_are_minutes_apart_still_hear_each_other() -> None:
    """delete-heavy seed 1: a restarted receiver judges a sender's first datagram by the
    clocks, so a member over MAX_CLOCK_SKEW away was mute to it and declared dead though
    up. The push-pull its refusal starts carries both sequence floors over an
    authenticated session and opens both windows."""
    result = run_simulation(plan_run(scenario(DISTANT_CLOCKS), 3))
    assert result.violations == [], result.violations
