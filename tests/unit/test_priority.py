"""The client's priority mutex: writes overtake queued reads, cancellation never loses the lock."""

import asyncio

import pytest

from plc.client import Priority, _PriorityLock

pytestmark = [pytest.mark.unit, pytest.mark.asyncio]


async def test_writes_are_served_before_queued_reads() -> None:
    lock = _PriorityLock()
    order: list[str] = []
    release_first = asyncio.Event()

    async def user(name: str, priority: int, gate: asyncio.Event | None = None) -> None:
        async with lock.hold(priority):
            order.append(name)
            if gate is not None:
                await gate.wait()

    first = asyncio.create_task(user("read-0", Priority.READ, release_first))
    await asyncio.sleep(0)  # let it take the lock
    waiting = [asyncio.create_task(user(f"read-{i}", Priority.READ)) for i in (1, 2)]
    waiting.append(asyncio.create_task(user("write", Priority.WRITE)))
    await asyncio.sleep(0)
    assert lock.waiting == 3
    release_first.set()
    await asyncio.gather(first, *waiting)
    assert order == ["read-0", "write", "read-1", "read-2"]


async def waiter(lock: _PriorityLock) -> None:
    async with lock.hold(Priority.READ):
        pass


@pytest.mark.parametrize("granted_first", [False, True])
async def test_a_cancelled_waiter_does_not_keep_the_lock(granted_first: bool) -> None:
    lock = _PriorityLock()
    async with lock.hold(Priority.READ):
        doomed = asyncio.create_task(waiter(lock))
        await asyncio.sleep(0)
        assert lock.waiting == 1
        if not granted_first:
            doomed.cancel()
    # Leaving the block hands the lock to `doomed`; cancel it in the same turn.
    if granted_first:
        doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    async with asyncio.timeout(1), lock.hold(Priority.WRITE):
        assert lock.waiting == 0
