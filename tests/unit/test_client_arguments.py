"""Arguments both clients refuse before sending, with the errors the README promises.

Every refusal here must be a p2pindex error (``InvalidRequest``, also a ``ValueError``;
``InvalidArgumentType``, also a ``TypeError``; ``ClientClosed``) and must reach no node:
a batch call given one key as text must not split it into one key per character.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from test_client_fakes import FakeCluster, serve_in_thread

import p2pindex
from p2pindex.client import DeleteItem, PutItem
from p2pindex.client.queries import index_for_wire
from p2pindex.errors import (
    ClientClosed,
    DefiniteError,
    InvalidArgumentType,
    InvalidRequest,
)
from p2pindex.wire.messages import LimitsRequest, MembersRequest, Message, PutRequest

ONE_KEY_VALUES = ["ab", b"ab", bytearray(b"ab"), memoryview(b"ab")]


def data_requests(cluster: FakeCluster) -> list[Message]:
    """What the nodes received besides the client's own member and limit questions."""
    return [
        message
        for node in cluster.nodes
        for message in node.received
        if not isinstance(message, MembersRequest | LimitsRequest)
    ]


@pytest.fixture
def threaded_cluster() -> Iterator[FakeCluster]:
    with serve_in_thread(FakeCluster(3)) as fake:
        yield fake


# --- 1. a batch call given one key -----------------------------------------------------------


