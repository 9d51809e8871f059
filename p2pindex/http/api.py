"""The HTTP API: requests mapped onto the node's client operations, answers mapped back.

Nothing here coordinates anything: a key request becomes the same ``GetRequest``,
``PutRequest`` or ``DeleteRequest`` a binary-protocol client sends, and goes through
``Node.serve_client`` (the authorisation and dispatch a client session gets), so both
protocols share one copy of request handling, limits and counters.

Keys are the percent-decoded path segment after ``/v1/kv/`` (any bytes; a ``%`` not followed
by two hex digits is refused). The causal context travels base64url in ``X-P2P-Context``:
a read returns it, a write passes it back. One value is the raw body; concurrent siblings
are ``300 Multiple Choices`` with JSON ``{"siblings": [base64...], "context": ...}``.
A PUT takes the native put's index terms (``index=NAME:TERM``, repeatable, terms spelled
as queries spell them) and ``overwrite=true``: without them an HTTP update would file its
version under no terms and drop the key from every index it was in.

``POST /v1/batch`` serves many gets, puts and deletes in one request, each item answered as
its single-key request would be (``p2pindex.http.batch_api``).

``/v1/keys`` and ``/v1/query/{index}`` become the ``QueryRequest`` of ``AsyncClient.keys``
and ``query`` (``p2pindex.http.queries`` reads the parameters and writes the JSON page).
An ``X-P2P-Trace`` on one shows the query coordinator's steps (the plan, each replica's
answer, the page decided); ``explain=true`` adds the coverage plan to the page itself.
A trace without steps (a request refused before it was planned) is answered with a note
instead of an empty header (``trace_note``), which would read as "nothing was asked".

With security on, a request without a bearer token is challenged as RFC 6750 section 3.1
has it, ``WWW-Authenticate: Bearer realm="p2pindex"`` and no error code (the client may not
have known a token was needed); a token that is present but refused (malformed, expired,
revoked) gets ``error="invalid_token"`` with the reason, and a good token asking beyond its
role or prefix a ``403`` with ``error="insufficient_scope"``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_to_bytes

from p2pindex.errors import InvalidRequest, P2PIndexError
from p2pindex.http import queries as http_queries
from p2pindex.http.batching import RequestBatcher
from p2pindex.http.problems import PROBLEM_TYPE, problem, problem_for
from p2pindex.http.server import Request, Response
from p2pindex.node import trace as trace_seam
from p2pindex.node.trace import RequestTrace, tracing
from p2pindex.security.access import Peer, PeerKind
from p2pindex.security.bearer import BearerVerifier
from p2pindex.security.errors import AccessDenied, CredentialRejected
from p2pindex.types import ConsistencyLevel, NodeState, consistency_to_wire, parse_consistency
from p2pindex.wire.messages import (
    DeleteReply,
    DeleteRequest,
    ErrorReply,
    ExplainReply,
    ExplainRequest,
    GetReply,
    GetRequest,
    MembersReply,
    MembersRequest,
    Message,
    PutReply,
    PutRequest,
    QueryReply,
    QueryRequest,
    StatusReply,
    StatusRequest,
)

if TYPE_CHECKING:
    from p2pindex.node.node import Node

log = logging.getLogger(__name__)

CONTEXT_HEADER = "x-p2p-context"
BATCH_PATH = "/v1/batch"
REQUEST_ID_HEADER = "x-request-id"
TRACE_HEADER = "x-p2p-trace"
"""Request header: ask for the coordinator's steps; response header: the steps, as JSON."""
UNTRACED_PATHS = ("/v1/keys", "/v1/query/")
"""Paths whose trace is answered only when it holds steps: a listing refused before its
query was planned gets a note instead of an empty list that would read as "nothing was
asked"."""
QUERY_TRACE_NOTE = (
    "this request was answered before its query was planned, so there are no coordinator "
    "steps and no X-P2P-Trace header"
)
REALM = "p2pindex"
"""The protection space of RFC 6750's challenges: one for the whole API."""
_SCOPE_REASONS = frozenset({"role", "prefix", "node_only"})
"""``AccessDenied`` reasons that mean "this token, but not for this": insufficient_scope."""
WARNING_HEADER = "x-p2p-warning"
JSON = "application/json"
OCTETS = "application/octet-stream"
MAX_CONTEXT_CHARS = 16 * 1024
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count()
"""Generated ids: a per-process random prefix and a counter (unique, and cheaper than
reading random bytes for every request)."""
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_KEY_METHODS = {"GET", "HEAD", "PUT", "DELETE"}
_READS = {"GET", "HEAD"}
READ_ONLY = [("allow", "GET, HEAD")]
READ_FLAG_HEADER = "x-p2p-read-first"
SIBLINGS_HEADER = "x-p2p-siblings"
UNSEEN_HEADER = "x-p2p-unseen-may-remain"
_QUERY_NAMES = {"consistency", "strict", "timeout_ms"}
_PUT_NAMES = {"index", "overwrite"}
"""Parameters only a PUT takes; ``index`` (one ``NAME:TERM`` each) may repeat."""


