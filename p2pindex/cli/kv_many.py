"""`p2pindex put --many FILE` and `get --many FILE`: many keys in batches, one outcome a line.

Input for puts is one JSON object a line, ``{"key": ..., "value": ..., "context": ...}``,
in the forms `get --format json` prints: text values, or base64 ones with ``"encoding":
"base64"``, and the context's text form, so a read's output can be edited and written back.
A line that cannot be read fails on its own (its line number says which) and the others
are still written: exactly the batch API's rule that one failure never hides another.

Input is read as bytes and each line decoded on its own, so one line that is not UTF-8 (or
whose JSON string holds a lone surrogate, which no UTF-8 text can carry) fails alone
instead of aborting the whole run with a codec error.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from p2pindex.cli.common import (
    EXIT_ERROR,
    EXIT_INDETERMINATE,
    EXIT_OK,
    describe,
    encode_values,
    with_client,
)
from p2pindex.client import AsyncClient, PutItem
from p2pindex.client.results import KeyOutcome
from p2pindex.errors import InvalidRequest
from p2pindex.types import key_text

CHUNK = 1000
"""Lines read and sent per batch call, so a long input needs little memory."""


class BadLine(InvalidRequest):
    """A line of input that cannot become a request: it fails alone, naming its line (an
    InvalidRequest, as the batch API calls a refused item)."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"line {number}: {reason}")
        self.number = number
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Refusal:
    """A line the command refused before sending anything (definite: nothing was done)."""

    number: int
    reason: str
    key: bytes | None = None
    """The line's key, when it had a readable one (a key given twice); None otherwise."""


def _source(name: str) -> IO[bytes]:
    """Bytes, not text: a line that is not UTF-8 must fail alone, not end the reading."""
    return sys.stdin.buffer if name == "-" else open(name, "rb")


def _chunks(lines: IO[bytes]) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            chunk.append((number, line))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _utf8(number: int, what: str, text: str) -> bytes:
    """``text`` as UTF-8 bytes; a lone surrogate (``"\\udc80"`` in JSON) cannot be, and
    would otherwise abort the whole batch with a codec error inside the client."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadLine(number, f"the {what} is not valid Unicode text (a lone surrogate)") from None


def _line_text(number: int, line: bytes | str) -> str:
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadLine(number, "not UTF-8 text") from None


def parse_put_line(number: int, line: bytes | str) -> PutItem:
    """One input line as a PutItem (its key text checked to be UTF-8-encodable, its value
    as bytes); raises BadLine naming the line and the problem."""
    try:
        doc = json.loads(_line_text(number, line).rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        # The decoder's own wording ("Expecting value") means nothing to a user.
        raise BadLine(
            number,
            f"not a JSON object (invalid JSON at column {exc.colno}); "
            'each line is one object like {"key": "k", "value": "v"}',
        ) from None
    if not isinstance(doc, dict):
        raise BadLine(number, "expected a JSON object with key and value")
    unknown = sorted(set(doc) - {"key", "value", "context", "encoding", "overwrite"})
    if unknown:
        raise BadLine(number, f"unknown field(s) {', '.join(unknown)}")
    key, value = doc.get("key"), doc.get("value")
    if not isinstance(key, str) or not isinstance(value, str):
        raise BadLine(number, 'needs a text "key" and a text "value"')
    _utf8(number, "key", key)
    return PutItem(key, _value(number, doc, value), *_options(number, doc))


def _value(number: int, doc: dict[str, Any], value: str) -> bytes:
    encoding = doc.get("encoding", "utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadLine(number, "the value is not valid base64") from None
    if encoding == "utf-8":
        return _utf8(number, "value", value)
    raise BadLine(number, "encoding must be utf-8 or base64")


def _options(number: int, doc: dict[str, Any]) -> tuple[str | None, bool]:
    """The line's context and overwrite flag."""
    context = doc.get("context")
    if context is not None and not isinstance(context, str):
        raise BadLine(number, "the context must be text, as get prints it")
    overwrite = doc.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise BadLine(number, "overwrite must be true or false")
    return context or None, overwrite


def duplicate_refusals(numbered: list[tuple[int, bytes]]) -> dict[int, Refusal]:
    """Refusals for every line whose key another line of the same batch also names.

    A batch writes each key once (the client refuses a repeated key on every line): which
    write should win is the user's choice, so each such line is refused, saying where the
    others are, before anything is sent."""
    lines_of: dict[bytes, list[int]] = {}
    for number, key in numbered:
        lines_of.setdefault(key, []).append(number)
    refusals: dict[int, Refusal] = {}
    for key, numbers in lines_of.items():
        if len(numbers) > 1:
            where = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
            reason = (
                f"key {key_text(key)} appears on lines {where}; a batch writes each key once: "
                "put them in separate runs, or keep only the last"
            )
            refusals.update({number: Refusal(number, reason, key) for number in numbers})
    return refusals


class _Tally:
    def __init__(self) -> None:
        self.failed = 0
        self.indeterminate = 0

    def note(self, outcome: KeyOutcome[Any]) -> None:
        if outcome.error is not None:
            self.failed += 1
            self.indeterminate += not outcome.definite

    def refused(self) -> None:
        self.failed += 1

    def exit_code(self) -> int:
        if self.indeterminate:
            return EXIT_INDETERMINATE
        return EXIT_ERROR if self.failed else EXIT_OK


