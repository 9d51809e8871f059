"""Port choice and argument checks of the local cluster used by dev, demo and bench."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import ClusterError, LocalCluster, free_ports, port_is_free


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(port_is_free("127.0.0.1", port) for port in ports)


def test_a_busy_base_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The next port may happen to be busy as well; the message lists every busy one.
        busy_ports = rf"port\(s\) ({port}|{port}, {port + 1}) on 127.0.0.1 are in use"
        with pytest.raises(ClusterError, match=busy_ports):
            LocalCluster(2, tmp_path, base_port=port)
    assert not any(tmp_path.iterdir())


def test_nodes_seed_each_other_and_n_fits_the_cluster(tmp_path: Path) -> None:
    single = LocalCluster(1, tmp_path)
    assert single.n_replicas == 1
    cluster = LocalCluster(3, tmp_path)
    assert cluster.n_replicas == 3
    command = cluster._command(cluster.nodes[0])
    assert command[1:4] == ["-m", "p2pindex", "serve"]
    seeds = [command[i + 1] for i, arg in enumerate(command) if arg == "--seed"]
    assert seeds == cluster.addresses[1:]


@pytest.mark.parametrize(("size", "base"), [(0, None), (2, 65535)])
def test_impossible_clusters_are_refused(tmp_path: Path, size: int, base: int | None) -> None:
    with pytest.raises(ValueError):
        LocalCluster(size, tmp_path, base_port=base)
