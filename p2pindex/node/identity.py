"""A node's identity: an Ed25519 key kept in its data directory, and the id derived from it.

The id is derived from the public key so that it cannot be chosen freely and stays the same
across restarts and address changes (SWIM recognises a restarted node by it).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from p2pindex.security.keys import key_id, read_private_key, write_private_key

KEY_FILE = "node.key"


def node_id_for(public_key: bytes) -> str:
    return key_id(public_key).hex()


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
        """Read ``data_dir/node.key``, creating it on first start, through the one key loader
        (``security.keys``: mode 0600 checked on reading, written atomically)."""
        path = data_dir / KEY_FILE
        if path.exists():
            return cls(read_private_key(path))
        identity = cls.generate()
        write_private_key(path, identity.signing_key)
        return identity
