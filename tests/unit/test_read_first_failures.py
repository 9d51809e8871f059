"""The read a read-first write begins with failing as reads fail (a timeout, too few
answers) is definite: the write was never sent. Found by a helper: DELETE at ALL with a
replica stalled answered 504 indeterminate although only the read had run."""

from __future__ import annotations

import pytest

from p2pindex.errors import DefiniteError, QuorumFailed, Timeout, Unavailable
from p2pindex.node.read_first import read_then_write
from p2pindex.wire.errors import reply_for_error
from p2pindex.wire.messages import DeleteRequest, ErrorReply, GetRequest, Message, PutRequest

REQUESTS = [
    DeleteRequest(b"k", None, "all", 1000),
    PutRequest(b"k", b"v", None, "all", 1000, overwrite=True),
]


async def never_write(_request: Message) -> Message:
    raise AssertionError("the write must not be sent when its read failed")


@pytest.mark.parametrize("request_", REQUESTS)
@pytest.mark.parametrize(
    "failure", [Timeout(required=3, acknowledged=2), QuorumFailed(required=3, acknowledged=1)]
)
async def test_a_read_that_times_out_makes_the_write_fail_definitely(request_, failure) -> None:
    async def get(_request: GetRequest) -> Message:
        raise failure

    with pytest.raises(Unavailable) as raised:
        await read_then_write(request_, get, never_write, unseen=False)
    assert isinstance(raised.value, DefiniteError)
    assert (raised.value.required, raised.value.alive) == (failure.required, failure.acknowledged)
    assert "the read this write begins with failed" in str(raised.value)
    assert "nothing was written" in str(raised.value)


@pytest.mark.parametrize("request_", REQUESTS)
async def test_a_relayed_read_that_timed_out_is_answered_definitely(request_) -> None:
    async def get(_request: GetRequest) -> Message:
        return reply_for_error(Timeout(required=3, acknowledged=2))

    reply = await read_then_write(request_, get, never_write, unseen=False)
    assert isinstance(reply, ErrorReply) and reply.code == "unavailable", reply
    assert "nothing was written" in reply.message


async def test_a_definite_read_failure_is_passed_on_as_it_came() -> None:
    refusal = reply_for_error(Unavailable(3, 1, "too few"))

    async def get(_request: GetRequest) -> Message:
        return refusal

    assert await read_then_write(REQUESTS[0], get, never_write, unseen=False) is refusal
