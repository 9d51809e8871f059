"""A node's identity: an Ed25519 key kept in its data directory, and the id derived from it.

The id is derived from the public key so that it cannot be chosen freely and stays the same
across restarts and address changes (SWIM recognises a restarted node by it).
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from p2pindex.errors import ConfigError

KEY_FILE = "node.key"


def node_id_for(public_key: bytes) -> str:
    return hashlib.blake2b(public_key, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    signing_key: SigningKey
    public_key: bytes = field(init=False)
    node_id: str = field(init=False)
    """Derived once: the id is looked up on every message a node handles."""

    def __post_init__(self) -> None:
        public_key = bytes(self.signing_key.verify_key)
        object.__setattr__(self, "public_key", public_key)
        object.__setattr__(self, "node_id", node_id_for(public_key))

    @classmethod
    def generate(cls, rng: random.Random | None = None) -> NodeIdentity:
        """A fresh identity; deterministic when ``rng`` is given (simulation)."""
        seed = rng.randbytes(32) if rng is not None else os.urandom(32)
        return cls(SigningKey(seed))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeIdentity:
        """Read ``data_dir/node.key``, creating it (mode 0600) on first start."""
        path = data_dir / KEY_FILE
        if path.exists():
            seed = path.read_bytes()
            if len(seed) != 32:
                raise ConfigError(f"{path} is not a node key (expected 32 bytes, got {len(seed)})")
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:  # as client credentials are: a readable key lets others be us
                raise ConfigError(
                    f"node key {path} is readable by other users (mode {mode:o}); "
                    f"run chmod 600 {path}"
                )
            return cls(SigningKey(seed))
        identity = cls.generate()
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(bytes(identity.signing_key))
            file.flush()
            os.fsync(file.fileno())
        return identity
