"""Port choice, argument checks and provisioning of the local cluster used by dev, demo and
bench."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import (
    ClusterError,
    LocalCluster,
    credentials_in_environment,
    free_ports,
    port_is_free,
)
from p2pindex.security.authority import Authority
from p2pindex.security.certs import Role, TrustSet, verify_node_certificate
from p2pindex.security.credentials import CREDENTIALS_ENV, ClientCredentials
from p2pindex.security.keys import read_private_key


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


def test_every_node_gets_the_same_seed_list_and_n_fits_the_cluster(tmp_path: Path) -> None:
    single = LocalCluster(1, tmp_path)
    assert single.n_replicas == 1
    cluster = LocalCluster(3, tmp_path)
    assert cluster.n_replicas == 3
    for node in cluster.nodes:
        command = cluster._command(node)
        assert command[1:4] == ["-m", "p2pindex", "serve"]
        seeds = [command[i + 1] for i, arg in enumerate(command) if arg == "--seed"]
        assert seeds == cluster.addresses


@pytest.mark.parametrize(("size", "base"), [(0, None), (2, 65535)])
def test_impossible_clusters_are_refused(tmp_path: Path, size: int, base: int | None) -> None:
    with pytest.raises(ValueError):
        LocalCluster(size, tmp_path, base_port=base)


def test_a_secure_cluster_certifies_each_node_before_it_starts(tmp_path: Path) -> None:
    cluster = LocalCluster(2, tmp_path)
    assert "--insecure" not in cluster._command(cluster.nodes[0])
    assert cluster.credentials == tmp_path / "admin.cred"
    for node in cluster.nodes:
        cluster._provision(node)
    authority = Authority.load(tmp_path / "authority")
    for node in cluster.nodes:
        key = read_private_key(node.data_dir / "node.key")
        certificate = verify_node_certificate(
            (node.data_dir / "node.cert").read_bytes(), authority.trust, time.time(), "test"
        )
        assert certificate.public_key == bytes(key.verify_key)
        assert TrustSet.load(node.data_dir / "cluster.trust") == authority.trust
    admin = ClientCredentials.load(tmp_path / "admin.cred")
    assert admin.check(time.time()).role is Role.ADMIN
    assert (tmp_path / "admin.cred").stat().st_mode & 0o777 == 0o600
    env = cluster.client_environment()
    assert env[CREDENTIALS_ENV] == str(tmp_path / "admin.cred")


def test_restarts_reuse_the_key_and_credentials_follow_a_rotation(tmp_path: Path) -> None:
    cluster = LocalCluster(1, tmp_path / "root", authority=tmp_path / "ca")
    node = cluster.nodes[0]
    cluster._provision(node)
    key = (node.data_dir / "node.key").read_bytes()
    first = (tmp_path / "root" / "admin.cred").read_bytes()
    cluster._provision(node)
    assert (node.data_dir / "node.key").read_bytes() == key
    assert (tmp_path / "root" / "admin.cred").read_bytes() == first
    rotated = Authority.load(tmp_path / "ca").rotate()
    cluster._provision(node)
    renewed = ClientCredentials.load(tmp_path / "root" / "admin.cred")
    assert renewed.trust == rotated.trust
    assert renewed.check(time.time()).role is Role.ADMIN
    assert (node.data_dir / "node.key").read_bytes() == key
    assert not (tmp_path / "root" / "authority").exists()


def test_an_insecure_cluster_says_so_and_has_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CREDENTIALS_ENV, "/elsewhere.cred")
    cluster = LocalCluster(2, tmp_path, insecure=True)
    assert "--insecure" in cluster._command(cluster.nodes[1])
    assert cluster.credentials is None and cluster.authority_dir is None
    cluster._provision(cluster.nodes[0])
    assert not any(tmp_path.iterdir())
    assert CREDENTIALS_ENV not in cluster.client_environment()
    with credentials_in_environment(None):
        assert CREDENTIALS_ENV not in os.environ
    with credentials_in_environment(tmp_path / "x.cred"):
        assert os.environ[CREDENTIALS_ENV] == str(tmp_path / "x.cred")
    assert os.environ[CREDENTIALS_ENV] == "/elsewhere.cred"


@pytest.mark.parametrize(
    "options",
    [{"extra_args": ("--insecure",)}, {"insecure": True, "authority": Path("ca")}],
)
def test_contradictory_security_options_are_refused(tmp_path: Path, options: dict) -> None:
    with pytest.raises(ValueError):
        LocalCluster(1, tmp_path, **options)
