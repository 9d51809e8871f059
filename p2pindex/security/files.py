"""Where a node's security material lives, and loading it at start-up.

A data directory holds ``node.key`` (created on first start), ``node.cert`` and
``cluster.trust`` (written by `p2pindex cluster certify`), ``revocations.cbor`` (the latest
list the node adopted) and ``audit.log``. A node needs the certificate and the trust file
to start, unless it is told ``--insecure``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from p2pindex.security.audit import AUDIT_FILE

log = logging.getLogger(__name__)

TRUST_FILE = "cluster.trust"
CERT_FILE = "node.cert"
REVOCATIONS_FILE = "revocations.cbor"


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityFiles:
    """Where a node's security material lives (reloaded when it changes)."""

    trust: Path
    certificate: Path
    revocations: Path | None = None
    audit: Path | None = None

    @classmethod
    def for_data_dir(
        cls, data_dir: Path, trust: Path | None = None, certificate: Path | None = None
    ) -> SecurityFiles:
        if trust is not None and trust.is_dir():
            trust = trust / TRUST_FILE
        return cls(
            trust or data_dir / TRUST_FILE,
            certificate or data_dir / CERT_FILE,
            data_dir / REVOCATIONS_FILE,
            data_dir / AUDIT_FILE,
        )

    def present(self) -> bool:
        return self.trust.exists() or self.certificate.exists()
