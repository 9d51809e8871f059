"""The run-queue check the channel's lone sends rely on (``p2pindex.net.quiet``)."""

from __future__ import annotations

import trio
import trio.testing

from p2pindex.net import quiet


async def test_trio_still_exposes_the_run_queue_we_read() -> None:
    """Canary: a trio upgrade that moves its private run queue would silently turn lone
    sends off (still correct, a scheduler pass slower per hop); fail loudly instead."""
    assert quiet.available()


async def test_a_task_woken_for_the_next_pass_is_seen_and_an_idle_pass_is_quiet() -> None:
    woken = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(woken.wait)
        await trio.testing.wait_all_tasks_blocked()
        assert quiet.others_runnable() is False
        woken.set()  # the waiter is now queued to run in the next pass
        assert quiet.others_runnable() is True


def test_outside_a_trio_run_it_answers_runnable() -> None:
    assert quiet.others_runnable() is True