class HttpApi:
    """The request handler of a node's HTTP listener (see ``HttpServer``)."""

    def __init__(
        self,
        node: Node,
        *,
        extra_routes: dict[str, Any] | None = None,
        batcher: RequestBatcher | None = None,
    ) -> None:
        self._node = node
        self._batcher = batcher
        self._bearer = BearerVerifier(node.security.state) if node.security is not None else None
        self._routes = extra_routes or {}
        # Imported here: batch_api builds its answers from this module's helpers.
        from p2pindex.http.batch_api import BatchEndpoint

        self._batch = BatchEndpoint(node, self._authenticate, self._index_terms)

    async def __call__(self, request: Request) -> Response:
        """Answer ``request``, tagged with its request id (the client's or a new one)."""
        started = time.perf_counter()
        request_id = _request_id(request.headers.get(REQUEST_ID_HEADER))
        trace = None
        wanted = request.headers.get(TRACE_HEADER, "").lower() in ("1", "true", "yes")
        # A batch refuses the header itself (BatchEndpoint): no empty trace on its 400.
        if wanted and request.target.partition("?")[0] != BATCH_PATH:
            trace = RequestTrace(request_id)
        if trace is None:
            response = await self._answer(request)
        else:
            with tracing(trace):
                response = await self._answer(request)
        response.headers.append((REQUEST_ID_HEADER, request_id))
        if trace is not None:
            if trace.steps or not request.target.startswith(UNTRACED_PATHS):
                doc = json.dumps(trace.doc(), separators=(",", ":"))
                response.headers.append((TRACE_HEADER, doc))
            else:
                _note_untraced(response)
        if log.isEnabledFor(logging.DEBUG):
            elapsed = (time.perf_counter() - started) * 1000
            log.debug(
                "request %s: %s %s from %s -> %d in %.2f ms",
                request_id,
                request.method,
                request.target[:200],
                request.peer,
                response.status,
                elapsed,
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": request.method,
                        "path": request.target[:200],
                        "status": response.status,
                        "ms": round(elapsed, 3),
                    }
                },
            )
        return response

    async def _answer(self, request: Request) -> Response:
        path, _, query = request.target.partition("?")
        try:
            if path.startswith("/v1/kv/"):
                return await self._kv(request, path[len("/v1/kv/") :], query)
            if path == BATCH_PATH:
                return await self._batch(request, query)
            if path == "/v1/keys" or path.startswith("/v1/query/"):
                return await self._query(request, path, query)
            if path in ("/v1/status", "/v1/members") or path.startswith("/v1/explain/"):
                return await self._admin(request, path, query)
            route = self._routes.get(path)
            if path not in ("/livez", "/readyz") and route is None:
                return problem(404, "not_found", f"no resource at {path[:200]}")
            if request.method not in _READS:
                return _read_only(request.method, path)
            if path == "/livez":
                return Response(200, b"ok\n")
            if path == "/readyz":
                return self._readyz()
            assert route is not None
            return await route(request)
        except P2PIndexError as exc:
            answer = problem_for(exc, read=request.method in _READS)
            if isinstance(exc, AccessDenied) and exc.reason in _SCOPE_REASONS:
                challenge = _challenge("insufficient_scope", str(exc))
                answer.headers.append(("www-authenticate", challenge))
            return answer

    def screen(self, request: Request) -> Response | None:
        """A request whose client waits (``Expect: 100-continue``) before sending its body:
        the answer its head already decides (a bad key or parameter, a missing token, a
        value announced over the limit), so the body is never sent; None to go ahead."""
        path, _, query = request.target.partition("?")
        if not path.startswith("/v1/kv/") or request.method != "PUT":
            return None
        announced = request.headers.get("content-length", "")
        limit = self._node.config.limits.max_value
        if announced.isdigit() and int(announced) > limit:
            return _value_too_large(limit)
        try:
            checked = self._kv_message(request, path[len("/v1/kv/") :], query, count_rate=False)
        except P2PIndexError as exc:
            return problem_for(exc)
        return checked if isinstance(checked, Response) else None

    # --- keys -------------------------------------------------------------------------------

    async def _kv(self, request: Request, raw_key: str, query: str) -> Response:
        checked = self._kv_message(request, raw_key, query)
        if isinstance(checked, Response):
            return checked
        message, peer = checked
        batcher = self._batcher
        if batcher is not None and batcher.serves(message) and trace_seam.current() is None:
            self._node.authorize_client(message, peer)
            reply = await batcher.submit(message)
        else:
            reply = await self._node.serve_client(message, peer)
        return kv_response(reply, read=request.method in _READS)

    def _kv_message(
        self, request: Request, raw_key: str, query: str, *, count_rate: bool = True
    ) -> tuple[Message, Peer | None] | Response:
        """The request a key operation stands for and the client it speaks for, or the
        answer that refuses it."""
        if request.method not in _KEY_METHODS:
            return problem(
                405,
                "method_not_allowed",
                f"{request.method} is not served on keys; use GET, PUT or DELETE",
                headers=[("allow", "GET, HEAD, PUT, DELETE")],
            )
        key = self._key(raw_key, "/v1/kv/{key}")
        params, written = parse_query(query, request.method)
        consistency = params.get("consistency", "quorum")
        try:
            wire_consistency = consistency_to_wire(parse_consistency(consistency))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        strict = _flag(params.get("strict", "false"), "strict")
        timeout_ms = _int_param(params.get("timeout_ms", "0"), "timeout_ms")
        terms = self._index_terms(written) if written else None
        peer = self._authenticate(request, count_rate=count_rate)
        if isinstance(peer, Response):
            return peer
        if request.method in _READS:
            return GetRequest(key, wire_consistency, timeout_ms, strict), peer
        context = decode_context(request.headers.get(CONTEXT_HEADER))
        if request.method == "DELETE":
            return DeleteRequest(key, context, wire_consistency, timeout_ms, strict), peer
        overwrite = _overwrite(params, context)
        limit = self._node.config.limits.max_value
        if len(request.body) > limit:
            return _value_too_large(limit)
        put = PutRequest(
            key,
            request.body,
            context,
            wire_consistency,
            timeout_ms,
            strict,
            overwrite=overwrite,
            index=terms,
        )
        return put, peer

    def _index_terms(self, written: list[str]) -> bytes | None:
        """A PUT's ``index=`` terms for the wire, or its refusal, counted as the node
        counts the bad terms a native client sends (``rejected.bad_index_terms``)."""
        try:
            return http_queries.written_terms(written, self._node.config.term_limits)
        except InvalidRequest as exc:
            self._node.stats.incr("rejected.bad_index_terms")
            raise InvalidRequest(f"{exc}; nothing written") from None

    def _key(self, raw: str, form: str) -> bytes:
        key = decode_component(raw, "key")
        return checked_key(key, self._node.config.limits.max_key, f"the key is empty: use {form}")

    # --- listings and index queries ---------------------------------------------------------

    async def _query(self, request: Request, path: str, query: str) -> Response:
        if request.method not in _READS:
            return _read_only(request.method, "listings and queries")
        message: QueryRequest
        try:
            if path == "/v1/keys":
                message = http_queries.listing_request(query)
                terms = False
            else:
                index = decode_component(path[len("/v1/query/") :], "index name")
                message = http_queries.query_request(index, query)
                terms = http_queries.wants_terms(query)
        except InvalidRequest:
            # The node counts the refusals it makes itself; this layer counts its own.
            self._node.stats.incr("rejected.bad_query")
            raise
        peer = self._authenticate(request)
        if isinstance(peer, Response):
            return peer
        reply = await self._node.serve_client(message, peer)
        if isinstance(reply, ErrorReply):
            return _error_reply(reply, read=True)
        if not isinstance(reply, QueryReply):
            return problem(500, "error", f"unexpected reply {type(reply).__name__}")
        doc = http_queries.reply_document(reply, terms=terms, values=message.values)
        return Response(200, json.dumps(doc, ensure_ascii=False).encode(), JSON)

    # --- admin reads ------------------------------------------------------------------------

    async def _admin(self, request: Request, path: str, query: str) -> Response:
        if request.method not in _READS:
            return _read_only(request.method, "admin resources")
        if query:
            raise InvalidRequest(f"{path.split('/')[2]} takes no query parameters")
        peer = self._authenticate(request)
        if isinstance(peer, Response):
            return peer
        message: Message
        key = b""
        if path == "/v1/status":
            message = StatusRequest()
        elif path == "/v1/members":
            message = MembersRequest()
        else:
            key = self._key(path[len("/v1/explain/") :], "/v1/explain/{key}")
            message = ExplainRequest(key)
        reply = await self._node.serve_client(message, peer)
        if isinstance(reply, ErrorReply):
            return _error_reply(reply, read=True)
        if isinstance(reply, StatusReply):
            doc: object = reply.status
        elif isinstance(reply, MembersReply):
            doc = {"n_replicas": reply.n_replicas, "vnodes": reply.vnodes, "members": reply.members}
        elif isinstance(reply, ExplainReply):
            doc = explain_document(reply.explain, key)
        else:
            doc = {}
        return Response(200, json.dumps(doc, default=str).encode(), JSON)

    # --- health -----------------------------------------------------------------------------

    def _readyz(self) -> Response:
        reasons = readiness(self._node)
        if reasons:
            return Response(503, ("not ready: " + "; ".join(reasons) + "\n").encode())
        return Response(200, b"ready\n")

    # --- authentication ---------------------------------------------------------------------

    def _authenticate(self, request: Request, *, count_rate: bool = True) -> Peer | Response | None:
        """The client a request speaks for (None with security off), or the answer instead:
        401 for a missing or refused token, 429 for a token over its client rate (counted
        unless ``count_rate`` is false: a screen's look at a request that comes again)."""
        node = self._node
        if self._bearer is None or node.security is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise CredentialRejected(
                    "missing",
                    "this node needs an Authorization: Bearer token (an operator issues one "
                    "with `p2pindex token issue --authority DIR --role ROLE --bearer --out "
                    "FILE`)",
                )
            capability = self._bearer.verify(token.strip(), time.time())
        except CredentialRejected as exc:
            reason = exc.reason
            node.security.incr(f"bearer.{exc.reason}")
            node.security.audit.record(
                "bearer_refused", address=request.peer, reason=exc.reason, detail=str(exc)
            )
            # RFC 6750 3.1: a request with no token at all (or another scheme) is told only
            # that a bearer token is needed; an error code is for a token that was refused.
            challenge = (
                _challenge()
                if reason == "missing"
                else _challenge("invalid_token", str(exc), reason)
            )
            return problem(
                401,
                "unauthenticated",
                str(exc),
                headers=[("www-authenticate", challenge)],
                reason=reason,
            )
        refusal = node.client_rate_refusal(capability.public_key) if count_rate else None
        if refusal is not None:
            return problem(
                429,
                "overloaded",
                f"{refusal}; nothing was done, try again shortly",
                headers=[("retry-after", "1")],
            )
        return Peer(PeerKind.CLIENT, capability)


