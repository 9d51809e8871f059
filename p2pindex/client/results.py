"""What a client call returns: values with their causal context, never bare bytes.

Dynamo-style stores can hold several concurrent values (siblings) for one key. Returning
them all, with the context that covers them, lets the application merge them and write
the merge back with that context, which replaces every sibling it saw.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from p2pindex.errors import P2PIndexError


class SiblingConflict(P2PIndexError):
    """The caller asked for the single value of a key that holds concurrent siblings."""

    code = "sibling_conflict"

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            f"the key has {count} concurrent values (siblings); read them from .values, "
            "merge them, and put the result with this result's .context to resolve them"
        )


@dataclass(frozen=True, slots=True)
class Context:
    """An opaque causal context: pass it back with the next put or delete of the same key.

    Its text form (URL-safe base64 without padding) is what the command line prints and
    accepts, so a context can travel through a shell or a JSON document unchanged.
    """

    data: bytes = b""

    def __str__(self) -> str:
        return base64.urlsafe_b64encode(self.data).rstrip(b"=").decode("ascii")

    def __bool__(self) -> bool:
        return bool(self.data)

    @classmethod
    def from_str(cls, text: str) -> Context:
        """Parse the text form; raises ValueError naming the problem."""
        stripped = text.strip()
        if not stripped:
            return cls(b"")
        if not all(c.isalnum() or c in "-_" for c in stripped):
            raise ValueError(f"bad context {text!r}: expected URL-safe base64 text")
        try:
            data = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
        except (binascii.Error, ValueError):
            raise ValueError(f"bad context {text!r}: not valid base64") from None
        return cls(data)


@dataclass(frozen=True, slots=True)
class PutResult:
    context: Context
    """Covers the value just written; pass it to the next write of this key."""
    warning: str | None = None
    """Set when the write succeeded but something needs attention (many siblings)."""
    siblings: int = 1
    """Live values the key holds after this write (on the node that coordinated it). More
    than one means concurrent values: read them, merge, and put the merge with the read's
    context, or put with ``overwrite=True`` to replace them all."""
    overwrote: bool = False
    """The put was an overwrite: the node read the key first and superseded what it read."""
    unseen_may_remain: bool = False
    """Only for an overwrite: replicas that did not answer its read may hold a version it
    did not replace, which would show up as a sibling (read at ``all`` to rule that out)."""

    @property
    def has_siblings(self) -> bool:
        return self.siblings > 1


@dataclass(frozen=True, slots=True)
class DeleteResult:
    context: Context
    """Covers the tombstone; a put with it replaces the deleted key."""
    read_first: bool = False
    """The delete came without a context, so the node read the key first and the tombstone
    supersedes what it read."""
    unseen_may_remain: bool = False
    """Replicas that did not answer that read may hold a version the delete did not cover,
    which a later read would still return (delete at ``all`` to rule that out)."""


@dataclass(frozen=True, slots=True)
class GetResult:
    values: list[bytes]
    """Every live concurrent value; empty when the key is missing or deleted."""
    context: Context
    """Covers every value returned (also for a deleted key): write it back to resolve."""

    @property
    def found(self) -> bool:
        return bool(self.values)

    @property
    def value(self) -> bytes | None:
        """The value, or None for a missing key; raises SiblingConflict with siblings."""
        if not self.values:
            return None
        if len(self.values) > 1:
            raise SiblingConflict(len(self.values))
        return self.values[0]
