"""Ed25519 key files: 32-byte seeds, written once with mode 0600, and short key ids.

Every key file is read and written here: node keys (``p2pindex.node.identity`` loads a data
directory's ``node.key`` through these functions), client and authority keys alike, so a key
made by ``p2pindex keygen`` can be dropped into a data directory as is.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from p2pindex.errors import ConfigError

SEED_BYTES = 32
KEY_ID_BYTES = 8


def key_id(public_key: bytes) -> bytes:
    """A short name for a public key (8 bytes of BLAKE2b): node ids, cluster ids, key ids."""
    return hashlib.blake2b(public_key, digest_size=KEY_ID_BYTES).digest()


def generate() -> SigningKey:
    return SigningKey(os.urandom(SEED_BYTES))


def write_private_key(path: Path, key: SigningKey, *, overwrite: bool = False) -> None:
    """Write ``key``'s seed to ``path`` with mode 0600; refuses to replace a key by accident.

    The file is created with its final mode (never world-readable, not even briefly) and
    fsynced before it is renamed into place, so a crash leaves the old key or the new one.
    """
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; refusing to overwrite a key")
    write_file_atomically(path, bytes(key), 0o600)


def read_private_key(path: Path) -> SigningKey:
    """The key in ``path``; a clear ConfigError when it is missing, short or readable by others."""
    try:
        mode = path.stat().st_mode
        seed = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(seed) != SEED_BYTES:
        raise ConfigError(
            f"{path} is not a key file (expected {SEED_BYTES} bytes, got {len(seed)})"
        )
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by other users (mode {mode & 0o777:o}); run chmod 600 {path}"
        )
    return SigningKey(seed)


def verify_key(public_key: bytes) -> VerifyKey:
    return VerifyKey(public_key)


def write_file_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so a reader never sees half a file. A directory made
    for it is private (0700): it is a data or authority directory, holding keys."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