def readiness(node: Node) -> list[str]:
    """Why ``node`` should not take traffic from a load balancer (empty: it should): also
    while it reaches too few members to serve the default (QUORUM) requests, since a node
    cut off from the others refuses them all while the balancer keeps sending them."""
    reasons = []
    if node.state is not NodeState.ACTIVE:
        detail = f": {node.state_reason}" if node.state_reason else ""
        reasons.append(f"state is {node.state.value}{detail}")
    if node.leaving:
        reasons.append("the node is leaving the cluster")
    if not node.membership_confirmed:
        reasons.append("no seed or known member has answered since the node started")
    if not node.ring_known():
        why = "" if node.membership_confirmed else " (no seed answered yet)"
        reasons.append(
            f"the ring has {len(node.ring.nodes)} node(s), fewer than N={node.config.n_replicas}"
            f"{why}"
        )
    cut_off = _quorum_unreachable(node)
    if cut_off:
        reasons.append(cut_off)
    return reasons


def _quorum_unreachable(node: Node) -> str | None:
    """Why ``node`` cannot serve QUORUM requests, if it cannot: it counts itself and the
    ring's members it would route a request to (``Node.usable``: alive or suspected, as its
    coordinator sees them), against a quorum of N, or the whole ring when it is smaller than
    N (a lone node of N=3 serves ONE, so this never calls it unready)."""
    ring = node.ring.nodes
    needed = min(ConsistencyLevel.QUORUM.required(node.config.n_replicas), len(ring))
    reachable = node.reachable_ring_members()
    if reachable >= needed:
        return None
    verb = "is" if reachable == 1 else "are"
    return (
        f"only {reachable} of the ring's {len(ring)} members {verb} reachable; "
        f"quorum requests need {needed}"
    )


