"""A batch whose keys fail for one shared cause (replicas cut off from each other, a stalled
node) gives every failed key an error of its own, on the simulated network: of the same
class and definiteness as the shared one, naming that key, and a distinct object, so a
caller who logs or raises one failure out of many can tell which key it was."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from p2pindex.client import BatchResult, KeyOutcome, connect
from p2pindex.errors import DefiniteError, IndeterminateError, Timeout, Unavailable
from p2pindex.types import key_text
from tests.integration.test_client_unavailable_retry import cut_everyone
from tests.support.cluster import running_cluster

KEYS = [f"batch-key-{i}" for i in range(30)]


def check_own_errors(failed: tuple[KeyOutcome[Any], ...], kind: type[Exception]) -> None:
    """Each failure is a ``kind`` that names its own key and only it, in an object no other
    key shares; ``unwrap()`` raises exactly that error."""
    assert len(failed) >= 2, "fewer than two keys failed: the test proves nothing"
    assert len({id(outcome.error) for outcome in failed}) == len(failed)
    for outcome in failed:
        error = outcome.error
        assert type(error) is kind, error
        text = str(error)
        assert text.count(key_text(outcome.key)) == 1, text
        others = [o.key for o in failed if o.key != outcome.key]
        assert not any(f"{key_text(other)}:" in text for other in others), text
        with pytest.raises(kind) as raised:
            outcome.unwrap()
        assert raised.value is error


async def test_keys_refused_by_cut_off_coordinators_each_get_their_own_unavailable(
    autojump_clock,
) -> None:
    """Every node cut off from every other: each key of a QUORUM put_many is refused as
    unavailable (1 of 2 replicas reachable), definite, with the counts kept."""
    async with running_cluster(3) as cluster:
        addresses = [str(running.address) for running in cluster.nodes]
        async with connect(addresses, transport=cluster.client_transport(), timeout=3.0) as db:
            await db.put("warm", "up", consistency="all")
            await cut_everyone(cluster)
            written: BatchResult[Any] = await db.put_many(
                [(key, "v") for key in KEYS], consistency="quorum"
            )
    assert len(written.failed) == len(KEYS)
    check_own_errors(written.failed, Unavailable)
    for outcome in written.failed:
        assert outcome.definite and isinstance(outcome.error, DefiniteError)
        assert isinstance(outcome.error, Unavailable)
        assert (outcome.error.required, outcome.error.alive) == (2, 1)
        assert str(outcome.error).startswith(f"key {key_text(outcome.key)}: 2 replicas required")


@pytest.mark.parametrize("write", [False, True], ids=["get_many", "put_many"])
async def test_keys_of_a_frame_to_a_stalled_node_each_get_their_own_timeout(
    autojump_clock, write: bool
) -> None:
    """A node paused with the client's connection to it open: the frame sent to it gets no
    reply, and every key in it times out with the same cause, indeterminate for writes."""
    async with running_cluster(3) as cluster:
        addresses = [str(running.address) for running in cluster.nodes]
        async with connect(addresses, transport=cluster.client_transport(), timeout=1.0) as db:
            written = await db.put_many([(key, "v") for key in KEYS], consistency="all")
            assert written.ok, [o.error for o in written.failed]
            warm = await db.get_many(KEYS, consistency="one")  # every connection is open
            assert warm.ok, [o.error for o in warm.failed]
            stalled = cluster.nodes[2].address
            cluster.network.pause(stalled.host)
            if write:
                result: BatchResult[Any] = await db.put_many(
                    [(key, "w") for key in KEYS], consistency="one"
                )
            else:
                result = await db.get_many(KEYS, consistency="one")
            cluster.network.resume(stalled.host)
            await trio.sleep(0)
    check_own_errors(result.failed, Timeout)
    for outcome in result.failed:
        assert str(outcome.error) == (
            f"key {key_text(outcome.key)}: no reply from {stalled} within 1s"
        )
        assert isinstance(outcome.error, IndeterminateError)
        # A write may or may not have been applied; a read changed nothing either way.
        assert outcome.definite is (not write)
        assert isinstance(outcome.error.__cause__, Timeout)
