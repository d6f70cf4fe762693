"""The API's status mirror: when a record comes from memory and when from Redis."""

from __future__ import annotations

import asyncio

import pytest

from api.mirror import StatusMirror
from plc.quality import Quality
from store.types import BarrierStatus, StatusRecord

pytestmark = [pytest.mark.unit, pytest.mark.asyncio]

TTL = 0.25


def record(status: BarrierStatus, barrier_id: int = 1) -> StatusRecord:
    return StatusRecord(barrier_id, f"Barrier {barrier_id}", status, Quality.GOOD)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Cache:
    """What Redis holds, and how many times it was read."""

    def __init__(self, held: StatusRecord | None) -> None:
        self.held = held
        self.reads = 0

    async def read(self, barrier_id: int) -> StatusRecord | None:
        self.reads += 1
        return self.held if self.held is None or self.held.barrier_id == barrier_id else None


def live_mirror(clock: Clock) -> StatusMirror:
    mirror = StatusMirror(TTL, clock)
    mirror.subscribed(True)
    return mirror


async def test_a_record_read_is_served_from_memory_until_the_ttl_ends() -> None:
    clock, cache = Clock(), Cache(record(BarrierStatus.CLOSED))
    mirror = live_mirror(clock)
    assert await mirror.get(1, cache.read) == record(BarrierStatus.CLOSED)
    cache.held = record(BarrierStatus.OPENED)  # refreshed without a publication
    clock.now += TTL - 0.01
    assert await mirror.get(1, cache.read) == record(BarrierStatus.CLOSED)
    assert cache.reads == 1
    clock.now += 0.01
    assert await mirror.get(1, cache.read) == record(BarrierStatus.OPENED)
    assert cache.reads == 2


async def test_a_publication_replaces_the_record_at_once() -> None:
    clock, cache = Clock(), Cache(record(BarrierStatus.CLOSED))
    mirror = live_mirror(clock)
    await mirror.get(1, cache.read)
    mirror.published(record(BarrierStatus.OPENING))
    assert await mirror.get(1, cache.read) == record(BarrierStatus.OPENING)
    assert cache.reads == 1


async def test_without_a_subscription_every_get_reads_cache() -> None:
    clock, cache = Clock(), Cache(record(BarrierStatus.CLOSED))
    mirror = StatusMirror(TTL, clock)
    mirror.published(record(BarrierStatus.OPENED))  # cannot arrive without one; ignored
    for _ in range(3):
        assert await mirror.get(1, cache.read) == record(BarrierStatus.CLOSED)
    assert cache.reads == 3
    mirror.subscribed(True)
    await mirror.get(1, cache.read)
    mirror.subscribed(False)  # lost: what it knew may be missing changes
    await mirror.get(1, cache.read)
    assert cache.reads == 5


async def test_a_read_that_raced_a_publication_does_not_replace_it() -> None:
    clock = Clock()
    mirror = live_mirror(clock)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_read(barrier_id: int) -> StatusRecord | None:
        started.set()
        await release.wait()
        return record(BarrierStatus.CLOSED, barrier_id)  # read before the change

    reading = asyncio.create_task(mirror.get(1, slow_read))
    await started.wait()
    mirror.published(record(BarrierStatus.OPENING))
    release.set()
    assert await reading == record(BarrierStatus.CLOSED)  # this caller asked before the change
    assert await mirror.get(1, Cache(None).read) == record(BarrierStatus.OPENING)


async def test_a_read_that_raced_a_resubscription_is_not_kept() -> None:
    clock = Clock()
    mirror = StatusMirror(TTL, clock)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_read(barrier_id: int) -> StatusRecord | None:
        started.set()
        await release.wait()
        return record(BarrierStatus.CLOSED, barrier_id)

    reading = asyncio.create_task(mirror.get(1, slow_read))
    await started.wait()
    mirror.subscribed(True)
    release.set()
    await reading
    cache = Cache(record(BarrierStatus.OPENED))
    assert await mirror.get(1, cache.read) == record(BarrierStatus.OPENED)
    assert cache.reads == 1