def _note_untraced(response: Response) -> None:
    """Say in a JSON answer (a page or a problem) why it carries no trace header."""
    if response.content_type not in (JSON, PROBLEM_TYPE):
        return
    try:
        doc = json.loads(response.body)
    except ValueError:
        return
    if isinstance(doc, dict):
        doc["trace_note"] = QUERY_TRACE_NOTE
        response.body = json.dumps(doc, ensure_ascii=False).encode()


def _challenge(error: str = "", description: str = "", reason: str = "") -> str:
    """A ``WWW-Authenticate`` value (RFC 6750 section 3): the realm alone, or with an error
    code, its description and our reason key. Parameter values are quoted-strings limited
    to printable ASCII without ``"`` or ``\\``, as the RFC's grammar for them requires."""
    parts = [f'Bearer realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{_auth_param(description)}"')
    if reason:
        parts.append(f'reason="{_auth_param(reason)}"')
    return ", ".join(parts)


def _auth_param(text: str, limit: int = 512) -> str:
    """``text`` as a quoted-string's content: ``"`` becomes ``'``, a backslash or anything
    outside printable ASCII becomes ``?``."""
    return "".join(
        "'" if char == '"' else char if " " <= char <= "~" and char != "\\" else "?"
        for char in text[:limit]
    )


