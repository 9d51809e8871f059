"""`put --many` / `get --many`: a line that cannot be read fails alone, with its line number
and a message in the user's words; every other line is still sent."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pindex.cli import main as cli_main
from p2pindex.client import Context, PutItem
from p2pindex.client.batch_send import error_for_key
from p2pindex.client.results import BatchResult, GetResult, KeyOutcome, PutResult
from p2pindex.errors import Timeout


class FakeDb:
    """The batch calls of AsyncClient, as strict as the real one about what it is given:
    text keys are encoded strictly (a lone surrogate raises, as ``as_bytes`` does) and a key
    repeated in one call is a bug of the caller."""

    def __init__(self) -> None:
        self.puts: list[PutItem] = []
        self.gets: list[Any] = []

    async def put_many(self, items: Iterable[PutItem], **options: Any) -> BatchResult[Any]:
        items = list(items)
        keys = [_raw(item.key) for item in items]
        assert len(set(keys)) == len(keys), "a key repeated in one batch reached the client"
        self.puts += items
        return BatchResult(tuple(KeyOutcome(key, PutResult(Context(b"c"))) for key in keys))

    async def get_many(self, keys: Iterable[Any], **options: Any) -> BatchResult[Any]:
        keys = list(keys)
        raws = [_raw(key) for key in keys]
        assert len(set(raws)) == len(raws), "a key repeated in one batch reached the client"
        self.gets += keys
        return BatchResult(
            tuple(KeyOutcome(raw, GetResult([b"v-" + raw], Context(b"c"))) for raw in raws)
        )


def _raw(key: bytes | str) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8")  # strict, like the client


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch) -> FakeDb:
    monkeypatch.setattr(cli_main, "OPTIONAL_COMMANDS", ())
    fake = FakeDb()

    def with_client(args: Any, body: Callable[[Any], Awaitable[int]]) -> int:
        return trio.run(body, fake)

    monkeypatch.setattr("p2pindex.cli.kv_many.with_client", with_client)
    return fake


def many(tmp_path: Path, verb: str, data: bytes, *extra: str) -> int:
    path = tmp_path / "input"
    path.write_bytes(data)
    return cli_main.main([verb, "--many", str(path), "--node", "127.0.0.1:1", *extra])


SURROGATE_KEY = b'{"key":"\\udc80x","value":"a"}'
SURROGATE_VALUE = b'{"key":"k3","value":"\\ud800"}'


def test_a_lone_surrogate_fails_its_line_alone(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        b'{"key":"k1","value":"one"}',
        SURROGATE_KEY,
        SURROGATE_VALUE,
        b'{"key":"k4","value":"4"}',
    ]
    assert many(tmp_path, "put", b"\n".join(lines) + b"\n") == 1
    assert [_raw(item.key) for item in db.puts] == [b"k1", b"k4"]
    out, err = capsys.readouterr()
    assert out.splitlines() == ["ok: k1", "ok: k4"]
    assert err.splitlines() == [
        "error: line 2: the key is not valid Unicode text (a lone surrogate)",
        "error: line 3: the value is not valid Unicode text (a lone surrogate)",
    ]
    assert "codec" not in err


def test_a_line_that_is_not_utf8_fails_alone(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str]
) -> None:
    data = b'{"key":"k1","value":"one"}\n{"key":"\xff","value":"x"}\n{"key":"k3","value":"3"}\n'
    assert many(tmp_path, "put", data) == 1
    assert [_raw(item.key) for item in db.puts] == [b"k1", b"k3"]
    assert capsys.readouterr().err == "error: line 2: not UTF-8 text\n"


def test_get_many_with_a_line_that_is_not_utf8(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str]
) -> None:
    assert many(tmp_path, "get", b"a\n\xff\xfe\nb\n") == 1
    assert db.gets == ["a", "b"]
    out, err = capsys.readouterr()
    assert out.splitlines() == ["a\tv-a", "b\tv-b"]
    assert err == "error: line 2: the key is not UTF-8 text\n"


def test_get_many_reads_a_repeated_key_once_and_prints_it_for_each_line(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str]
) -> None:
    assert many(tmp_path, "get", b"a\nb\na\n") == 0
    assert db.gets == ["a", "b"]
    assert capsys.readouterr().out.splitlines() == ["a\tv-a", "b\tv-b", "a\tv-a"]


def test_json_reports_an_unreadable_line_by_number_not_as_a_key(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str]
) -> None:
    data = b'{"key":"k1","value":"one"}\n\nnot json\n'
    assert many(tmp_path, "put", data, "--format", "json") == 1
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert docs[0] == {"key": "k1", "line": 1, "ok": True, "context": "Yw", "siblings": 1}
    assert docs[1]["line"] == 3 and "key" not in docs[1]
    assert docs[1]["ok"] is False and docs[1]["definite"] is True
    assert docs[1]["error"].startswith("not a JSON object (invalid JSON at column 1)")
    assert "Expecting" not in docs[1]["error"]


def test_text_reports_an_unreadable_line_once_by_number(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str]
) -> None:
    assert many(tmp_path, "put", b'{"key":"k1"}\n') == 1
    assert capsys.readouterr().err == 'error: line 1: needs a text "key" and a text "value"\n'


def test_a_repeated_key_names_its_lines_and_what_to_do(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        b'{"key":"k1","value":"one"}',
        b'{"key":"dup","value":"first"}',
        b'{"key":"k3","value":"3"}',
        b'{"key":"dup","value":"second"}',
    ]
    assert many(tmp_path, "put", b"\n".join(lines) + b"\n") == 1
    assert [_raw(item.key) for item in db.puts] == [b"k1", b"k3"]
    out, err = capsys.readouterr()
    assert out.splitlines() == ["ok: k1", "ok: k3"]
    reason = (
        "key 'dup' appears on lines 2 and 4; a batch writes each key once: put them in "
        "separate runs, or keep only the last"
    )
    assert err.splitlines() == [f"error: line 2: {reason}", f"error: line 4: {reason}"]
    assert "separate calls" not in err


def test_a_repeated_key_in_json_keeps_its_key_and_line(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str]
) -> None:
    data = b'{"key":"dup","value":"a"}\n{"key":"dup","value":"b"}\n'
    assert many(tmp_path, "put", data, "--format", "json") == 1
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(doc["key"], doc["line"], doc["ok"]) for doc in docs] == [
        ("dup", 1, False),
        ("dup", 2, False),
    ]
    assert all("appears on lines 1 and 2" in doc["error"] for doc in docs)


def test_a_failed_key_is_reported_by_line_and_named_once(
    tmp_path: Path, db: FakeDb, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch error names its key (the client gives each key its own error); the line said
    the key a second time before it."""
    frame_error = Timeout("no reply from 127.0.0.1:7000 within 1s")

    async def put_many(items: Iterable[PutItem], **options: Any) -> BatchResult[Any]:
        keys = [_raw(item.key) for item in items]
        return BatchResult(
            (
                KeyOutcome(keys[0], PutResult(Context(b"c"))),
                KeyOutcome(keys[1], error=error_for_key(keys[1], frame_error, shared=True)),
            )
        )

    monkeypatch.setattr(db, "put_many", put_many)
    data = b'{"key":"k1","value":"one"}\n{"key":"user:7","value":"two"}\n'
    assert many(tmp_path, "put", data) != 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["ok: k1"]
    [line] = err.splitlines()
    assert line.startswith("error: line 2: ") and line.count("user:7") == 1, line
    assert "no reply from 127.0.0.1:7000" in line