def _key_bytes(key: bytes | str) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8")  # checked by parse_put_line


def _key(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _failure(args: argparse.Namespace, key: str, outcome: KeyOutcome[Any], number: int) -> None:
    assert outcome.error is not None
    if args.format == "json":
        doc = {"key": key, "line": number, "ok": False, "error": describe(outcome.error)}
        print(json.dumps({**doc, "definite": outcome.definite}, ensure_ascii=False))
    else:
        # A batch's errors name their key (p2pindex.client.batch_send.error_for_key).
        print(f"error: line {number}: {describe(outcome.error)}", file=sys.stderr)


def _refused(args: argparse.Namespace, refusal: Refusal) -> None:
    """A line refused before sending: with ``"line"`` (and its key only if it had one, so a
    script never mistakes a line number for a key)."""
    if args.format == "json":
        doc: dict[str, object] = {"line": refusal.number, "ok": False, "error": refusal.reason}
        if refusal.key is not None:
            doc["key"] = _key(refusal.key)
        print(json.dumps({**doc, "definite": True}, ensure_ascii=False))
    else:
        print(f"error: line {refusal.number}: {refusal.reason}", file=sys.stderr)


def _parse_chunk(
    chunk: list[tuple[int, bytes]],
) -> tuple[list[tuple[int, PutItem]], dict[int, Refusal]]:
    """The lines that become writes, and those refused (unreadable, or a repeated key)."""
    parsed: list[tuple[int, PutItem]] = []
    refused: dict[int, Refusal] = {}
    for number, line in chunk:
        try:
            parsed.append((number, parse_put_line(number, line)))
        except BadLine as exc:
            refused[number] = Refusal(number, exc.reason)
    keys = [(number, _key_bytes(item.key)) for number, item in parsed]
    refused.update(duplicate_refusals(keys))
    return [(number, item) for number, item in parsed if number not in refused], refused


def run_put_many(args: argparse.Namespace) -> int:
    options = {"consistency": args.consistency, "timeout": args.timeout, "strict": args.strict}

    async def body(db: AsyncClient) -> int:
        tally = _Tally()
        with _source(args.many) as lines:
            for chunk in _chunks(lines):
                items, refused = _parse_chunk(chunk)
                batch = [item for _number, item in items]
                result = await db.put_many(batch, **options) if batch else ()
                numbers = [number for number, _item in items]
                outcomes = dict(zip(numbers, result, strict=True))
                for number, _line in chunk:  # in input order
                    if number in refused:
                        tally.refused()
                        _refused(args, refused[number])
                        continue
                    outcome = outcomes[number]
                    tally.note(outcome)
                    _put_outcome(args, outcome, number)
        return tally.exit_code()

    return with_client(args, body)


def _put_outcome(args: argparse.Namespace, outcome: KeyOutcome[Any], number: int) -> None:
    key = _key(outcome.key)
    if outcome.error is not None:
        _failure(args, key, outcome, number)
    elif args.format == "json":
        put = outcome.unwrap()
        doc = {"key": key, "line": number, "ok": True, "context": str(put.context)}
        print(json.dumps({**doc, "siblings": put.siblings}, ensure_ascii=False))
    else:
        print(f"ok: {key}")


def _get_keys(chunk: list[tuple[int, bytes]]) -> tuple[dict[int, str], dict[int, Refusal]]:
    """Each line's key as text, and the lines refused for not being UTF-8 text."""
    keys: dict[int, str] = {}
    refused: dict[int, Refusal] = {}
    for number, line in chunk:
        try:
            keys[number] = line.rstrip(b"\r\n").decode("utf-8")
        except UnicodeDecodeError:
            refused[number] = Refusal(number, "the key is not UTF-8 text")
    return keys, refused


def run_get_many(args: argparse.Namespace) -> int:
    """Keys one a line (text); each key's values and context, in input order. A key given
    on several lines is read once (a batch names each key once) and printed for each."""
    options = {"consistency": args.consistency, "timeout": args.timeout, "strict": args.strict}

    async def body(db: AsyncClient) -> int:
        tally = _Tally()
        with _source(args.many) as lines:
            for chunk in _chunks(lines):
                keys, refused = _get_keys(chunk)
                unique = list(dict.fromkeys(keys.values()))
                result = await db.get_many(unique, **options) if unique else ()
                outcomes = dict(zip(unique, result, strict=True))
                for number, _line in chunk:
                    if number in refused:
                        tally.refused()
                        _refused(args, refused[number])
                        continue
                    outcome = outcomes[keys[number]]
                    tally.note(outcome)
                    _get_outcome(args, keys[number], outcome, number)
        return tally.exit_code()

    return with_client(args, body)


def _get_outcome(args: argparse.Namespace, key: str, outcome: KeyOutcome[Any], number: int) -> None:
    if outcome.error is not None:
        _failure(args, key, outcome, number)
        return
    got = outcome.unwrap()
    encoding, values = encode_values(got.values)
    if args.format == "json":
        doc = {"key": key, "found": got.found, "encoding": encoding}
        doc.update(values=values, context=str(got.context))
        print(json.dumps(doc, ensure_ascii=False))
    elif not got.found:
        print(f"{key}\t(not found)")
    else:
        prefix = "base64:" if encoding == "base64" else ""
        for value in values:
            print(f"{key}\t{prefix}{value}")