@pytest.mark.parametrize("one", ONE_KEY_VALUES, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize(
    ("method", "single"), [("put_many", "put"), ("get_many", "get"), ("delete_many", "delete")]
)
async def test_batch_calls_refuse_one_key_given_as_text_or_bytes(
    nursery: trio.Nursery, method: str, single: str, one: object
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidArgumentType) as info:
            await getattr(db, method)(one)
    message = str(info.value)
    assert f"{method} takes a list of" in message
    assert f"not one {type(one).__name__} key; use {single}() for one key" in message
    assert data_requests(cluster) == []


@pytest.mark.parametrize("method", ["put_many", "delete_many"])
async def test_batch_writes_refuse_a_mapping_whose_values_they_would_drop(
    nursery: trio.Nursery, method: str
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidArgumentType, match=r"not a dict; pass list\(items.items\(\)\)"):
            await getattr(db, method)({"k": b"v"})
    assert data_requests(cluster) == []


@pytest.mark.parametrize(
    ("method", "item"), [("put_many", PutItem("k", b"v")), ("delete_many", DeleteItem("k"))]
)
async def test_batch_calls_refuse_a_single_item(
    nursery: trio.Nursery, method: str, item: object
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidArgumentType, match=f"not one {type(item).__name__}"):
            await getattr(db, method)(item)
    assert data_requests(cluster) == []


@pytest.mark.parametrize("one", ONE_KEY_VALUES, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("method", ["put_many", "get_many", "delete_many"])
def test_blocking_batch_calls_refuse_one_key_before_splitting_it(
    threaded_cluster: FakeCluster, method: str, one: object
) -> None:
    with (
        p2pindex.Client(threaded_cluster.addresses) as db,
        pytest.raises(InvalidArgumentType, match=f"{method} takes a list of"),
    ):
        getattr(db, method)(one)
    assert data_requests(threaded_cluster) == []


def test_a_batch_item_of_the_wrong_shape_says_what_shape_it_has() -> None:
    from p2pindex.client.batch_send import delete_item, put_item

    with pytest.raises(InvalidArgumentType, match=r"tuple, not a tuple of 4 items$"):
        put_item(("k", "v", None, "extra"))
    with pytest.raises(InvalidArgumentType, match=r"tuple, not a tuple of 1 item$"):
        put_item(("k",))
    with pytest.raises(InvalidArgumentType, match=r"tuple, not int$"):
        delete_item(5)


async def test_a_mapping_of_keys_still_reads_its_keys(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3, shared_store=True).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidArgumentType):
            await db.get_many("k")
        # get_many of a dict reads its keys, as iterating a dict does: nothing is dropped.
        read = await db.get_many({"a": None, "b": None})
    assert [outcome.key for outcome in read.outcomes] == [b"a", b"b"]


# --- 2. refusals are the documented errors ---------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 1001, 5000])
async def test_a_page_size_out_of_range_is_an_invalid_request(
    nursery: trio.Nursery, limit: int
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidRequest, match=r"limit must be an integer in 1\.\.1000"):
            await db.query("total", 5, limit=limit)
        with pytest.raises(InvalidRequest, match="limit"):
            await db.keys(limit=limit)
    assert data_requests(cluster) == []


@pytest.mark.parametrize("limit", ["5", 5.0, True, None])
async def test_a_page_size_of_the_wrong_type_is_an_argument_type_error(
    nursery: trio.Nursery, limit: object
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidArgumentType, match="limit must be an integer"):
            await db.query("total", 5, limit=limit)  # type: ignore[arg-type]
    assert data_requests(cluster) == []


@pytest.mark.parametrize(
    ("term", "high", "error", "words"),
    [
        (True, None, InvalidArgumentType, "the queried term of index 'total' must be"),
        (1.5, None, InvalidArgumentType, "the queried term of index 'total' must be"),
        (None, None, InvalidArgumentType, "not NoneType"),
        (1, 2.5, InvalidArgumentType, "the high term of index 'total' must be"),
        (1 << 63, None, InvalidRequest, "the queried term of index 'total': integer term"),
        (-(1 << 64), 5, InvalidRequest, "the low term of index 'total': integer term"),
    ],
)
async def test_bad_query_terms_raise_the_documented_errors_naming_the_index(
    nursery: trio.Nursery, term: object, high: object, error: type[Exception], words: str
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(error) as info:
            await db.query("total", term, high)
    assert words in str(info.value)
    assert "'query'" not in str(info.value)
    assert data_requests(cluster) == []


async def test_bad_index_names_and_continuations_are_the_clients_errors(
    nursery: trio.Nursery,
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidRequest, match="non-empty name"):
            await db.query("", 5)
        with pytest.raises(InvalidArgumentType, match="non-empty name, not int"):
            await db.query(7, 5)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest, match="continuation is not one"):
            await db.query("total", 5, continuation="a")
        with pytest.raises(InvalidArgumentType, match="continuation must be"):
            await db.query("total", 5, continuation=b"abc")  # type: ignore[typeddict-item]
    assert data_requests(cluster) == []


def test_blocking_client_raises_the_same_query_errors(threaded_cluster: FakeCluster) -> None:
    with p2pindex.Client(threaded_cluster.addresses) as db:
        with pytest.raises(InvalidRequest, match="limit"):
            db.query("total", 5, limit=0)
        with pytest.raises(InvalidArgumentType, match="index 'total'"):
            db.query("total", True)
    assert data_requests(threaded_cluster) == []


LONE_SURROGATE_CALLS = [
    ("put", ("k", b"v"), {"index": {"idx\udcff": [1]}}, "index name 'idx\\udcff'"),
    ("put", ("k", b"v"), {"index": {"tag": ["x\udcff"]}}, "a term of index 'tag': the text"),
    ("query", ("idx\udcff", 1), {}, "index name 'idx\\udcff'"),
    ("query", ("tag", "x\udcff"), {}, "the queried term of index 'tag': the text"),
    ("query", ("tag", "a", "x\udcff"), {}, "the high term of index 'tag': the text"),
    ("query", ("tag", 1), {"prefix": "p\udcff"}, "prefix 'p\\udcff'"),
    ("keys", ("p\udcff",), {}, "prefix 'p\\udcff'"),
    ("get", ("k\udcff",), {}, "key 'k\\udcff'"),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "words"), LONE_SURROGATE_CALLS)
async def test_text_that_is_not_valid_utf8_is_an_invalid_request_naming_it(
    nursery: trio.Nursery, method: str, args: tuple, kwargs: dict, words: str
) -> None:
    """A lone surrogate in an index name raised a bare UnicodeEncodeError, in a term an
    InvalidRequest quoting the codec ("'utf-8' codec can't encode character")."""
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidRequest) as info:
            await getattr(db, method)(*args, **kwargs)
    message = str(info.value)
    assert message.startswith(words) and "is not valid UTF-8" in message, message
    assert "codec" not in message and "surrogates not allowed" not in message
    assert data_requests(cluster) == []


