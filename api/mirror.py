"""The status records a process has read lately, kept current by its one subscription.

``GET /barriers/{id}/status`` is asked many times a second per barrier; going to Redis for each
costs more than the rest of the answer. The mirror keeps each record read, and every record the
subscription brings (each change the bridge makes is published) replaces it at once. A record
is served from the mirror for at most `MIRROR_TTL` seconds after it was read or published, then
read again: the bridge refreshes a record's read time without publishing it, so an entry is
never older than that, and the age shown is never smaller than the truth. While the
subscription is down nothing is served from the mirror.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from store.types import StatusRecord

MIRROR_TTL = 0.25
"""Seconds a record is served from memory before it is read from Redis again."""


class StatusMirror:
    """Records by barrier id, each with when it was last known to be Redis's."""

    def __init__(self, ttl: float = MIRROR_TTL, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[int, tuple[StatusRecord, float]] = {}
        self._published: dict[int, int] = {}
        """Per barrier, how many records the subscription brought: tells a read that raced
        a publication, whose result may be older than what was published."""
        self._epoch = 0
        """How many times the subscription came up or went down: tells a read that raced it."""
        self.live = False
        """Whether the subscription is up; if not, every read goes to Redis."""

    def published(self, record: StatusRecord) -> None:
        """Take a record the subscription brought: it is Redis's newest for its barrier."""
        if not self.live:
            return
        barrier_id = record.barrier_id
        self._entries[barrier_id] = (record, self._clock())
        self._published[barrier_id] = self._published.get(barrier_id, 0) + 1

    def subscribed(self, live: bool) -> None:
        """Note that the subscription came up or went down; either way forget everything."""
        self.live = live
        self._epoch += 1
        self._entries.clear()

    async def get(
        self, barrier_id: int, read: Callable[[int], Awaitable[StatusRecord | None]]
    ) -> StatusRecord | None:
        """Barrier `barrier_id`'s record: from memory if known lately, else from `read`."""
        entry = self._entries.get(barrier_id)
        if entry is not None and self._clock() - entry[1] < self.ttl:
            return entry[0]
        before = (self._epoch, self._published.get(barrier_id, 0))
        read_at = self._clock()
        record = await read(barrier_id)
        after = (self._epoch, self._published.get(barrier_id, 0))
        if record is not None and self.live and after == before:
            # Nothing was published while we read: what we read is the newest.
            self._entries[barrier_id] = (record, read_at)
        return record
