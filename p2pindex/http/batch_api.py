"""``POST /v1/batch``: many gets, puts and deletes in one HTTP request, for any language.

The native protocol's ``BatchRequest`` serves many requests in one frame; this is the same
for HTTP clients. The body is JSON::

    {"requests": [{"op": "put", "key": "a", "value": "<base64>", "context": "..."},
                  {"op": "get", "key_b64": "<base64>"},
                  {"op": "delete", "key": "b", "context": "..."}],
     "consistency": "quorum", "strict": false, "timeout_ms": 0}

and the answer is ``200`` with ``{"results": [...]}``, one per item in request order, each
with the ``status`` its single-key request (``/v1/kv/{key}``) would have had and that
request's answer as fields: ``value`` (base64) and ``context`` for a 200, ``siblings`` and
``context`` for a 300, ``context`` (and ``sibling_count``, ``warning``, ``read_first``,
``unseen_may_remain`` when the headers would be sent) for a 204, and the very problem
document under ``problem`` for a 4xx or 5xx. The answers are made by the single-key API's
own ``kv_response`` and ``problem_for``, so the two cannot drift apart.

Why items are judged one by one: as in the native batch, a bad item (bad base64, a value
over the limit, a key the token does not cover) gets its own error naming it
(``requests[3] (key 'a'): ...``) and the others are served. Errors the node answers (a
quorum not reached, a forged context) keep the single-key problem's very words; the
result's position names the item. Only an envelope that is wrong
as a whole (not JSON, no ``requests`` list, an unknown top-level field, more than
``MAX_BATCH_ITEMS`` items, a bad default) is refused outright, before anything is done.

A key may appear once per batch, as in the native batch (``client_batch.open_batch``):
every item of a repeated key is refused, since which write should win is the caller's
choice, never an accident of order.

The items that pass go to the node's batch handlers (``Node.client_batch_handlers``: the
handlers a native connection and its ``BatchRequest`` use, timed per operation), writes in
one call and reads in another, so a batch costs one replica round, not one per item. Each
item is authorised first as a single-key request is (``Node.authorize_client``). The bearer
token is checked once, and the batch counts once against the token's rate, as a native
``BatchRequest`` frame does.

``X-P2P-Trace`` is refused on a batch (400): its items share one replica round, so their
steps could not be told apart; trace a single key instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from p2pindex.config import Limits
from p2pindex.errors import InvalidRequest, P2PIndexError
from p2pindex.http.api import (
    BATCH_PATH,
    CONTEXT_HEADER,
    JSON,
    READ_FLAG_HEADER,
    SIBLINGS_HEADER,
    TRACE_HEADER,
    UNSEEN_HEADER,
    WARNING_HEADER,
    checked_key,
    decode_context,
    kv_response,
)
from p2pindex.http.problems import PROBLEM_TYPE, problem, problem_for
from p2pindex.http.server import BodyLimit, Request, Response
from p2pindex.net.channel import BatchHandler
from p2pindex.node.client_batch import duplicate_key
from p2pindex.security.access import Peer
from p2pindex.types import consistency_to_wire, key_text, parse_consistency
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import (
    MAX_BATCH_ITEMS,
    DeleteRequest,
    ErrorReply,
    GetReply,
    GetRequest,
    Message,
    PutRequest,
)

if TYPE_CHECKING:
    from p2pindex.node.node import Node

TOP_FIELDS = frozenset({"requests", "consistency", "strict", "timeout_ms"})
ITEM_FIELDS: dict[str, frozenset[str]] = {
    "get": frozenset({"op", "key", "key_b64", "consistency", "strict", "timeout_ms"}),
    "delete": frozenset({"op", "key", "key_b64", "context", "consistency", "strict", "timeout_ms"}),
    "put": frozenset(
        {
            "op",
            "key",
            "key_b64",
            "value",
            "context",
            "overwrite",
            "index",
            "consistency",
            "strict",
            "timeout_ms",
        }
    ),
}
"""The fields each operation takes: the single-key request's query parameters and headers."""
MAX_TIMEOUT_MS = 999_999_999
"""The largest ``timeout_ms`` (the single-key API's nine digits)."""
RESULT_SLACK = 256
"""Bytes allowed per result besides its values when the answer's size is judged."""

