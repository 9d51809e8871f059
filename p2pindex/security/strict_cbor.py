"""CBOR decoding for untrusted security documents: no tags, no indefinite items, bounded depth.

Tags would let a peer make cbor2 build arbitrary objects (dates, shared references, sets), so
every tag is refused, including the ones cbor2 handles itself; trailing bytes are refused so
one document has exactly one encoding to check a signature against.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cbor2

_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261)
_BUILTIN_TAGS_HIGH = (1004, 43000, 55799)
_MAX_DEPTH = 8


class MalformedCbor(ValueError):
    """The bytes are not one well-formed, tag-free CBOR item; the message says why."""


def _refuse_tag(tag: cbor2.CBORTag, _immutable: bool) -> object:
    raise ValueError(f"CBOR tag {tag.tag} is not allowed")


def _refuse_builtin(tag: int) -> Callable[[object, bool], object]:
    def refuse(_value: object, _immutable: bool) -> object:
        raise ValueError(f"CBOR tag {tag} is not allowed")

    return refuse


_REFUSED = {tag: _refuse_builtin(tag) for tag in _BUILTIN_TAGS + _BUILTIN_TAGS_HIGH}


def loads(data: bytes) -> object:
    """Decode exactly one item; raises MalformedCbor (truncated, trailing bytes, tags...)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedCbor(f"expected bytes, got {type(data).__name__}")
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        tag_hook=_refuse_tag,
        semantic_decoders=_REFUSED,
        max_depth=_MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        value = decoder.decode()
    except cbor2.CBORDecodeEOF:
        raise MalformedCbor(f"truncated ({len(data)} bytes)") from None
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedCbor(str(exc.__cause__ or exc)) from None
    if stream.tell() != len(data):
        raise MalformedCbor(f"{len(data) - stream.tell()} trailing bytes")
    return value
