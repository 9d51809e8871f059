"""What security costs: QUORUM write throughput with security on, beside `--insecure`.

Starts the same 3-node local cluster twice per round — once secure (as LocalCluster runs
by default: an authority certifies every node; the client gets a write capability), once
with `--insecure` — and runs `p2pindex bench --write-only` against each, alternating the
order every round so drift on a shared machine does not favour one side. Prints each run
(throughput, errors, node CPU per write, client CPU per write) and the secure/insecure
throughput ratio.

    python simulations/security_cost.py [--duration 10] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from p2pindex.cli.bench import cpu_seconds
from p2pindex.cli.local_cluster import LocalCluster, wait_converged
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role
from p2pindex.security.credentials import CREDENTIALS_ENV


def node_cpu_seconds(cluster: LocalCluster) -> float:
    total = cpu_seconds([node.pid for node in cluster.nodes])
    if total is None:
        raise SystemExit("cannot read the nodes' CPU time from /proc")
    return total


def run(secure: bool, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="p2pindex-seccost-") as tmp:
        root = Path(tmp)
        cluster = LocalCluster(3, root / "nodes", insecure=not secure)
        with cluster:
            cluster.start()
            wait_converged(cluster)
            env = cluster.client_environment()
            if cluster.authority_dir is not None:
                credentials = root / "writer.cred"
                Authority.load(cluster.authority_dir).credentials(Role.WRITE).save(credentials)
                env[CREDENTIALS_ENV] = str(credentials)
            command = [
                sys.executable,
                "-m",
                "p2pindex",
                "bench",
                "--write-only",
                "--consistency",
                "quorum",
                "--duration",
                str(args.duration),
                "--concurrency",
                str(args.concurrency),
                "--format",
                "json",
            ]
            for address in cluster.addresses:
                command += ["--node", address]
            before = node_cpu_seconds(cluster)
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            after = node_cpu_seconds(cluster)
        if done.returncode:
            raise SystemExit(f"bench failed: {done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout)["run"]
        result["node_cpu_us_per_op"] = (after - before) * 1e6 / max(1, result["operations"])
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per bench run")
    parser.add_argument("--rounds", type=int, default=4, help="secure/insecure pairs")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    throughput: dict[bool, list[float]] = {True: [], False: []}
    for round_index in range(args.rounds):
        order = (False, True) if round_index % 2 == 0 else (True, False)
        for secure in order:
            result = run(secure, args)
            throughput[secure].append(result["throughput_ops_sec"])
            print(
                f"round {round_index + 1} {'secure  ' if secure else 'insecure'}: "
                f"{result['throughput_ops_sec']:,.0f} writes/s, {result['errors']} errors, "
                f"node CPU {result['node_cpu_us_per_op']:,.0f} us/write, "
                f"client CPU {result['client_cpu_us_per_op']:,.0f} us/write",
                flush=True,
            )
    secure = statistics.median(throughput[True])
    insecure = statistics.median(throughput[False])
    print(
        f"\nmedian QUORUM writes/s: secure {secure:,.0f}, insecure {insecure:,.0f} "
        f"-> secure is {secure / insecure:.0%} of insecure"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