KeyRequest = GetRequest | PutRequest | DeleteRequest
Authenticate = Callable[[Request], "Peer | Response | None"]
IndexTerms = Callable[[list[str]], "bytes | None"]


def batch_body_limit(limits: Limits) -> BodyLimit:
    """The body limit of ``POST /v1/batch``: the native frame limit, so an HTTP batch
    carries what a native ``BatchRequest`` can (less base64's third), and a 413 saying how
    to split one that is over it."""
    return BodyLimit(
        BATCH_PATH,
        limits.max_frame,
        f"values travel base64 (4/3 of their size): split the batch into smaller ones "
        f"(at most {MAX_BATCH_ITEMS} items, values adding up to well under "
        f"{limits.max_frame * 3 // 4} bytes)",
    )


class _Fields(dict[str, Any]):
    """A JSON object whose names were not all distinct (``duplicates`` names them): the
    standard decoder would keep the last silently, so which one counts is left to the
    sender's library."""

    duplicates: list[str]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) == len(pairs):
        return fields
    repeated = _Fields(fields)
    seen: set[str] = set()
    repeated.duplicates = []
    for name, _value in pairs:
        if name in seen:
            repeated.duplicates.append(name)
        seen.add(name)
    return repeated


@dataclass(frozen=True, slots=True)
class _Defaults:
    """The envelope's defaults for every item (each may override them)."""

    consistency: str | int
    strict: bool
    timeout_ms: int


