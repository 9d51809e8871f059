"""Sending a batch call's keys: grouped by the node each key goes to, in as few frames as
the limits allow, every frame in flight at once, each key's reply shared out to it, and a
key sent round again to another replica only when nothing was done for it.

Kept apart from ``async_client`` so the client's single requests and its batches each read
in one place; the client hands in what a batch needs (routing, channels, limits).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from p2pindex import errors
from p2pindex.client.batching import DeleteItem, PutItem, plan_frames, repeated
from p2pindex.client.requests import NOTHING_SENT, client_deadline_margin, describe_error
from p2pindex.client.results import BatchResult, KeyOutcome
from p2pindex.config import Limits
from p2pindex.net.channel import RpcChannel
from p2pindex.types import Address, key_text
from p2pindex.wire.codec import decode_item
from p2pindex.wire.errors import error_from_reply
from p2pindex.wire.messages import BATCH_VERSION, BatchReply, BatchRequest, ErrorReply, Message

if TYPE_CHECKING:
    from p2pindex.client.routing import Router

_TRY_ELSEWHERE = frozenset({errors.Overloaded.code, errors.NotReady.code})
"""Refusals that are definite (the node did nothing), so another replica may serve."""


class BatchSender:
    def __init__(
        self,
        router: Router,
        open_channel: Callable[[Address], RpcChannel | None],
        connect_within: Callable[[Address, float], Awaitable[RpcChannel]],
        want_refresh: Callable[[], None],
        limits: Limits,
    ) -> None:
        self._router = router
        """Where each key goes (``candidates``), which nodes to try last (``mark_down``: one
        that answered ``unavailable``), and how long each node takes (``sent``/``ended``,
        what its ranking by latency learns from: a stalled node stops getting keys)."""
        self._open_channel = open_channel
        self._connect_within = connect_within
        self._want_refresh = want_refresh
        self._limits = limits
        self._timed = False

    async def send(
        self,
        prepared: list[BatchItem | KeyOutcome[Any]],
        timeout: float,
        *,
        write: bool,
        timed: bool = False,
    ) -> BatchResult[Any]:
        """Send the prepared items in rounds: each round groups the items still pending by
        the best node for each key not yet tried for it, into as few frames as the limits
        allow, all frames in flight at once. An item goes round again only when nothing was
        done for it (no connection, a node that refused the whole frame as overloaded or not
        ready, or a read whose connection broke); every other outcome is final. ``timed``:
        whether the time a frame takes says how fast its node is (``Router.timed``)."""
        self._timed = timed
        counts = repeated(item.key for item in prepared if isinstance(item, BatchItem))
        pending: list[BatchItem] = []
        for position, item in enumerate(prepared):
            if isinstance(item, BatchItem):
                if item.key in counts:
                    prepared[position] = KeyOutcome(item.key, error=_repeated(item.key, counts))
                else:
                    item.position = position
                    pending.append(item)
        deadline = trio.current_time() + timeout + client_deadline_margin(timeout)
        outcomes: list[KeyOutcome[Any] | None] = [
            item if isinstance(item, KeyOutcome) else None for item in prepared
        ]
        while pending:
            now = trio.current_time()
            routed: list[tuple[Address, BatchItem]] = []
            for item in pending:
                address = next(
                    (a for a in self._router.candidates(item.key, now) if a not in item.tried),
                    None,
                )
                if address is None:
                    outcomes[item.position] = KeyOutcome(item.key, error=item.gave_up())
                else:
                    routed.append((address, item))
            retry: list[BatchItem] = []
            frames = plan_frames(
                ((address, len(item.encoded)) for address, item in routed),
                self._limits.max_frame,
            )
            async with trio.open_nursery() as nursery:
                for address, positions in frames:
                    group = [routed[p][1] for p in positions]
                    nursery.start_soon(
                        self._send_batch, address, group, deadline, timeout, write, retry, outcomes
                    )
            pending = retry
            if pending and trio.current_time() >= deadline:
                for item in pending:
                    outcomes[item.position] = KeyOutcome(item.key, error=item.gave_up())
                break
        done = tuple(outcome for outcome in outcomes if outcome is not None)
        assert len(done) == len(outcomes)
        return BatchResult(_own_errors(done, read=not write))

    async def _send_batch(
        self,
        address: Address,
        group: list[BatchItem],
        deadline: float,
        timeout: float,
        write: bool,
        retry: list[BatchItem],
        outcomes: list[KeyOutcome[Any] | None],
    ) -> None:
        """Send one frame of a batch to ``address`` and share its answer out to its keys."""

        def again(reason: str, refusal: errors.P2PIndexError | None = None) -> None:
            for item in group:
                item.tried.add(address)
                item.failures.append(f"{address} ({reason})")
                if refusal is not None:
                    item.refusal = refusal
            retry.extend(group)

        def fail(error: Callable[[BatchItem], errors.P2PIndexError]) -> None:
            for item in group:
                outcomes[item.position] = KeyOutcome(item.key, error=error(item))

        channel = self._open_channel(address)
        if channel is None:
            channel, failure = await self._batch_channel(address, deadline)
            if channel is None:
                again(failure)
                return
        try:
            reply = await self._request(channel, address, group, deadline)
        except errors.Timeout:
            fail(lambda item: errors.Timeout(f"no reply from {address} within {timeout:g}s"))
            return
        except errors.ConnectionLost as exc:
            self._want_refresh()
            if not write:
                again(str(exc))
                return
            lost = str(exc)
            fail(
                lambda item: errors.ConnectionLost(
                    f"the connection to {address} broke after the write of key "
                    f"{key_text(item.key)} was sent; it may or may not have been applied ({lost})"
                )
            )
            return
        if isinstance(reply, ErrorReply):
            if reply.code in _TRY_ELSEWHERE:
                if reply.code == errors.NotReady.code:
                    self._want_refresh()
                again(reply.message, error_from_reply(reply))
                return
            error = error_from_reply(reply)
            fail(lambda item: error)
            return
        if not isinstance(reply, BatchReply) or len(reply.replies) != len(group):
            fail(
                lambda item: errors.ProtocolError(
                    f"{address} answered a batch of {len(group)} requests with something else"
                )
            )
            return
        self._share_out(address, group, reply, retry, outcomes)

    async def _request(
        self, channel: RpcChannel, address: Address, group: list[BatchItem], deadline: float
    ) -> Message:
        """One frame's request; when the router ranks by time, it learns what this took
        (a frame that timed out included: a stalled node stops getting keys)."""
        request = BatchRequest(BATCH_VERSION, [item.encoded for item in group])
        if not self._timed:
            return await channel.request(request, deadline=deadline)
        began = trio.current_time()
        self._router.sent(address, began)
        try:
            return await channel.request(request, deadline=deadline)
        finally:
            ended = trio.current_time()
            self._router.ended(address, ended - began, ended)

    async def _batch_channel(
        self, address: Address, deadline: float
    ) -> tuple[RpcChannel | None, str]:
        """A channel to ``address`` for a batch frame, or None and why (nothing was sent:
        its keys go round again, to the next replica)."""
        try:
            return await self._connect_within(address, deadline), ""
        except NOTHING_SENT as exc:
            self._want_refresh()
            return None, describe_error(exc)

    def _share_out(
        self,
        address: Address,
        group: list[BatchItem],
        reply: BatchReply,
        retry: list[BatchItem],
        outcomes: list[KeyOutcome[Any] | None],
    ) -> None:
        """Each key's own reply becomes its outcome; a key its node refused as overloaded
        or not ready (nothing done) goes round again to another replica, and so does one
        refused as unavailable, once."""
        for item, data in zip(group, reply.replies, strict=True):
            try:
                inner = decode_item(data, self._limits)
            except ValueError as exc:
                bad = errors.ProtocolError(
                    f"{address} sent an invalid reply for key {key_text(item.key)}: {exc}"
                )
                outcomes[item.position] = KeyOutcome(item.key, error=bad)
                continue
            if isinstance(inner, ErrorReply) and item.goes_elsewhere(inner.code):
                if inner.code == errors.Unavailable.code:
                    self._router.mark_down(address, trio.current_time())
                item.tried.add(address)
                item.failures.append(f"{address} ({inner.message})")
                item.refusal = error_from_reply(inner)
                retry.append(item)
                continue
            try:
                outcomes[item.position] = KeyOutcome(item.key, item.convert(inner))
            except errors.P2PIndexError as exc:
                outcomes[item.position] = KeyOutcome(item.key, error=exc)


@dataclass(slots=True, eq=False)
class BatchItem:
    """One key of a batch call on its way: its encoded request, how to read its reply,
    and the nodes already tried for it (with why), so a retry goes elsewhere."""

    key: bytes
    encoded: bytes
    convert: Callable[[Message], Any]
    position: int = 0
    tried: set[Address] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    refusal: errors.P2PIndexError | None = None
    """The last definite refusal (overloaded, not ready, unavailable), reported if no node
    takes it."""
    asked_again: bool = False
    """Whether an ``unavailable`` refusal already sent this key to another node."""

    def goes_elsewhere(self, code: str) -> bool:
        """Whether a refusal with ``code`` (nothing done) sends this key to another node:
        overloaded and not ready always; unavailable, one coordinator's view, once."""
        if code == errors.Unavailable.code:
            first, self.asked_again = not self.asked_again, True
            return first
        return code in _TRY_ELSEWHERE

    def gave_up(self) -> errors.P2PIndexError:
        if self.refusal is not None:
            return self.refusal
        tried = "; ".join(self.failures) if self.failures else "no address left to try"
        return errors.NoNodeReachable(
            f"could not reach any node for key {key_text(self.key)}: {tried}"
        )


