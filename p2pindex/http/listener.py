"""Starting a node's HTTP listener: TLS from the operator's files, the API, the limits."""

from __future__ import annotations

import errno
import ssl
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

import trio

from p2pindex.config import HttpConfig
from p2pindex.errors import ConfigError
from p2pindex.http.api import HttpApi
from p2pindex.http.batch_api import batch_body_limit
from p2pindex.http.batching import RequestBatcher
from p2pindex.http.metrics import CONTENT_TYPE, metrics_registry, render
from p2pindex.http.server import HttpLimits, HttpServer, Request, Response

if TYPE_CHECKING:
    from p2pindex.node.node import Node


def tls_context(config: HttpConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot use the HTTP certificate {config.tls_cert} with key {config.tls_key}: {exc}"
        ) from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def build_server(
    node: Node, config: HttpConfig, spawn: Callable[..., None] | None = None
) -> HttpServer:
    limits = HttpLimits(
        max_header_bytes=config.max_header_bytes,
        max_body=node.config.limits.max_value + 64 * 1024,
        larger_bodies=(batch_body_limit(node.config.limits),),
        request_deadline=config.request_deadline,
        idle_timeout=config.idle_timeout,
        send_timeout=config.send_timeout,
        max_connections=config.max_connections,
    )
    registry = metrics_registry(node)

    async def metrics(_request: Request) -> Response:
        return Response(200, render(registry), CONTENT_TYPE)

    page = resources.files("p2pindex.http").joinpath("dashboard.html").read_bytes()

    async def dashboard(_request: Request) -> Response:
        return Response(200, page, "text/html; charset=utf-8", [("cache-control", "no-cache")])

    batcher = RequestBatcher(node.client_batch_handlers(), spawn) if spawn else None
    api = HttpApi(node, extra_routes={"/metrics": metrics, "/": dashboard}, batcher=batcher)
    return HttpServer(
        api, node.stats, limits, tls_context(config), screen=api.screen, body_budget=node.held_bytes
    )


BIND_PROBLEMS = {
    errno.EADDRINUSE: "the address is already in use (by another node's HTTP port, or the "
    "node port itself?); pick another [http] listen / --http",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    errno.EACCES: "this user may not listen on that port (ports below 1024 need privileges)",
}


async def bind_http(config: HttpConfig) -> list[trio.SocketListener]:
    """The HTTP listening sockets, bound before the node starts: a busy port then stops the
    start at once, named as the HTTP address, before the node has joined anyone."""
    host, port = config.listen.host, config.listen.port
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        problem = BIND_PROBLEMS.get(exc.errno or 0, exc.strerror or str(exc))
        raise ConfigError(f"cannot listen for HTTP on {config.listen}: {problem}") from None


async def serve_http(
    node: Node,
    config: HttpConfig,
    listeners: list[trio.SocketListener] | None = None,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled (on ``listeners`` when bound beforehand, see ``bind_http``);
    reports the URL (with the port actually bound)."""
    scheme = "https" if config.tls_cert is not None else "http"
    bound = listeners if listeners is not None else await bind_http(config)
    async with trio.open_nursery() as nursery:
        server = build_server(node, config, nursery.start_soon)
        port = bound[0].socket.getsockname()[1]
        nursery.start_soon(server.serve_listeners, bound)
        host = config.listen.host
        shown = f"[{host}]" if ":" in host else host
        task_status.started(f"{scheme}://{shown}:{port}")