@pytest.mark.parametrize(
    ("low", "high", "shown"),
    [("b", "a", "'b' is above its high end 'a'"), (b"b", b"a", "b'b' is above its high end b'a'")],
)
async def test_a_range_whose_low_end_is_above_its_high_end_quotes_the_terms_given(
    nursery: trio.Nursery, low: object, high: object, shown: str
) -> None:
    """The node's refusal showed the terms' bytes (b'b' for the text "b")."""
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(InvalidRequest) as info:
            await db.query("tag", low, high)
    assert str(info.value) == f"index 'tag': the range's low end {shown}"
    assert data_requests(cluster) == []


# --- 3. the shape of a put's index terms -----------------------------------------------------


@pytest.mark.parametrize(
    ("index", "error", "words"),
    [
        ({"total": 5}, InvalidArgumentType, "index 'total' takes a list of terms, not one int"),
        ({"email": "a@b"}, InvalidArgumentType, "index 'email' takes a list of terms, not one"),
        ({"tag": b"red"}, InvalidArgumentType, "index 'tag' takes a list of terms"),
        ({"tag": bytearray(b"ab")}, InvalidArgumentType, "index 'tag' takes a list of terms"),
        ({"tag": {"red": 1}}, InvalidArgumentType, "index 'tag' takes a list of terms"),
        ({"total": [1.5]}, InvalidArgumentType, "a term of index 'total' must be"),
        ({"total": [True]}, InvalidArgumentType, "a term of index 'total' must be"),
        ({"total": [1 << 64]}, InvalidRequest, "a term of index 'total': integer term"),
        ({5: [1]}, InvalidArgumentType, "an index name must be text"),
        ({"$key": [1]}, InvalidRequest, "reserved"),
        ([("total", [5])], InvalidArgumentType, "index must be a mapping"),
    ],
)
async def test_put_refuses_index_terms_of_the_wrong_shape(
    nursery: trio.Nursery, index: Any, error: type[Exception], words: str
) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
            await db.put("k", b"v", index=index)
        written = await db.put_many([PutItem("k", b"v", index=index)])
    [outcome] = written.outcomes
    assert isinstance(outcome.error, error) and outcome.definite
    assert data_requests(cluster) == []


async def test_put_takes_lists_tuples_and_sets_of_terms(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    async with p2pindex.connect(cluster.addresses) as db:
        await db.put("k", b"v", index={"total": [420], "email": ("a@b",), "tag": {b"x"}})
    [put] = data_requests(cluster)
    assert isinstance(put, PutRequest)
    assert put.index == index_for_wire({"total": [420], "email": ["a@b"], "tag": [b"x"]})


# --- 4. a closed client ----------------------------------------------------------------------


async def test_a_closed_async_client_raises_client_closed(nursery: trio.Nursery) -> None:
    cluster = await FakeCluster(3).start(nursery)
    db = p2pindex.connect(cluster.addresses)
    with pytest.raises(ClientClosed, match="not open yet"):
        await db.get("k")
    async with db:
        await db.get("k")
    for call in (db.get("k"), db.put_many([("k", b"v")]), db.query("total", 5)):
        with pytest.raises(ClientClosed, match="the client was closed") as info:
            await call
        assert isinstance(info.value, DefiniteError) and isinstance(info.value, RuntimeError)
    with pytest.raises(ClientClosed, match="closed"):
        async with db:
            pass


def test_a_closed_blocking_client_raises_client_closed(threaded_cluster: FakeCluster) -> None:
    db = p2pindex.Client(threaded_cluster.addresses)
    db.close()
    with pytest.raises(ClientClosed, match="the client was closed") as info:
        db.get("k")
    with pytest.raises(ClientClosed):
        db.delete_many(["k"])
    assert isinstance(info.value, DefiniteError)
