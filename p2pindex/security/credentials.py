"""A client's credentials: its key, the capability the authority issued for it, and the
authority keys it checks nodes against — one file, so a client needs one option (or
``P2PINDEX_CREDENTIALS``) to talk to a secure cluster.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from p2pindex.errors import ConfigError
from p2pindex.security.certs import ClientCapability, TrustSet, verify_capability
from p2pindex.security.errors import CredentialRejected
from p2pindex.security.keys import write_file_atomically

CREDENTIALS_FORMAT = "p2pindex-credentials/1"
CREDENTIALS_ENV = "P2PINDEX_CREDENTIALS"


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    signing_key: SigningKey
    capability: bytes
    trust: TrustSet

    def check(self, now: float) -> ClientCapability:
        """The capability, if it is one this cluster's authority issued and still valid."""
        try:
            capability = verify_capability(self.capability, self.trust, now, "these credentials")
        except CredentialRejected as exc:
            raise ConfigError(f"unusable client credentials: {exc}") from None
        if capability.public_key != bytes(self.signing_key.verify_key):
            raise ConfigError("the capability was issued for another client key")
        return capability

    def to_json(self) -> str:
        doc = {
            "format": CREDENTIALS_FORMAT,
            "key": bytes(self.signing_key).hex(),
            "capability": base64.b64encode(self.capability).decode(),
            "trust": json.loads(self.trust.to_json()),
        }
        return json.dumps(doc, indent=2) + "\n"

    def save(self, path: Path) -> None:
        """Written with mode 0600: the file holds the client's private key."""
        write_file_atomically(path, self.to_json().encode(), 0o600)

    @classmethod
    def load(cls, path: Path | str) -> ClientCredentials:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read credentials {path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(
                f"{path} is not a p2pindex credentials file (it is not JSON); "
                "make one with `p2pindex token issue`"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != CREDENTIALS_FORMAT:
            raise ConfigError(f"{path} is not a p2pindex credentials file")
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by other users; run chmod 600 {path}")
        bad = f"{path} is not a valid credentials file"
        try:
            key = SigningKey(bytes.fromhex(doc["key"]))
            capability = base64.b64decode(doc["capability"], validate=True)
            trust = TrustSet.from_json(json.dumps(doc["trust"]), str(path))
        except KeyError as exc:
            raise ConfigError(f"{bad}: the {exc.args[0]!r} field is missing") from None
        except (ValueError, TypeError):
            raise ConfigError(
                f"{bad}: its key must be 32 bytes of hex and its capability base64"
            ) from None
        return cls(key, capability, trust)

    @classmethod
    def from_environment(cls) -> ClientCredentials | None:
        path = os.environ.get(CREDENTIALS_ENV)
        return cls.load(path) if path else None