class BatchEndpoint:
    """Serves ``POST /v1/batch`` for ``HttpApi`` with its authentication and index terms."""

    def __init__(self, node: Node, authenticate: Authenticate, index_terms: IndexTerms) -> None:
        self._node = node
        self._authenticate = authenticate
        self._index_terms = index_terms
        self._handlers: dict[type[Message], BatchHandler] | None = None

    async def __call__(self, request: Request, query: str) -> Response:
        if request.method != "POST":
            return problem(
                405,
                "method_not_allowed",
                f"{BATCH_PATH} takes POST, not {request.method[:20]}",
                headers=[("allow", "POST")],
            )
        peer = self._authenticate(request)
        if isinstance(peer, Response):
            return peer
        try:
            items, defaults = self._envelope(request, query)
        except InvalidRequest as exc:
            self._node.stats.incr("rejected.bad_input")
            raise InvalidRequest(f"{exc}; nothing was done") from None
        results = await self._serve(items, defaults, peer)
        stats = self._node.stats
        for result in results:
            stats.incr(f"http.batch_items.{result['status'] // 100}xx")
        body = json.dumps({"results": results}, ensure_ascii=False, separators=(",", ":"))
        return Response(200, body.encode(), JSON)

    # --- the envelope -----------------------------------------------------------------------

    def _envelope(self, request: Request, query: str) -> tuple[list[Any], _Defaults]:
        """The items and the defaults of a batch, or InvalidRequest refusing it whole."""
        if query:
            raise InvalidRequest(
                f"{BATCH_PATH} takes no query parameters; give consistency, strict and "
                "timeout_ms in the JSON body"
            )
        if request.headers.get(TRACE_HEADER, "").lower() in ("1", "true", "yes"):
            raise InvalidRequest(
                f"{TRACE_HEADER} is not served on {BATCH_PATH}: a batch's items share one "
                "replica round, so their steps cannot be told apart; trace a single key "
                "with /v1/kv/{key}"
            )
        try:
            doc = json.loads(request.body, object_pairs_hook=_object)
        except json.JSONDecodeError as exc:  # its own wording ("Expecting value") is not ours
            raise InvalidRequest(
                f"the body is not valid JSON (at line {exc.lineno}, column {exc.colno})"
            ) from None
        except UnicodeDecodeError:
            raise InvalidRequest("the body is not UTF-8 text; JSON must be") from None
        except RecursionError:
            raise InvalidRequest("the body's JSON is nested too deeply") from None
        if not isinstance(doc, dict):
            raise InvalidRequest(
                f'the body must be a JSON object {{"requests": [...]}}, not {_kind(doc)}'
            )
        if isinstance(doc, _Fields):
            raise InvalidRequest(f"the body gives {doc.duplicates[0][:40]!r} more than once")
        unknown = sorted(set(doc) - TOP_FIELDS)
        if unknown:
            raise InvalidRequest(
                f"unknown field {unknown[0][:40]!r} in the body; known: "
                f"{', '.join(sorted(TOP_FIELDS))}"
            )
        items = doc.get("requests")
        if not isinstance(items, list):
            missing = "requests" not in doc
            raise InvalidRequest(
                'the body has no "requests" list'
                if missing
                else f'"requests" must be a list, not {_kind(items)}'
            )
        if len(items) > MAX_BATCH_ITEMS:
            raise InvalidRequest(
                f"a batch of {len(items)} requests is over the limit of {MAX_BATCH_ITEMS}; "
                "split it into smaller batches"
            )
        defaults = _Defaults(
            _consistency(doc.get("consistency", "quorum"), "the body's consistency"),
            _bool(doc.get("strict", False), "the body's strict"),
            _timeout(doc.get("timeout_ms", 0), "the body's timeout_ms"),
        )
        return items, defaults

    # --- the items --------------------------------------------------------------------------

    def _item(self, position: int, item: Any, defaults: _Defaults) -> KeyRequest:
        """The request an item stands for, checked as ``HttpApi._kv_message`` checks a
        single-key request; raises InvalidRequest naming the item, or ``_ItemRefused``
        with a problem of another status, when it is refused."""
        where = f"requests[{position}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be a JSON object, not {_kind(item)}")
        if isinstance(item, _Fields):
            raise InvalidRequest(f"{where} gives {item.duplicates[0][:40]!r} more than once")
        key = self._key(item, where)
        where = f"{where} (key {key_text(key)})"
        op = item.get("op")
        if op not in ITEM_FIELDS:
            raise InvalidRequest(f'{where}: "op" must be "get", "put" or "delete", not {op!r:.40}')
        unknown = sorted(set(item) - ITEM_FIELDS[op])
        if unknown:
            raise InvalidRequest(
                f"{where}: {op} takes no field {unknown[0][:40]!r}; it takes "
                f"{', '.join(sorted(ITEM_FIELDS[op]))}"
            )
        consistency = _consistency(item.get("consistency"), where, defaults)
        strict = _bool(item.get("strict", defaults.strict), f"{where}: strict")
        timeout_ms = _timeout(item.get("timeout_ms", defaults.timeout_ms), f"{where}: timeout_ms")
        if op == "get":
            return GetRequest(key, consistency, timeout_ms, strict)
        raw_context = item.get("context")
        if raw_context is not None and not isinstance(raw_context, str):
            raise InvalidRequest(f"{where}: context must be a string, as a read gave it")
        context = decode_context(raw_context, f"{where}: the context")
        if op == "delete":
            return DeleteRequest(key, context, consistency, timeout_ms, strict)
        overwrite = _bool(item.get("overwrite", False), f"{where}: overwrite")
        if overwrite and context is not None:
            raise InvalidRequest(
                f"{where}: a put takes a context or overwrite, not both (the context replaces "
                "what its read saw, overwrite what the cluster holds now); nothing written"
            )
        terms = self._terms(item.get("index"), where)
        value = _base64(item.get("value"), f"{where}: value")
        limit = self._node.config.limits.max_value
        if len(value) > limit:
            raise _ItemRefused(
                problem(
                    413,
                    "too_large",
                    f"{where}: the value is {len(value)} bytes, over the {limit}-byte limit; "
                    "nothing written",
                )
            )
        return PutRequest(
            key, value, context, consistency, timeout_ms, strict, overwrite=overwrite, index=terms
        )

    def _key(self, item: dict[str, Any], where: str) -> bytes:
        if ("key" in item) == ("key_b64" in item):
            raise InvalidRequest(
                f'{where}: give the key as "key" (UTF-8 text) or "key_b64" (base64), '
                "exactly one of them"
            )
        if "key" in item:
            text = item["key"]
            if not isinstance(text, str):
                raise InvalidRequest(f'{where}: "key" must be a string, not {_kind(text)}')
            try:
                key = text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest(
                    f'{where}: "key" is not valid Unicode text (a lone surrogate?); use '
                    '"key_b64" for binary keys'
                ) from None
        else:
            key = _base64(item["key_b64"], f'{where}: "key_b64"')
        limit = self._node.config.limits.max_key
        return checked_key(key, limit, f"{where}: the key is empty", where=f"{where}: ")

    def _terms(self, written: Any, where: str) -> bytes | None:
        if written is None:
            return None
        if not isinstance(written, list) or not all(isinstance(term, str) for term in written):
            raise InvalidRequest(f'{where}: "index" must be a list of "NAME:TERM" strings')
        try:
            return self._index_terms(written) if written else None
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: {exc}") from None

    # --- serving ----------------------------------------------------------------------------

    async def _serve(
        self, items: list[Any], defaults: _Defaults, peer: Peer | None
    ) -> list[dict[str, Any]]:
        """Every item's result, in order: refusals made here, the others served together."""
        node = self._node
        answers: list[Response | None] = [None] * len(items)
        accepted: dict[int, KeyRequest] = {}
        positions: dict[bytes, list[int]] = {}
        for position, item in enumerate(items):
            try:
                message = self._item(position, item, defaults)
            except _ItemRefused as refused:
                node.stats.incr("rejected.bad_input")
                answers[position] = refused.response
                continue
            except P2PIndexError as exc:
                node.stats.incr("rejected.bad_input")
                answers[position] = problem_for(exc)
                continue
            accepted[position] = message
            positions.setdefault(message.key, []).append(position)
        for key, repeated in positions.items():
            if len(repeated) > 1:
                refusal = duplicate_key(key, len(repeated))
                for position in repeated:
                    del accepted[position]
                    node.stats.incr("rejected.bad_input")
                    answers[position] = problem_for(
                        InvalidRequest(f"requests[{position}]: {refusal}")
                    )
        for position, message in list(accepted.items()):
            try:
                node.authorize_client(message, peer)
            except P2PIndexError as exc:
                del accepted[position]
                answers[position] = problem_for(exc)
        replies = await self._replies(list(accepted.values()))
        served: dict[int, Message] = dict(zip(accepted, replies, strict=True))
        for position, reply in served.items():
            answers[position] = kv_response(reply, read=isinstance(accepted[position], GetRequest))
        results = [_result(answer, served.get(position)) for position, answer in enumerate(answers)]
        _fit(results, served, node.config.limits.max_frame)
        return results

    async def _replies(self, messages: list[KeyRequest]) -> list[Message]:
        """The node's reply to each of ``messages``: writes in one call of the batch handler
        and reads in another (concurrently), as ``client_batch.serve_batches`` serves a
        native batch."""
        if self._handlers is None:
            self._handlers = dict(self._node.client_batch_handlers())
        replies: list[Message | None] = [None] * len(messages)
        groups: dict[int, tuple[BatchHandler, list[int]]] = {}
        for position, message in enumerate(messages):
            handler = self._handlers[type(message)]
            groups.setdefault(id(handler), (handler, []))[1].append(position)

        async def serve(handler: BatchHandler, group: list[int]) -> None:
            def respond(index: int, reply: Message) -> None:
                replies[group[index]] = reply

            try:
                await handler([messages[position] for position in group], respond)
            except P2PIndexError as exc:  # the whole group failed; nothing else is caught
                for position in group:
                    if replies[position] is None:
                        replies[position] = reply_for_error(exc)

        jobs = list(groups.values())
        if len(jobs) == 1:
            await serve(*jobs[0])
        elif jobs:
            async with trio.open_nursery() as nursery:
                for handler, group in jobs:
                    nursery.start_soon(serve, handler, group)
        unanswered = ErrorReply("error", "the request was not answered")
        return [unanswered if reply is None else reply for reply in replies]


