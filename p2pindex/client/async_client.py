"""The async client: one multiplexed connection per node, token-aware routing, honest failures.

Why it is shaped this way:

* One long-lived ``RpcChannel`` per node carries every request to that node, many in flight
  at once, with frames coalesced; a connection per request would cost ten times more CPU.
* Requests go straight to a live replica of their key (the ring is rebuilt from the member
  list), which saves the forwarding hop a random node would need.
* Failures say what the caller may conclude. A request that reached no node raises
  ``NoNodeReachable`` (definite: nothing was sent). A connection that broke after a write
  was sent raises ``ConnectionLost`` (indeterminate) and the write is never silently
  retried, since it may have been applied; reads are retried on the next node.
* Failing over is safe only before a request is sent, or on an answer that says nothing
  was done: so a connection that is refused, times out, resets or fails its handshake, and
  a node that answers "not ready", send every request (writes too) to the next address;
  anything that goes wrong after a write was sent stays indeterminate.
* Limits come from the cluster: on opening, the client asks a node for the largest key,
  value and frame it accepts (``LimitsRequest``) and checks requests against those, so a
  cluster configured with larger values can be sent them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, Unpack

import trio

from p2pindex.client.batch_send import (
    BatchItem,
    BatchSender,
    delete_item,
    invalid_item,
    key_of,
    put_item,
)
from p2pindex.client.batching import DeleteItem, PutItem
from p2pindex.client.queries import (
    DEFAULT_PAGE,
    PageOptions,
    QueryPage,
    bounds_for_wire,
    check_index_name,
    check_page_options,
    check_page_size,
    continuation_from_text,
    index_for_wire,
    page_from_reply,
    route_of,
)
from p2pindex.client.requests import (
    NOTHING_SENT,
    Addresses,
    CallOptions,
    ConsistencyArg,
    Data,
    as_bytes,
    call_options,
    check_batch,
    check_consistency,
    check_context,
    check_key,
    check_timeout,
    check_value,
    client_deadline_margin,
    delete_result,
    describe_error,
    expect,
    get_result,
    parse_addresses,
    put_result,
)
from p2pindex.client.results import (
    BatchResult,
    Context,
    DeleteResult,
    GetResult,
    KeyOutcome,
    KeyPlacement,
    Member,
    NodeStatus,
    PutResult,
    RingView,
)
from p2pindex.client.routing import Router
from p2pindex.config import Limits
from p2pindex.errors import (
    ClientClosed,
    ConfigError,
    ConnectionLost,
    InvalidRequest,
    NoNodeReachable,
    NotReady,
    Overloaded,
    P2PIndexError,
    ProtocolError,
    Timeout,
    Unavailable,
)
from p2pindex.net.base import Transport
from p2pindex.net.channel import RpcChannel, open_channel
from p2pindex.net.pool import ChannelPool
from p2pindex.net.secure.connector import client_connector
from p2pindex.security.credentials import ClientCredentials
from p2pindex.security.errors import HandshakeFailed
from p2pindex.types import Address, ConsistencyLevel
from p2pindex.wire.codec import encode_item
from p2pindex.wire.messages import (
    LIMITS_VERSION,
    AdmitRequest,
    DeleteRequest,
    ErrorReply,
    ExplainReply,
    ExplainRequest,
    GetRequest,
    LeaveRequest,
    LimitsReply,
    LimitsRequest,
    MembersReply,
    MembersRequest,
    Message,
    OkReply,
    PutRequest,
    QueryRequest,
    RemoveRequest,
    StatusReply,
    StatusRequest,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0
"""Longest wait for one node to accept a connection before trying the next."""
HANDSHAKE_TIMEOUT = 2.0
"""Longest wait for one node to complete the secure handshake before trying the next: a
node (or anything else) that accepts connections but never answers must not use up the
whole deadline of the request."""
MAX_LEARNED_FRAME = 2**32 - 1
"""The largest frame the wire format can describe; a node announcing more is wrong."""
REFRESH_INTERVAL = 10.0
"""Period of the member-list refresh when nothing goes wrong (seconds)."""
REFRESH_MIN_GAP = 0.5
"""Failures ask for a refresh; this keeps a burst of them from becoming a burst of requests."""
ADMIN_TIMEOUT = 5.0


class AsyncClient:
    """A connection to a p2pindex cluster; use ``async with p2pindex.connect([...]) as db``."""

    def __init__(
        self,
        addresses: Addresses,
        *,
        consistency: ConsistencyArg = ConsistencyLevel.QUORUM,
        timeout: float = 5.0,
        limits: Limits | None = None,
        refresh_interval: float = REFRESH_INTERVAL,
        transport: Transport | None = None,
        credentials: ClientCredentials | str | Path | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        """See ``connect``, which takes the same arguments."""
        self._router = Router(parse_addresses(addresses))
        self._connect_timeout = check_timeout(connect_timeout)
        self._transport = client_connector(
            credentials,
            transport,
            connect_timeout=self._connect_timeout,
            handshake_timeout=check_timeout(handshake_timeout),
        )
        """None: plain TCP. The simulation passes its simulated network here; with client
        credentials (or $P2PINDEX_CREDENTIALS) connections run the secure handshake."""
        self._consistency = check_consistency(consistency, None)
        self._timeout = check_timeout(timeout)
        self._defaults = call_options(self._consistency, self._timeout)
        self._refresh_interval = check_timeout(refresh_interval)
        self._limits = limits or Limits()
        self._learn_limits = limits is None
        self._pool = ChannelPool(self._open, waiters_retry=False)
        self._refresh_wanted = trio.Event()
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._closed = False

    # --- lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        if self._closed:
            raise ClientClosed("the client was closed; a client can be opened only once")
        if self._nursery is not None:
            raise RuntimeError("a client can be opened only once")
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._nursery_manager = manager
        try:
            members = await self._fetch_members(None, self._timeout)
            if self._learn_limits:
                # Before the router knows the members: the question goes to the seed that
                # just answered, over the connection already open to it.
                await self._adopt_cluster_limits()
            self._router.update(members)
            check_consistency(self._consistency, self._router.n_replicas)
        except BaseException:
            await self._close()
            raise
        self._nursery.start_soon(self._refresh_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        """Close; never swallows the body's exception. ``Literal[False]`` tells type
        checkers so: a function whose ``async with`` body returns needs no return after it."""
        await self._close()
        return False

    async def _close(self) -> None:
        """Close every connection and stop background work; in-flight requests fail.

        Private on purpose: the nursery it closes was opened around the caller's ``async
        with`` body, so only ``__aexit__`` (or a failed ``__aenter__``) may close it.
        """
        if self._closed or self._nursery is None or self._nursery_manager is None:
            self._closed = True
            return
        self._closed = True
        self._nursery.cancel_scope.cancel()
        await self._pool.aclose()
        # The caller's own exception (if any) keeps propagating unwrapped: the nursery is
        # closed as if its body ended normally, since its only tasks are ours.
        await self._nursery_manager.__aexit__(None, None, None)

    # --- key-value operations --------------------------------------------------------------

    async def put(
        self,
        key: Data,
        value: Data,
        *,
        context: Context | bytes | str | None = None,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
        overwrite: bool = False,
        index: Mapping[str, Any] | None = None,
        trace: bool = False,
    ) -> PutResult:
        """Store ``value`` under ``key``.

        Without ``context`` the write is concurrent with whatever the key holds and becomes
        a sibling of it (``result.siblings`` says how many values the key now has); pass the
        context of a previous get to replace what it saw, or of a previous put whose result
        had one sibling (a put's context covers every sibling it counted). ``overwrite=True`` means
        "replace what the cluster holds now": the node reads the key at ``consistency`` and
        supersedes what it read (``result.unseen_may_remain`` says whether a replica that did
        not answer may still hold another value). It takes no ``context``.
        ``index={"email": ["a@b.example"], "total": [420]}`` files this version under those
        terms (integers, or text/bytes), a list of them per index (a bare term is refused
        with ``InvalidArgumentType``); a later write with this write's context replaces
        them, a delete removes them. ``trace=True`` returns the coordinator's steps in
        ``result.trace`` (or, if it fails, in the error's ``trace``). ``consistency`` (one,
        quorum, all or a count) and ``timeout`` (seconds) override the client's defaults
        for this call; ``strict`` counts only the key's own replicas.

        Raises ``Unavailable`` when too few replicas were reachable (nothing written) and
        ``Timeout``/``ConnectionLost`` when the outcome is unknown (read before retrying).
        """
        raw_key = check_key(key, self._limits)
        raw_value = check_value(value, self._limits)
        raw_context = check_context(context)
        if overwrite and raw_context is not None:
            raise InvalidRequest("put takes a context or overwrite=True, not both")
        options = self._options(consistency, timeout)
        request = PutRequest(
            raw_key,
            raw_value,
            raw_context,
            options.consistency,
            options.timeout_ms,
            bool(strict),
            overwrite=bool(overwrite),
            index=index_for_wire(index),
            trace=bool(trace),
        )
        reply = await self._request(raw_key, request, options.timeout, retry_after_send=False)
        return put_result(reply, traced=bool(trace))

    async def get(
        self,
        key: Data,
        *,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
        trace: bool = False,
    ) -> GetResult:
        """Read every live value of ``key`` (several when writes were concurrent) and the
        context that covers them; ``result.found`` is False for a missing or deleted key.
        With ``trace=True``, the coordinator's steps too, as ``put`` says."""
        raw_key = check_key(key, self._limits)
        options = self._options(consistency, timeout)
        request = GetRequest(
            raw_key, options.consistency, options.timeout_ms, bool(strict), trace=bool(trace)
        )
        reply = await self._request(raw_key, request, options.timeout, retry_after_send=True)
        return get_result(reply, traced=bool(trace))

    async def delete(
        self,
        key: Data,
        *,
        context: Context | bytes | str | None = None,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
        trace: bool = False,
    ) -> DeleteResult:
        """Delete ``key`` by writing a tombstone that supersedes its values.

        With ``context`` the tombstone covers what that read saw; without one the node reads
        the key at ``consistency`` first and covers what it read (``result.unseen_may_remain``
        says whether a replica that did not answer may still hold a value). ``trace=True``
        returns the coordinator's steps, and failures are reported, as ``put`` says.
        """
        raw_key = check_key(key, self._limits)
        options = self._options(consistency, timeout)
        request = DeleteRequest(
            raw_key,
            check_context(context),
            options.consistency,
            options.timeout_ms,
            bool(strict),
            trace=bool(trace),
        )
        reply = await self._request(raw_key, request, options.timeout, retry_after_send=False)
        return delete_result(reply, traced=bool(trace))

    # --- batches ---------------------------------------------------------------------------

    async def put_many(
        self,
        items: Iterable[PutItem | tuple[Any, ...]],
        *,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> BatchResult[PutResult]:
        """Store many keys in one call: ``items`` are ``PutItem``s or ``(key, value)`` /
        ``(key, value, context)`` tuples, each with its own context.

        Keys are sent to their replicas grouped into as few frames as possible; the result
        holds every key's outcome in the order given (``result.ok``, ``result.failed``):
        a key that failed never hides the others. A failed key's ``definite`` says whether
        nothing was written for it (bad argument, ``Unavailable``, a key repeated in the
        call) or the write may have been applied (``Timeout``, ``ConnectionLost``).
        """
        check_batch("put_many", items)
        options = self._options(consistency, timeout)

        def request(put: PutItem, raw_key: bytes) -> PutRequest:
            raw_context = check_context(put.context)
            if put.overwrite and raw_context is not None:
                raise InvalidRequest("put takes a context or overwrite=True, not both")
            return PutRequest(
                raw_key,
                check_value(put.value, self._limits),
                raw_context,
                options.consistency,
                options.timeout_ms,
                bool(strict),
                overwrite=bool(put.overwrite),
                index=index_for_wire(put.index),
            )

        prepared = self._prepare(items, put_item, request, put_result)
        return await self._many(prepared, options, write=True)

    async def get_many(
        self,
        keys: Iterable[Data],
        *,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> BatchResult[GetResult]:
        """Read many keys in one call; every key's outcome, in the order given (see
        ``put_many``). A read is retried on another replica when its node cannot be
        reached or its connection breaks."""
        check_batch("get_many", keys)
        options = self._options(consistency, timeout)
        prepared: list[BatchItem | KeyOutcome[Any]] = []
        for key in keys:
            try:
                raw_key = check_key(key, self._limits)
            except InvalidRequest as exc:
                prepared.append(KeyOutcome(key_of(key), error=exc))
                continue
            request = GetRequest(raw_key, options.consistency, options.timeout_ms, bool(strict))
            prepared.append(BatchItem(raw_key, encode_item(request), get_result))
        return await self._many(prepared, options, write=False)

    async def delete_many(
        self,
        keys: Iterable[Data | DeleteItem | tuple[Any, ...]],
        *,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> BatchResult[DeleteResult]:
        """Delete many keys in one call: each a key, a ``DeleteItem`` or a ``(key,
        context)`` tuple (without a context the node reads the key first, as ``delete``
        says); every key's outcome, in the order given (see ``put_many``)."""
        check_batch("delete_many", keys)
        options = self._options(consistency, timeout)

        def request(gone: DeleteItem, raw_key: bytes) -> DeleteRequest:
            raw_context = check_context(gone.context)
            return DeleteRequest(
                raw_key, raw_context, options.consistency, options.timeout_ms, bool(strict)
            )

        prepared = self._prepare(keys, delete_item, request, delete_result)
        return await self._many(prepared, options, write=True)

    def _prepare(
        self,
        items: Iterable[Any],
        parse: Callable[[Any], Any],
        request: Callable[[Any, bytes], Message],
        convert: Callable[[Message], Any],
    ) -> list[BatchItem | KeyOutcome[Any]]:
        """Each write item of a batch call checked and encoded, or its own error: a bad item
        never stops the others."""
        prepared: list[BatchItem | KeyOutcome[Any]] = []
        for item in items:
            try:
                parsed = parse(item)
                raw_key = check_key(parsed.key, self._limits)
            except InvalidRequest as exc:
                prepared.append(KeyOutcome(key_of(item), error=exc))
                continue
            try:
                message = request(parsed, raw_key)
            except (InvalidRequest, ValueError) as exc:
                prepared.append(KeyOutcome(raw_key, error=invalid_item(raw_key, exc)))
                continue
            prepared.append(BatchItem(raw_key, encode_item(message), convert))
        return prepared

    async def _many(
        self, prepared: list[BatchItem | KeyOutcome[Any]], options: CallOptions, *, write: bool
    ) -> BatchResult[Any]:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._ensure_open()
        assert self._pool is not None
        sender = BatchSender(
            self._router,
            self._pool.open_channel,
            self._connect_within,
            self._want_refresh,
            self._limits,
        )
        timed = self._router.timed_level(options.consistency)
        return await sender.send(prepared, options.timeout, write=write, timed=timed)

    # --- queries ---------------------------------------------------------------------------

    async def keys(self, prefix: Data = b"", **page: Unpack[PageOptions]) -> QueryPage:
        """One page of the live keys starting with ``prefix``, in key order (``page``:
        see ``PageOptions``)."""
        check_page_options("keys", page)
        return await self._query("", None, None, prefix, **page)

    async def query(
        self,
        index: str,
        term: object,
        high: object = None,
        *,
        prefix: Data = b"",
        **page: Unpack[PageOptions],
    ) -> QueryPage:
        """One page of the keys filed under ``term`` in ``index`` (or, with ``high``, under
        any term from ``term`` to ``high`` inclusive), sorted by term then key (``page``:
        see ``PageOptions``).

        The page says whether every arc of the ring was read (``complete``); with
        ``complete_only`` a page that could not be raises ``Unavailable`` instead.
        """
        check_page_options("query", page)
        index = check_index_name(index)
        low, top = bounds_for_wire(index, term, high)
        return await self._query(index, low, top, prefix, **page)

    async def _query(
        self,
        index: str,
        low: bytes | None,
        high: bytes | None,
        prefix: Data,
        *,
        limit: int = DEFAULT_PAGE,
        continuation: str | None = None,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        values: bool = False,
        complete_only: bool = False,
        explain: bool = False,
    ) -> QueryPage:
        """The one place ``PageOptions`` get their defaults."""
        options = self._options(consistency, timeout)
        token = continuation_from_text(continuation)
        request = QueryRequest(
            index,
            low,
            high,
            as_bytes("prefix", prefix),
            check_page_size(limit),
            token,
            options.consistency,
            options.timeout_ms,
            bool(values),
            bool(complete_only),
            bool(explain),
        )
        issuer = route_of(token)
        address = next((m.address for m in self._router.members if m.node_id == issuer), None)
        if address is not None:
            reply = await self._request_to(address, request, options.timeout)
        else:
            reply = await self._request(None, request, options.timeout, retry_after_send=True)
        return page_from_reply(reply, listing=not index)

    # --- cluster operations ----------------------------------------------------------------

    async def status(self, node: str | Address | None = None) -> NodeStatus:
        """The status of ``node`` (or of any reachable node): its state, every member with
        liveness and ownership, pending hints and counters."""
        reply = await self._admin(node, StatusRequest(), retry_after_send=True)
        return NodeStatus.from_document(dict(expect(reply, StatusReply).status))

    async def explain(self, key: Data) -> KeyPlacement:
        """Where the cluster places ``key``: its primary, replicas and fallbacks in ring
        order, with their liveness and the hints held for them."""
        raw_key = check_key(key, self._limits)
        reply = await self._request(raw_key, ExplainRequest(raw_key), ADMIN_TIMEOUT, True)
        return KeyPlacement.from_document(dict(expect(reply, ExplainReply).explain))

    async def members(self, node: str | Address | None = None) -> tuple[Member, ...]:
        """The member list as ``node`` (or any reachable node) sees it; refreshes routing."""
        address = None if node is None else parse_addresses(node)[0]
        reply = await self._fetch_members(address, ADMIN_TIMEOUT)
        self._router.update(reply)
        return tuple(Member.from_document(doc) for doc in reply.members)

    async def ring_view(self, node: str | Address | None = None) -> RingView:
        """The members as ``node`` (or any reachable node) sees them, with N and the
        virtual nodes per member: what `p2pindex plan` computes a change from."""
        address = None if node is None else parse_addresses(node)[0]
        reply = await self._fetch_members(address, ADMIN_TIMEOUT)
        self._router.update(reply)
        members = tuple(Member.from_document(doc) for doc in reply.members)
        return RingView(members, reply.n_replicas, reply.vnodes)

    async def leave(self, node: str | Address) -> None:
        """Ask the node at ``node`` to hand its data over and leave the cluster."""
        expect(await self._admin(node, LeaveRequest(), retry_after_send=False), OkReply)

    async def remove(self, node_id: str, node: str | Address | None = None) -> None:
        """Remove a member that will not come back (its data is re-replicated)."""
        if not isinstance(node_id, str) or not node_id.strip():
            raise InvalidRequest("node id must be a non-empty string")
        request = RemoveRequest(node_id.strip().lower())
        expect(await self._admin(node, request, retry_after_send=False), OkReply)

    async def admit(self, node_id: str, node: str | Address | None = None) -> str:
        """Let a removed member join again (it is refused until then); returns the node's
        account of how many members it reached."""
        if not isinstance(node_id, str) or not node_id.strip():
            raise InvalidRequest("admit needs the full id of the removed node")
        request = AdmitRequest(node_id.strip().lower())
        return expect(await self._admin(node, request, retry_after_send=False), OkReply).detail

    def preference_list(self, key: Data) -> tuple[str, ...]:
        """The node ids this client would route ``key`` to, primary first."""
        return self._router.replicas(as_bytes("key", key))

    @property
    def limits(self) -> Limits:
        """The limits requests are checked against: the cluster's once the client is open
        (unless ``limits`` was given), else the defaults."""
        return self._limits

    # --- internals -------------------------------------------------------------------------

    async def _adopt_cluster_limits(self) -> None:
        """Ask a node for its limits and check requests against them from now on.

        A node that predates ``LimitsRequest`` answers with an error; the defaults stay.
        Connections opened so far decode replies with the old limits, so they are closed
        and reopened on demand when the limits changed.
        """
        reply = await self._request(None, LimitsRequest(), ADMIN_TIMEOUT, True)
        if isinstance(reply, ErrorReply) or (
            isinstance(reply, LimitsReply) and reply.version != LIMITS_VERSION
        ):
            log.debug("the node did not say its limits; using the defaults")
            return
        announced = expect(reply, LimitsReply)
        if announced.max_frame > MAX_LEARNED_FRAME:
            raise ProtocolError(f"the node announced a frame limit of {announced.max_frame}")
        try:
            learned = Limits(
                max_frame=announced.max_frame,
                max_key=announced.max_key,
                max_value=announced.max_value,
                sibling_warn=min(self._limits.sibling_warn, max(1, announced.sibling_max)),
                sibling_max=announced.sibling_max,
            )
        except ConfigError as exc:
            raise ProtocolError(f"the node announced limits that do not fit: {exc}") from None
        if learned == self._limits:
            return
        self._limits = learned
        await self._pool.aclose()  # reopened with the learned limits on next use

    def _options(self, consistency: ConsistencyArg | None, timeout: float | None) -> CallOptions:
        if consistency is None and timeout is None:
            return self._defaults
        level = (
            self._consistency
            if consistency is None
            else check_consistency(consistency, self._router.n_replicas)
        )
        return call_options(level, self._timeout if timeout is None else check_timeout(timeout))

    async def _admin(
        self, node: str | Address | None, message: Message, *, retry_after_send: bool
    ) -> Message:
        if node is None:
            return await self._request(None, message, ADMIN_TIMEOUT, retry_after_send)
        return await self._request_to(parse_addresses(node)[0], message, ADMIN_TIMEOUT)

    async def _fetch_members(self, address: Address | None, timeout: float) -> MembersReply:
        if address is None:
            reply = await self._request(None, MembersRequest(), timeout, True)
        else:
            reply = await self._request_to(address, MembersRequest(), timeout)
        return expect(reply, MembersReply)

    def _ensure_open(self) -> trio.Nursery:
        """The client's nursery, or ``ClientClosed`` (definite: nothing was sent) when the
        client was closed or never opened, so callers can tell it from a failed request."""
        if self._closed:
            raise ClientClosed("the client was closed; open a new one to send requests")
        if self._nursery is None:
            raise ClientClosed(
                "the client is not open yet: use `async with p2pindex.connect(...) as db`"
            )
        return self._nursery

    async def _channel(self, address: Address) -> RpcChannel:
        """The open channel to ``address``, connecting once even if many tasks ask at once."""
        # Background tasks of a closing client must see their cancellation, not "not open".
        await trio.lowlevel.checkpoint_if_cancelled()
        self._ensure_open()
        return await self._pool.channel(address)

    async def _open(self, address: Address) -> RpcChannel:
        try:
            channel = await open_channel(
                self._ensure_open(),
                self._transport,
                address,
                self._limits,
                connect_timeout=self._connect_timeout,
            )
        except (OSError, HandshakeFailed):
            self._router.mark_down(address, trio.current_time())
            raise
        self._router.mark_up(address)
        return channel

    async def _request(
        self, key: bytes | None, message: Message, timeout: float, retry_after_send: bool
    ) -> Message:
        """Send to the best reachable node for ``key``, failing over while that is safe."""
        # The refresh task of a closing client must see its cancellation, not "not open".
        await trio.lowlevel.checkpoint_if_cancelled()
        self._ensure_open()
        failures: list[str] = []
        refusal: Message | None = None
        asked_again = False
        not_ready = 0
        now = trio.current_time()
        deadline = now + timeout + client_deadline_margin(timeout)
        for address in self._router.candidates(key, now):
            # An open connection is used without a cancel scope (the channel enforces the
            # deadline); only connecting needs one.
            channel = self._pool.open_channel(address)
            if channel is None:
                try:
                    channel = await self._connect_within(address, deadline)
                except NOTHING_SENT as exc:
                    # Nothing was sent: safe to try the next address, for writes too.
                    failures.append(f"{address} ({describe_error(exc)})")
                    self._want_refresh()
                    continue
            try:
                timed = self._router.timed(message)  # it ranks replicas by what they take
                began = trio.current_time()
                if timed:
                    self._router.sent(address, began)
                try:
                    reply = await channel.request(message, deadline=deadline)
                finally:
                    if timed:
                        ended = trio.current_time()
                        self._router.ended(address, ended - began, ended)
                if _is_overloaded(reply):
                    refusal = reply  # definite: another node may take it
                    failures.append(f"{address} (overloaded)")
                    continue
                if _is_unavailable(reply) and not asked_again:
                    # Definite, and one coordinator's view: a node on the other side of a
                    # partition may still reach a quorum. One more node is asked (as
                    # Cassandra's drivers do); its answer stands.
                    asked_again = True
                    refusal = reply
                    failures.append(f"{address} (unavailable)")
                    self._router.mark_down(address, trio.current_time())
                    continue
                if isinstance(reply, ErrorReply) and reply.code == NotReady.code:
                    # A definite refusal: the node did nothing, so the next one may serve.
                    failures.append(f"{address} (not ready: {reply.message})")
                    not_ready += 1
                    self._want_refresh()
                    continue
                return reply
            except Timeout:
                raise Timeout(f"no reply from {address} within {timeout:g}s") from None
            except ConnectionLost as exc:
                self._want_refresh()
                if not retry_after_send:
                    raise ConnectionLost(
                        f"the connection to {address} broke after the request was sent; "
                        f"it may or may not have been applied ({exc})"
                    ) from exc
                failures.append(f"{address} ({exc})")
            if trio.current_time() >= deadline:
                raise Timeout(f"no reply from {address} within {timeout:g}s")
        if refusal is not None:
            return refusal
        raise _no_node_took_it(failures, not_ready)

    async def _connect_within(self, address: Address, deadline: float) -> RpcChannel:
        """A channel to ``address`` within half the time left before ``deadline``: a node
        that accepts connections but never completes a handshake (stopped, starved) would
        otherwise take a whole short call, leaving no time to try the next node. One cut
        off is tried last for a while, like one that refused; nothing was sent to it."""
        now = trio.current_time()
        budget = max(deadline - now, 0.0) / 2
        channel: RpcChannel | None = None
        with trio.move_on_at(now + budget):
            channel = await self._channel(address)
        if channel is None or channel.closed:
            self._router.mark_down(address, trio.current_time())
            raise OSError(f"no connection within {budget:.3g}s")
        return channel

    async def _request_to(self, address: Address, message: Message, timeout: float) -> Message:
        """Send to exactly ``address`` (admin commands that name their node)."""
        self._ensure_open()
        sent = False
        with trio.move_on_after(timeout + client_deadline_margin(timeout)):
            try:
                channel = await self._channel(address)
            except (OSError, HandshakeFailed) as exc:
                raise NoNodeReachable(f"cannot reach {address}: {describe_error(exc)}") from None
            sent = True
            return await channel.request(message)
        if sent:
            raise Timeout(f"no reply from {address} within {timeout:g}s")
        raise NoNodeReachable(f"cannot reach {address}: no connection within {timeout:g}s")

    def _want_refresh(self) -> None:
        self._refresh_wanted.set()

    async def _refresh_loop(self) -> None:
        """Keep the routing table current: periodically, and soon after any failure."""
        while True:
            with trio.move_on_after(self._refresh_interval):
                await self._refresh_wanted.wait()
            self._refresh_wanted = trio.Event()
            try:
                self._router.update(await self._fetch_members(None, ADMIN_TIMEOUT))
            except P2PIndexError as exc:
                log.debug("member refresh failed: %s", exc)
            await trio.sleep(REFRESH_MIN_GAP)


class ClientOptions(TypedDict, total=False):
    """How either client connects and what its calls default to, keyword only; the
    defaults are ``AsyncClient``'s, and ``connect`` says what each one means."""

    consistency: ConsistencyArg
    timeout: float
    limits: Limits | None
    credentials: ClientCredentials | str | Path | None
    connect_timeout: float
    handshake_timeout: float


class ConnectOptions(ClientOptions, total=False):
    """``connect``'s options: the clients' and the network to connect over (the
    simulation's; None: TCP)."""

    transport: Transport | None


def connect(addresses: Addresses, **options: Unpack[ConnectOptions]) -> AsyncClient:
    """A client for the cluster reachable at ``addresses``; open it with ``async with``.

    ``addresses`` are tried in order until one answers; ``consistency`` and ``timeout``
    (seconds) are the defaults of every call. ``credentials`` names a credentials file (or
    is a ``ClientCredentials``); without it $P2PINDEX_CREDENTIALS is used, and without
    either the client speaks plain TCP (an ``--insecure`` cluster). ``connect_timeout`` and
    ``handshake_timeout`` bound the wait for one node before the next address is tried.
    ``limits`` fixes the key/value limits instead of learning them from the cluster.

    Opening fetches the member list and limits from the first node that answers and raises
    ``NoNodeReachable`` when none does. Bad arguments raise ``InvalidRequest`` (a
    ValueError) right here.
    """
    return AsyncClient(addresses, **options)


def _is_unavailable(reply: Message) -> bool:
    """An ``unavailable`` refusal: too few replicas usable as its coordinator saw it."""
    return isinstance(reply, ErrorReply) and reply.code == Unavailable.code


def _no_node_took_it(failures: list[str], not_ready: int) -> NoNodeReachable:
    """Nothing was sent, or every node that was reached refused before doing anything: say
    which, since "could not reach" misleads an operator whose nodes answer `not_ready`."""
    tried = "; ".join(failures) if failures else "no address left to try"
    if failures and not_ready == len(failures):
        return NoNodeReachable(f"no node is ready to serve the request (nothing done): {tried}")
    return NoNodeReachable(f"could not reach any node: {tried}")


def _is_overloaded(reply: Message) -> bool:
    """An ``overloaded`` refusal: nothing was done, so the next node may be asked."""
    return isinstance(reply, ErrorReply) and reply.code == Overloaded.code
