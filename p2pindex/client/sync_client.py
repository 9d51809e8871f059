"""The blocking client: the async client running on a trio loop in one background thread.

Keeping a single implementation (the async one) means routing, failover and error
semantics cannot drift between the two; the thread only carries calls across with
``trio.from_thread`` and the loop's token.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Concatenate, ParamSpec, TypeVar, Unpack

import trio

from p2pindex.client.async_client import AsyncClient, ClientOptions
from p2pindex.client.requests import Addresses, Data, check_batch
from p2pindex.config import Limits
from p2pindex.errors import ClientClosed

T = TypeVar("T")
ItemT = TypeVar("ItemT")
P = ParamSpec("P")


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Awaitable[T]],
) -> Callable[Concatenate[Client, P], T]:
    """The blocking twin of an ``AsyncClient`` method, with its signature and docstring, so
    the two clients cannot drift apart in what they take, do or promise."""

    @functools.wraps(method)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(method, self._client, *args, **kwargs)

    call.__qualname__ = f"Client.{method.__name__}"
    return call


def _blocking_many(
    method: Callable[Concatenate[AsyncClient, Iterable[ItemT], P], Awaitable[T]],
) -> Callable[Concatenate[Client, Iterable[ItemT], P], T]:
    """As ``_blocking``, for a batch call: its items are consumed on the caller's thread
    (a generator is not the loop's to run)."""

    @functools.wraps(method)
    def call(self: Client, items: Iterable[ItemT], /, *args: P.args, **kwargs: P.kwargs) -> T:
        check_batch(method.__name__, items)  # before list() splits a str into characters
        return self._call(method, self._client, list(items), *args, **kwargs)

    call.__qualname__ = f"Client.{method.__name__}"
    return call


class Client(AbstractContextManager["Client"]):
    """A blocking client: ``with p2pindex.Client(["host:port"]) as db: db.put("k", "v")``.

    The constructor connects (raising NoNodeReachable when no node answers); ``close()``
    or leaving the ``with`` block stops the background loop. Safe to call from several
    threads at once: every call becomes a task on the same loop.
    """

    def __init__(self, addresses: Addresses, **options: Unpack[ClientOptions]) -> None:
        """Arguments as for ``p2pindex.connect``. ``credentials``: a credentials file or
        object, else $P2PINDEX_CREDENTIALS; without either the client cannot talk to a
        secure cluster."""
        self._client = AsyncClient(addresses, **options)
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
        """Run ``fn`` on the loop; ``ClientClosed`` (definite: nothing was sent) once the
        client is closed or its loop has stopped."""
        if self._closed or self._token is None:
            raise ClientClosed("the client was closed; open a new one to send requests")
        try:
            return trio.from_thread.run(
                functools.partial(fn, *args, **kwargs), trio_token=self._token
            )
        except trio.RunFinishedError:
            raise ClientClosed(
                "the client's background loop has stopped; open a new client"
            ) from self._failure

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

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Every call is the async client's, run on the loop: same arguments, same
    # documentation, one implementation.
    put = _blocking(AsyncClient.put)
    get = _blocking(AsyncClient.get)
    delete = _blocking(AsyncClient.delete)
    put_many = _blocking_many(AsyncClient.put_many)
    get_many = _blocking_many(AsyncClient.get_many)
    delete_many = _blocking_many(AsyncClient.delete_many)
    keys = _blocking(AsyncClient.keys)
    query = _blocking(AsyncClient.query)
    status = _blocking(AsyncClient.status)
    explain = _blocking(AsyncClient.explain)
    members = _blocking(AsyncClient.members)
    ring_view = _blocking(AsyncClient.ring_view)
    leave = _blocking(AsyncClient.leave)
    remove = _blocking(AsyncClient.remove)
    admit = _blocking(AsyncClient.admit)

    @property
    def limits(self) -> Limits:
        """The limits requests are checked against (the cluster's, learned on connecting)."""
        return self._client.limits

    def preference_list(self, key: Data) -> tuple[str, ...]:
        """The node ids this client would route ``key`` to, primary first."""
        return self._client.preference_list(key)
