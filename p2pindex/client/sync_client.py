"""The blocking client: the async client running on a trio loop in one background thread.

Keeping a single implementation (the async one) means routing, failover and error
semantics cannot drift between the two; the thread only carries calls across with
``trio.from_thread`` and the loop's token.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import trio

from p2pindex.client.async_client import AsyncClient
from p2pindex.client.queries import QueryPage
from p2pindex.client.requests import ConsistencyArg, Data
from p2pindex.client.results import Context, DeleteResult, GetResult, PutResult
from p2pindex.config import Limits
from p2pindex.security.credentials import ClientCredentials
from p2pindex.types import Address, ConsistencyLevel
from p2pindex.wire.messages import MembersReply

T = TypeVar("T")


class Client:
    """A blocking client: ``with p2pindex.Client(["host:port"]) as db: db.put("k", "v")``.

    The constructor connects (raising NoNodeReachable when no node answers); ``close()``
    or leaving the ``with`` block stops the background loop. Safe to call from several
    threads at once: every call becomes a task on the same loop.
    """

    def __init__(
        self,
        addresses: str | Address | list[str | Address] | tuple[str | Address, ...],
        *,
        consistency: ConsistencyArg = ConsistencyLevel.QUORUM,
        timeout: float = 5.0,
        limits: Limits | None = None,
        credentials: ClientCredentials | str | Path | None = None,
    ) -> None:
        """``credentials`` as for ``connect``: a credentials file or object, else
        $P2PINDEX_CREDENTIALS; without either the client cannot talk to a secure cluster."""
        self._client = AsyncClient(
            addresses,
            consistency=consistency,
            timeout=timeout,
            limits=limits,
            credentials=credentials,
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
        index: Mapping[str, Any] | None = None,
    ) -> PutResult:
        return self._call(
            self._client.put,
            key,
            value,
            context=context,
            consistency=consistency,
            timeout=timeout,
            strict=strict,
            index=index,
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
    ) -> GetResult:
        return self._call(
            self._client.get, key, consistency=consistency, timeout=timeout, strict=strict
        )

    def delete(
        self,
        key: Data,
        *,
        context: Context | bytes | str | None = None,
        consistency: ConsistencyArg | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> DeleteResult:
        return self._call(
            self._client.delete,
            key,
            context=context,
            consistency=consistency,
            timeout=timeout,
            strict=strict,
        )

    def status(self, node: str | Address | None = None) -> dict:
        return self._call(self._client.status, node)

    def explain(self, key: Data) -> dict:
        return self._call(self._client.explain, key)

    def members(self, node: str | Address | None = None) -> MembersReply:
        return self._call(self._client.members, node)

    def leave(self, node: str | Address) -> None:
        self._call(self._client.leave, node)

    def remove(self, node_id: str, node: str | Address | None = None) -> None:
        self._call(self._client.remove, node_id, node)

    def preference_list(self, key: Data) -> tuple[str, ...]:
        return self._client.preference_list(key)
