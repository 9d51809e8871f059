"""`p2pindex put --many FILE` and `get --many FILE`: many keys in batches, one outcome a line.

Input for puts is one JSON object a line, ``{"key": ..., "value": ..., "context": ...}``,
in the forms `get --format json` prints: text values, or base64 ones with ``"encoding":
"base64"``, and the context's text form, so a read's output can be edited and written back.
A line that cannot be read fails on its own (its line number says which) and the others
are still written: exactly the batch API's rule that one failure never hides another.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from p2pindex.cli.common import (
    EXIT_ERROR,
    EXIT_INDETERMINATE,
    EXIT_OK,
    describe,
    with_client,
)
from p2pindex.client import AsyncClient, PutItem
from p2pindex.client.results import BatchResult, KeyOutcome
from p2pindex.errors import InvalidRequest

CHUNK = 1000
"""Lines read and sent per batch call, so a long input needs little memory."""


def encode_values(values: list[bytes]) -> tuple[str, list[str]]:
    """Values as JSON strings: UTF-8 text when they all are, otherwise base64."""
    try:
        return "utf-8", [value.decode("utf-8") for value in values]
    except UnicodeDecodeError:
        return "base64", [base64.b64encode(value).decode("ascii") for value in values]


def _source(name: str) -> IO[str]:
    return sys.stdin if name == "-" else open(name, encoding="utf-8")


def _chunks(lines: IO[str]) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            chunk.append((number, line))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def parse_put_line(number: int, line: str) -> PutItem:
    """One input line as a PutItem; raises InvalidRequest naming the line and the problem."""
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"line {number}: not a JSON object ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"line {number}: expected a JSON object with key and value")
    unknown = sorted(set(doc) - {"key", "value", "context", "encoding", "overwrite"})
    if unknown:
        raise InvalidRequest(f"line {number}: unknown field(s) {', '.join(unknown)}")
    key, value = doc.get("key"), doc.get("value")
    if not isinstance(key, str) or not isinstance(value, str):
        raise InvalidRequest(f'line {number}: needs a text "key" and a text "value"')
    encoding = doc.get("encoding", "utf-8")
    if encoding == "base64":
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"line {number}: the value is not valid base64") from None
    elif encoding == "utf-8":
        raw = value.encode("utf-8")
    else:
        raise InvalidRequest(f"line {number}: encoding must be utf-8 or base64")
    context = doc.get("context")
    if context is not None and not isinstance(context, str):
        raise InvalidRequest(f"line {number}: the context must be text, as get prints it")
    overwrite = doc.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise InvalidRequest(f"line {number}: overwrite must be true or false")
    return PutItem(key, raw, context or None, overwrite)


class _Tally:
    def __init__(self) -> None:
        self.failed = 0
        self.indeterminate = 0

    def note(self, outcome: KeyOutcome[Any]) -> None:
        if outcome.error is not None:
            self.failed += 1
            self.indeterminate += not outcome.definite

    def exit_code(self) -> int:
        if self.indeterminate:
            return EXIT_INDETERMINATE
        return EXIT_ERROR if self.failed else EXIT_OK


def _key(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _failure(args: argparse.Namespace, key: str, outcome: KeyOutcome[Any]) -> None:
    assert outcome.error is not None
    if args.format == "json":
        doc = {"key": key, "ok": False, "error": describe(outcome.error)}
        print(json.dumps({**doc, "definite": outcome.definite}, ensure_ascii=False))
    else:
        print(f"error: {key}: {describe(outcome.error)}", file=sys.stderr)


def run_put_many(args: argparse.Namespace) -> int:
    options = {"consistency": args.consistency, "timeout": args.timeout, "strict": args.strict}

    async def body(db: AsyncClient) -> int:
        tally = _Tally()
        with _source(args.many) as lines:
            for chunk in _chunks(lines):
                items: list[PutItem] = []
                refused: list[tuple[int, InvalidRequest]] = []
                for position, (number, line) in enumerate(chunk):
                    try:
                        items.append(parse_put_line(number, line))
                    except InvalidRequest as exc:
                        refused.append((position, exc))
                result: BatchResult[Any] = await db.put_many(items, **options)
                outcomes = list(result)
                for position, refusal in refused:  # back in input order, failing on their own
                    outcomes.insert(position, KeyOutcome(b"", error=refusal))
                for (number, _line), outcome in zip(chunk, outcomes, strict=True):
                    tally.note(outcome)
                    key = _key(outcome.key) if outcome.key else f"line {number}"
                    if outcome.error is not None:
                        _failure(args, key, outcome)
                    elif args.format == "json":
                        put = outcome.unwrap()
                        doc = {"key": key, "ok": True, "context": str(put.context)}
                        print(json.dumps({**doc, "siblings": put.siblings}, ensure_ascii=False))
                    else:
                        print(f"ok: {key}")
        return tally.exit_code()

    return with_client(args, body)


def run_get_many(args: argparse.Namespace) -> int:
    """Keys one a line (text); each key's values and context, in input order."""
    options = {"consistency": args.consistency, "timeout": args.timeout, "strict": args.strict}

    async def body(db: AsyncClient) -> int:
        tally = _Tally()
        with _source(args.many) as lines:
            for chunk in _chunks(lines):
                keys = [line.rstrip("\r\n") for _number, line in chunk]
                result = await db.get_many(keys, **options)
                for key, outcome in zip(keys, result, strict=True):
                    tally.note(outcome)
                    if outcome.error is not None:
                        _failure(args, key, outcome)
                        continue
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
        return tally.exit_code()

    return with_client(args, body)