def put_item(item: object) -> PutItem:
    if isinstance(item, PutItem):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        return PutItem(*item)
    raise errors.InvalidArgumentType(
        f"each item of put_many must be a PutItem or a (key, value[, context]) tuple, "
        f"not {_shape(item)}"
    )


def delete_item(item: object) -> DeleteItem:
    if isinstance(item, DeleteItem):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return DeleteItem(*item)
    if isinstance(item, bytes | bytearray | memoryview | str):
        return DeleteItem(bytes(item) if not isinstance(item, str) else item)
    raise errors.InvalidArgumentType(
        f"each item of delete_many must be a key, a DeleteItem or a (key, context) tuple, "
        f"not {_shape(item)}"
    )


def _shape(item: object) -> str:
    """What a refused item is, in words that show what is wrong with it."""
    if isinstance(item, tuple):
        return f"a tuple of {len(item)} item{'' if len(item) == 1 else 's'}"
    return type(item).__name__


def key_of(item: object) -> bytes:
    """The key of an item refused before it was checked, as far as it can be told."""
    key = item.key if isinstance(item, PutItem | DeleteItem) else item
    if isinstance(key, tuple) and key:
        key = key[0]
    if isinstance(key, str):
        return key.encode("utf-8", "replace")
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    return b""


def invalid_item(key: bytes, error: Exception) -> errors.InvalidRequest:
    if isinstance(error, errors.InvalidRequest):
        return error
    return errors.InvalidRequest(f"key {key_text(key)}: {error}")