def explain_document(explain: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``p2pindex explain``'s document with the key also as its user wrote it: ``key`` stays
    the hex it always was (clients read it), ``key_text`` is the key as text when it is
    UTF-8 (null otherwise), ``key_hex`` the hex again under a name that says so."""
    try:
        text: str | None = key.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {**explain, "key_text": text, "key_hex": key.hex()}


def _request_id(given: str | None) -> str:
    """The client's id when it is a sane token (echoed back), else a fresh random one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def checked_key(key: bytes, limit: int, empty: str, where: str = "") -> bytes:
    """``key`` if a node takes it; InvalidRequest with ``empty`` for an empty one, or naming
    the limit (after ``where``, the item it belongs to) for one too long."""
    if not key:
        raise InvalidRequest(empty)
    if len(key) > limit:
        raise InvalidRequest(f"{where}the key is {len(key)} bytes, over the {limit}-byte limit")
    return key


def decode_component(raw: str, what: str) -> bytes:
    if _BAD_PERCENT.search(raw):
        raise InvalidRequest(f"the {what} has a bad percent-encoding (% must start %XX)")
    return unquote_to_bytes(raw)


def parse_query(query: str, method: str = "GET") -> tuple[dict[str, str], list[str]]:
    """A key request's parameters, each once, and a PUT's ``index=`` values in order (the
    one that repeats). Decoded strictly: a term that is not UTF-8 would otherwise be filed
    as U+FFFD, a different term from the one the client sent."""
    if _BAD_PERCENT.search(query):
        raise InvalidRequest("the query string has a bad percent-encoding (% must start %XX)")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest("the query string is not UTF-8 once percent-decoded") from None
    known = _QUERY_NAMES | _PUT_NAMES if method == "PUT" else _QUERY_NAMES
    params: dict[str, str] = {}
    written: list[str] = []
    for name, value in pairs:
        if name in _PUT_NAMES and name not in known:
            raise InvalidRequest(f"{name}= is taken by PUT only, not by {method[:20]}")
        if name not in known:
            raise InvalidRequest(
                f"unknown query parameter {name[:40]!r}; known: {', '.join(sorted(known))}"
            )
        if name == "index":
            written.append(value)
        elif name in params:
            raise InvalidRequest(f"{name} is given more than once")
        else:
            params[name] = value
    return params, written


def _flag(value: str, name: str) -> bool:
    flag = _TRUE.get(value.lower())
    if flag is None:
        raise InvalidRequest(f"{name} must be true or false, not {value[:20]!r}")
    return flag


def _overwrite(params: dict[str, str], context: bytes | None) -> bool:
    """A PUT's ``overwrite=``, refused beside a context as the native client refuses it:
    the two name different versions to replace, and neither should silently win."""
    overwrite = _flag(params.get("overwrite", "false"), "overwrite")
    if overwrite and context is not None:
        raise InvalidRequest(
            "a PUT takes an X-P2P-Context or overwrite=true, not both (the context "
            "replaces what its read saw, overwrite what the cluster holds now); "
            "nothing written"
        )
    return overwrite


def _int_param(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise InvalidRequest(f"{name} must be a whole number of milliseconds, not {value[:20]!r}")
    return int(value)


def decode_context(text: str | None, what: str = "the X-P2P-Context header") -> bytes | None:
    """A context as a read gave it (base64url, unpadded), or None when absent or empty."""
    if text is None or text == "":
        return None
    if len(text) > MAX_CONTEXT_CHARS:
        raise InvalidRequest(f"{what} is too long; pass back what a read gave")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{what} is not base64url; pass back what a read gave") from None


def encode_context(context: bytes) -> str:
    return base64.urlsafe_b64encode(context).rstrip(b"=").decode()


def kv_response(reply: Message, *, read: bool) -> Response:
    if isinstance(reply, ErrorReply):
        return _error_reply(reply, read=read)
    if isinstance(reply, GetReply):
        headers = [(CONTEXT_HEADER, encode_context(reply.context))]
        if not reply.values:
            return problem(404, "not_found", "no value under this key", headers=headers)
        if len(reply.values) == 1:
            return Response(200, reply.values[0], OCTETS, headers)
        doc = {
            "siblings": [base64.b64encode(value).decode() for value in reply.values],
            "context": encode_context(reply.context),
        }
        return Response(300, json.dumps(doc).encode(), JSON, headers)
    if isinstance(reply, PutReply | DeleteReply):
        headers = [(CONTEXT_HEADER, encode_context(reply.context))]
        if isinstance(reply, PutReply):
            headers.append((SIBLINGS_HEADER, str(reply.siblings)))
            if reply.warning:
                headers.append((WARNING_HEADER, reply.warning))
        if reply.read_first:
            headers.append((READ_FLAG_HEADER, "true"))
        if reply.unseen_may_remain:
            headers.append((UNSEEN_HEADER, "true"))
        return Response(204, b"", OCTETS, headers)
    return problem(500, "error", f"unexpected reply {type(reply).__name__}")


def _read_only(method: str, what: str) -> Response:
    return problem(
        405,
        "method_not_allowed",
        f"{what} are read-only: GET, not {method[:20]}",
        headers=READ_ONLY,
    )


def _value_too_large(limit: int) -> Response:
    return problem(413, "too_large", f"the value is over the {limit}-byte limit; nothing written")


def _error_reply(reply: ErrorReply, *, read: bool) -> Response:
    """A relayed request's error, as the client-facing error it stands for."""
    from p2pindex.wire.errors import error_from_reply

    return problem_for(error_from_reply(reply), read=read)
