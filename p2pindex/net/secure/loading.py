"""Loading a node's SecurityManager from its data directory at start-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from nacl.signing import SigningKey

from p2pindex.errors import ConfigError
from p2pindex.net.secure.manager import SecurityManager
from p2pindex.security.audit import AuditLog
from p2pindex.security.certs import TrustSet, node_id_of, verify_revocations
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.files import CERT_FILE, TRUST_FILE, SecurityFiles

log = logging.getLogger(__name__)


def load_manager(
    files: SecurityFiles,
    signing_key: SigningKey,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> SecurityManager:
    """Load trust, certificate and saved revocations; ConfigError says what to do."""
    node_id = node_id_of(bytes(signing_key.verify_key))
    if not files.trust.exists():
        raise ConfigError(
            f"no trust file at {files.trust}: create a cluster authority with "
            "`p2pindex cluster init --dir AUTHORITY` and certify this node with "
            "`p2pindex cluster certify --authority AUTHORITY --data-dir DATA_DIR` "
            "(or run with --insecure for tests and benchmarks)"
        )
    if not files.certificate.exists():
        raise ConfigError(
            f"no certificate at {files.certificate} for node {node_id}: run "
            "`p2pindex cluster certify --authority AUTHORITY --data-dir DATA_DIR`"
        )
    trust = TrustSet.load(files.trust)
    certificate = files.certificate.read_bytes()
    saved = None
    if files.revocations is not None and files.revocations.exists():
        saved = files.revocations.read_bytes()
        try:
            verify_revocations(saved, trust, "the saved list")
        except CredentialRejected as exc:
            log.warning("ignoring %s: %s", files.revocations, exc)
            saved = None
    return SecurityManager(
        signing_key,
        certificate,
        trust,
        revocations=saved,
        wall_clock=wall_clock,
        audit=AuditLog(files.audit, wall_clock),
        files=files,
    )


def node_security(
    data_dir: Path,
    signing_key: SigningKey,
    *,
    insecure: bool = False,
    trust: Path | None = None,
    certificate: Path | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> SecurityManager | None:
    """The security a node process runs with: None only when told ``insecure``.

    A node that silently ran open because a file was missing would be a hole nobody
    notices, so without its files it refuses to start and says what to run.
    """
    if insecure:
        log.warning(
            "INSECURE MODE (--insecure): no authentication, no encryption, anyone can join "
            "or write. Only for tests and benchmarks."
        )
        return None
    files = SecurityFiles.for_data_dir(data_dir, trust, certificate)
    if trust is None and certificate is None and not files.present():
        raise ConfigError(
            f"security is on and {data_dir} holds no {CERT_FILE} or {TRUST_FILE}: certify this "
            f"node with `p2pindex cluster certify --authority AUTHORITY --data-dir {data_dir}` "
            "(AUTHORITY made once by `p2pindex cluster init --dir AUTHORITY`), or pass "
            "--insecure for tests and benchmarks"
        )
    return load_manager(files, signing_key, wall_clock=wall_clock)