class _ItemRefused(Exception):
    """An item refused with a problem of its own (not a P2PIndexError's): ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _result(response: Response | None, reply: Message | None) -> dict[str, Any]:
    """One item's result: the single-key answer ``response`` (to ``reply`` when the node
    answered it) as JSON fields."""
    if response is None:  # cannot happen: every item is refused or served
        response = problem(500, "internal_error", "internal error: item left unanswered")
    headers = dict(response.headers)
    result: dict[str, Any] = {"status": response.status}
    if response.status == 200:
        result["value"] = base64.b64encode(response.body).decode()
    elif response.status == 300 and isinstance(reply, GetReply):
        result["siblings"] = [base64.b64encode(value).decode() for value in reply.values]
    if CONTEXT_HEADER in headers:
        result["context"] = headers[CONTEXT_HEADER]
    if SIBLINGS_HEADER in headers:
        result["sibling_count"] = int(headers[SIBLINGS_HEADER])
    if WARNING_HEADER in headers:
        result["warning"] = headers[WARNING_HEADER]
    if READ_FLAG_HEADER in headers:
        result["read_first"] = True
    if UNSEEN_HEADER in headers:
        result["unseen_may_remain"] = True
    if response.content_type == PROBLEM_TYPE:
        result["problem"] = json.loads(response.body)
    return result


def _fit(results: list[dict[str, Any]], served: dict[int, Message], budget: int) -> None:
    """Keep the answer within ``budget`` bytes (the native batch reply's bound): the values
    of the largest reads that do not fit beside the others are replaced by a per-item
    refusal (a read is safe to repeat alone); write results are small and always kept."""

    def size(result: dict[str, Any]) -> int:
        values = result.get("siblings", [result.get("value", "")])
        return RESULT_SLACK + sum(len(value) for value in values)

    total = sum(size(result) for result in results)
    if total <= budget:
        return
    reads = sorted(
        (i for i, reply in served.items() if isinstance(reply, GetReply)),
        key=lambda i: -size(results[i]),
    )
    for position in reads:
        if total <= budget:
            break
        before = size(results[position])
        refusal = InvalidRequest(
            f"requests[{position}]: the values of this key ({before} bytes as base64) do not "
            "fit in one batch answer with the others; get that key alone"
        )
        results[position] = _result(problem_for(refusal, read=True), None)
        total -= before - size(results[position])


def _consistency(value: Any, where: str, defaults: _Defaults | None = None) -> str | int:
    """A consistency as the single-key ``consistency=`` takes it (one, quorum, all or a
    positive count), checked; the default when ``value`` is None and there is one."""
    if value is None and defaults is not None:
        return defaults.consistency
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRequest(f"{where}: consistency must be one, quorum, all or a count")
    try:
        return consistency_to_wire(parse_consistency(str(value)))
    except ValueError as exc:
        raise InvalidRequest(f"{where}: {exc}") from None


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where} must be true or false, not {_kind(value)}")
    return value


def _timeout(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIMEOUT_MS:
        raise InvalidRequest(f"{where} must be a whole number of milliseconds (0 for the default)")
    return value


def _base64(value: Any, where: str) -> bytes:
    """Standard-alphabet base64, padded, strictly: a character outside the alphabet is an
    error rather than skipped (as the lenient decoder would, changing the bytes)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a base64 string, not {_kind(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"{where} is not base64 (standard alphabet A-Z a-z 0-9 + /, padded with =)"
        ) from None


def _kind(value: Any) -> str:
    """How JSON would call ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