def _own_errors(
    outcomes: tuple[KeyOutcome[Any], ...], *, read: bool
) -> tuple[KeyOutcome[Any], ...]:
    """Every failed key with an error of its own that names it (see ``error_for_key``),
    marked as a ``read``'s when the batch only read."""
    seen: set[int] = set()
    owned: list[KeyOutcome[Any]] = []
    for outcome in outcomes:
        error = outcome.error
        if error is not None:
            own = error_for_key(outcome.key, error, shared=id(error) in seen)
            outcome = KeyOutcome(outcome.key, error=own, read=read)
            seen.add(id(error))
        owned.append(outcome)
    return tuple(owned)


def error_for_key(
    key: bytes, error: errors.P2PIndexError, *, shared: bool = False
) -> errors.P2PIndexError:
    """``error`` as one key's own: ``error`` itself when it names ``key`` and is not
    ``shared`` with other keys, else a copy of the same class and attributes (``required``,
    ``alive``, ``trace``, ...) whose message starts with the key (unless it already names
    it), caused by ``error``.

    Why: one frame's failure (a timeout, a refusal of the whole frame) is a single error for
    all of its keys. Shared as is, it would not say which key failed, and raising it for one
    key would write that key's traceback onto every other key's error. The copy is made
    without calling ``__init__``, whose parameters differ between classes (``Unavailable``
    takes counts and builds its message from them)."""
    text = str(error) or type(error).__name__
    named = not key or _names_key(text, key)
    if named and not shared:
        return error
    cls = type(error)
    own = cls.__new__(cls, text if named else f"key {key_text(key)}: {text}")
    own.__dict__.update(error.__dict__)
    if isinstance(notes := getattr(error, "__notes__", None), list):
        own.__notes__ = list(notes)
    own.__cause__ = error
    return own


def _names_key(text: str, key: bytes) -> bool:
    """Whether ``text`` names ``key`` as the client and nodes show a key: ``key_text``'s
    form, or the repr of its text (hex when it is not UTF-8)."""
    try:
        plain = repr(key.decode("utf-8"))
    except UnicodeDecodeError:
        plain = key.hex()
    return f"key {key_text(key)}" in text or f"key {plain}" in text


def _repeated(key: bytes, counts: Mapping[bytes, int]) -> errors.InvalidRequest:
    return errors.InvalidRequest(
        f"key {key_text(key)} appears {counts[key]} times in one call; a key may appear "
        "once per batch (nothing was done for it): send its requests in separate calls"
    )
