"""The blocking client: the async client running on a trio loop in one background thread.

Keeping a single implementation (the async one) means routing, failover and error
semantics cannot drift between the two; the thread only carries calls across with
``trio.from_thread`` and the loop's token.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import trio

from p2pindex.client.async_client import CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, AsyncClient
from p2pindex.client.batching import DeleteItem, PutItem
from p2pindex.client.queries import QueryPage
from p2pindex.client.requests import Addresses, ConsistencyArg, Data
from p2pindex.client.results import (
    BatchResult,
    Context,
    DeleteResult,
    GetResult,
    KeyPlacement,
    Member,
    NodeStatus,
    PutResult,
    RingView,
)
from p2pindex.config import Limits
from p2pindex.security.credentials import ClientCredentials
from p2pindex.types import Address, ConsistencyLevel

T = TypeVar("T")


class Client:
    """A blocking client: ``with p2pindex.Client(["host:port"]) as db: db.put("k", "v")``.

    The constructor connects (raising NoNodeReachable when no node answers); ``close()``
    or leaving the ``with`` block stops the background loop. Safe to call from several
    threads at once: every call becomes a task on the same loop.
    """

    def __init__(
        self,
        addresses: Addresses,
        *,
        consistency: ConsistencyArg = ConsistencyLevel.QUORUM,
        timeout: float = 5.0,
        limits: Limits | None = None,
        credentials: ClientCredentials | str | Path | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        """Arguments as for ``p2pindex.connect``. ``credentials``: a credentials file or
        object, else $P2PINDEX_CREDENTIALS; without either the client cannot talk to a
        secure cluster."""
        self._client = AsyncClient(
            addresses,
            consistency=consistency,
            timeout=timeout,
            limits=limits,
            credentials=credentials,
            connect_timeout=connect_timeout,
            handshake_timeout=handshake_timeout,
        )
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="p2pindex-client", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            self._thread.join()
            self._closed = True
            raise self._failure

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # handed to the constructor's thread, which re-raises
            self._failure = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with self._client:
            self._token = trio.lowlevel.current_trio_token()
            self._started.set()
            await self._stop.wait()

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self._closed or self._token is None:
            raise RuntimeError("the client is closed")
        try:
            return trio.from_thread.run(
                functools.partial(fn, *args, **kwargs), trio_token=self._token
            )
        except trio.RunFinishedError:
            raise RuntimeError("the client's background loop has stopped") from self._failure

    def close(self) -> None:
        """Close the connections and stop the background thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def put(
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
        """Store ``value`` under ``key`` and return the context that covers it.

        Without ``context`` the write is concurrent with whatever the key holds and becomes
        a sibling of it; pass the context of a previous get or put to replace what it saw.
        ``consistency`` (one, quorum, all or a count) and ``timeout`` (seconds) override the
        client's defaults for this call; ``strict`` counts only the key's own replicas.
        Raises ``Unavailable`` when too few replicas were reachable (nothing written) and
        ``Timeout``/``ConnectionLost`` when the outcome is unknown (read before retrying).
        ``overwrite=True`` reads first and replaces what the cluster holds now (see
        ``AsyncClient.put``); ``trace=True`` returns the coordinator's steps too.
        """
        return self._call(
            self._client.put,
            key,
            value,
            context=context,
            consistency=consistency,
            timeout=timeout,
            strict=strict,
            overwrite=overwrite,
            index=index,
            trace=trace,
        )

    def put_many(
        self,
        items: Iterable[PutItem | tuple[Any, ...]],
        *,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> BatchResult[PutResult]:
        """Store many keys in one call, each item with its own context; every key's
        outcome in the order given, a failure never hiding another (see
        ``AsyncClient.put_many``)."""
        items = list(items)  # consumed here, not on the client's thread
        return self._call(
            self._client.put_many, items, consistency=consistency, timeout=timeout, strict=strict
        )

    def get_many(
        self,
        keys: Iterable[Data],
        *,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> BatchResult[GetResult]:
        """Read many keys in one call (see ``AsyncClient.get_many``)."""
        keys = list(keys)
        return self._call(
            self._client.get_many, keys, consistency=consistency, timeout=timeout, strict=strict
        )

    def delete_many(
        self,
        keys: Iterable[Data | DeleteItem | tuple[Any, ...]],
        *,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> BatchResult[DeleteResult]:
        """Delete many keys in one call (see ``AsyncClient.delete_many``)."""
        keys = list(keys)
        return self._call(
            self._client.delete_many, keys, consistency=consistency, timeout=timeout, strict=strict
        )

    def keys(self, prefix: Data = b"", **options: Any) -> QueryPage:
        """See ``AsyncClient.keys``."""
        return self._call(self._client.keys, prefix, **options)

    def query(self, index: str, term: object, high: object = None, **options: Any) -> QueryPage:
        """See ``AsyncClient.query``."""
        return self._call(self._client.query, index, term, high, **options)

    def get(
        self,
        key: Data,
        *,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
        trace: bool = False,
    ) -> GetResult:
        """Read every live value of ``key`` (several when writes were concurrent) and the
        context that covers them; ``result.found`` is False for a missing or deleted key."""
        return self._call(
            self._client.get,
            key,
            consistency=consistency,
            timeout=timeout,
            strict=strict,
            trace=trace,
        )

    def delete(
        self,
        key: Data,
        *,
        context: Context | bytes | str | None = None,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
        trace: bool = False,
    ) -> DeleteResult:
        """Delete ``key`` by writing a tombstone; with ``context`` (from a get) it replaces
        exactly the values that get saw. Failures are reported as for ``put``."""
        return self._call(
            self._client.delete,
            key,
            context=context,
            consistency=consistency,
            timeout=timeout,
            strict=strict,
            trace=trace,
        )

    def status(self, node: str | Address | None = None) -> NodeStatus:
        """The status of ``node`` (or of any reachable node): its state, every member with
        liveness and ownership, pending hints and counters."""
        return self._call(self._client.status, node)

    def explain(self, key: Data) -> KeyPlacement:
        """Where the cluster places ``key``: primary, replicas and fallbacks in ring order."""
        return self._call(self._client.explain, key)

    def members(self, node: str | Address | None = None) -> tuple[Member, ...]:
        """The member list as ``node`` (or any reachable node) sees it; refreshes routing."""
        return self._call(self._client.members, node)

    def ring_view(self, node: str | Address | None = None) -> RingView:
        """The members as ``node`` sees them, with N and the virtual nodes per member."""
        return self._call(self._client.ring_view, node)

    def leave(self, node: str | Address) -> None:
        """Ask the node at ``node`` to hand its data over and leave the cluster."""
        self._call(self._client.leave, node)

    def remove(self, node_id: str, node: str | Address | None = None) -> None:
        """Remove a member that will not come back; its ranges move to the other members."""
        self._call(self._client.remove, node_id, node)

    def admit(self, node_id: str, node: str | Address | None = None) -> str:
        """Let a removed member join again; see ``AsyncClient.admit``."""
        return self._call(self._client.admit, node_id, node)

    @property
    def limits(self) -> Limits:
        """The limits requests are checked against (the cluster's, learned on connecting)."""
        return self._client.limits

    def preference_list(self, key: Data) -> tuple[str, ...]:
        """The node ids this client would route ``key`` to, primary first."""
        return self._client.preference_list(key)
