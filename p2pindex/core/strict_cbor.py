"""The one hardened CBOR decoder: no tags, no indefinite items, no duplicate keys, bounded
depth. The wire codec, the security documents, the SWIM codec and the version records all
decode untrusted bytes through it. ``loads_own`` is the one exception, for bytes that have
already been through it (a record this node checked and stored).

Tags would let a peer make cbor2 build arbitrary objects (dates, bignums, shared references,
sets), so every tag is refused, including the ones cbor2 decodes itself (overriding those is
the only way to refuse them; every other tag reaches ``tag_hook``). Depth is bounded so a
hostile nesting becomes a decode error, never a RecursionError.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cbor2

_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261)
_BUILTIN_TAGS_HIGH = (1004, 43000, 55799)
"""Tags cbor2 6.x decodes itself (dates, bignums, sharing, string refs, sets, ...)."""
DEFAULT_DEPTH = 8


class MalformedCbor(ValueError):
    """The bytes are not one well-formed, tag-free CBOR item; the message says why."""

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


def _refuse_tag(tag: cbor2.CBORTag, _immutable: bool) -> object:
    raise ValueError(f"CBOR tag {tag.tag} is not allowed")


def _refuse_builtin(tag: int) -> Callable[[object, bool], object]:
    def refuse(_value: object, _immutable: bool) -> object:
        raise ValueError(f"CBOR tag {tag} is not allowed")

    return refuse


_OPTIONS: dict[str, Any] = {
    "tag_hook": _refuse_tag,
    "semantic_decoders": {tag: _refuse_builtin(tag) for tag in _BUILTIN_TAGS + _BUILTIN_TAGS_HIGH},
    "allow_indefinite": False,
    "allow_duplicate_keys": False,
}


def decoder(stream: io.BytesIO, max_depth: int = DEFAULT_DEPTH) -> cbor2.CBORDecoder:
    """A refusing decoder over ``stream``, for callers that decode many items (frames)."""
    return cbor2.CBORDecoder(stream, max_depth=max_depth, **_OPTIONS)


def loads(data: bytes, max_depth: int = DEFAULT_DEPTH) -> object:
    """Decode exactly one item; raises MalformedCbor (truncated, trailing bytes, tags...)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedCbor(f"expected bytes, got {type(data).__name__}")
    stream = io.BytesIO(data)
    try:
        value = decoder(stream, max_depth).decode()
    except cbor2.CBORDecodeEOF:
        raise MalformedCbor(f"truncated ({len(data)} bytes)", truncated=True) from None
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedCbor(str(exc.__cause__ or exc)) from None
    if stream.tell() != len(data):
        raise MalformedCbor(f"{len(data) - stream.tell()} trailing bytes")
    return value


def loads_leading(data: bytes, max_depth: int = DEFAULT_DEPTH) -> object:
    """Decode the first item, leaving trailing bytes to the caller (the version records
    compare a re-encoding with the input, which refuses them and every non-minimal form at
    once); cbor2's one-shot path, about twice as fast as a stream decoder."""
    try:
        return cbor2.loads(data, max_depth=max_depth, **_OPTIONS)
    except cbor2.CBORDecodeEOF:
        raise MalformedCbor(f"truncated ({len(data)} bytes)", truncated=True) from None
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedCbor(str(exc.__cause__ or exc)) from None


def loads_own(data: bytes) -> object:
    """Decode bytes that already passed the refusing decoder (a record this node checked
    before it stored it), with cbor2's plain one-shot path: several times faster, since the
    refusing options are what a decode mostly costs. Never for bytes from outside; a caller
    still checks the types of what it uses, and an error is MalformedCbor as above."""
    try:
        return cbor2.loads(data)
    except cbor2.CBORDecodeEOF:
        raise MalformedCbor(f"truncated ({len(data)} bytes)", truncated=True) from None
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedCbor(str(exc.__cause__ or exc)) from None
