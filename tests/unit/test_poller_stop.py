"""`Poller.stop` ends its loops even when one drops a cancellation."""

import asyncio

import pytest

from plc.poller import Poller, PollSettings
from plc.registers import uniform_register_map

pytestmark = [pytest.mark.unit, pytest.mark.asyncio]


async def test_stop_cancels_again_a_loop_that_dropped_a_cancellation() -> None:
    poller = Poller(uniform_register_map([("127.0.0.1", 1)], 1), PollSettings(), print)
    dropped = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            # What Python 3.11's wait_for does when the awaited answer came just before.
            dropped.set()
        await asyncio.sleep(60)

    poller._tasks = [asyncio.create_task(stubborn())]
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await poller.stop()
    assert dropped.is_set()
    assert poller._tasks == []
