"""Live status over WebSocket: one Redis subscription per process, fanned out to every client.

Each change is turned into its message once, whatever the number of clients. Each client has a
bounded queue and a task of its own, so no client can slow another. A client
whose queue overflows gets a fresh snapshot instead of the changes it missed (the snapshot is
read when it is sent, so nothing is lost); a client that does not take a message within the
send timeout is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec

from api.mirror import StatusMirror
from api.views import BarrierView, view_of_record
from plc.quality import Quality
from store import CacheUnavailable, StatusCache
from store.types import StatusRecord

log = logging.getLogger(__name__)

RESUBSCRIBE_DELAY = 1.0
"""Seconds between attempts to subscribe again after Redis went away."""


class Snapshot(msgspec.Struct, frozen=True, tag="snapshot", tag_field="type"):
    """Every barrier the client watches, sent on connect and after a resync."""

    barriers: list[BarrierView]


class Change(msgspec.Struct, frozen=True, tag="status", tag_field="type"):
    """One barrier's new status."""

    barrier: BarrierView


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type"):
    """Keeps idle connections and their intermediaries alive; lets a client see a dead link."""

    at: float


LiveMessage = Snapshot | Change | Ping


class Watcher:
    """One WebSocket client's subscription: a filter and a bounded queue."""

    def __init__(self, barrier_ids: frozenset[int] | None, size: int) -> None:
        self.barrier_ids = barrier_ids
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(size)
        """Encoded messages to send; None asks for a fresh snapshot."""
        self.resync_pending = False
        self.resyncs = 0

    def wants(self, barrier_id: int) -> bool:
        """Whether the client watches `barrier_id`."""
        return self.barrier_ids is None or barrier_id in self.barrier_ids

    def offer(self, barrier_id: int, message: str) -> None:
        """Queue a change of `barrier_id`, or, if the client is too far behind, ask for a resync."""
        if not self.wants(barrier_id):
            return
        if self.resync_pending:
            return  # the snapshot to come is read after this change: it shows it
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.resync()

    def resync(self) -> None:
        """Drop what is queued and send a fresh snapshot next."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.resync_pending = True
        self.resyncs += 1
        self.queue.put_nowait(None)


class Broadcaster:
    """Runs the process's one subscription and hands every record to the watchers."""

    def __init__(self, cache: StatusCache, stale_after: float, mirror: StatusMirror) -> None:
        self.cache = cache
        self.stale_after = stale_after
        self.mirror = mirror
        self.watchers: set[Watcher] = set()
        self.subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._quality: dict[int, Quality] = {}

    def start(self) -> None:
        """Subscribe in the background (again and again while Redis is away), and sweep."""
        self._tasks = [
            asyncio.create_task(self._run(), name="broadcast"),
            asyncio.create_task(self._sweep(), name="staleness sweep"),
        ]

    async def stop(self) -> None:
        """Stop the subscription and the sweep."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sweep(self) -> None:
        """Tell watchers of readings that went stale with nobody publishing (a stopped bridge).

        Nothing is published for a barrier whose bridge stopped; its record only grows old.
        Twice per staleness limit every record is judged again, and a barrier whose quality,
        as shown, changed since the last sweep is sent to the watchers.
        """
        while True:
            await asyncio.sleep(self.stale_after / 2)
            try:
                records = await self.cache.get_all()
            except CacheUnavailable:
                continue
            now = time.time()
            for record in records:
                view = view_of_record(record, now, self.stale_after)
                if self._quality.get(record.barrier_id, view.quality) != view.quality:
                    self._offer(record.barrier_id, view)
                self._quality[record.barrier_id] = view.quality

    def _offer(self, barrier_id: int, view: BarrierView) -> None:
        """Hand one change, encoded once, to every watcher."""
        message = msgspec.json.encode(Change(view)).decode()
        for watcher in list(self.watchers):
            watcher.offer(barrier_id, message)

    async def _run(self) -> None:
        while True:
            try:
                async with self.cache.subscribe() as records:
                    self.subscribed.set()
                    self.mirror.subscribed(True)
                    for watcher in self.watchers:
                        watcher.resync()  # it may have missed changes while we were away
                    async for record in records:
                        self.mirror.published(record)
                        view = view_of_record(record, time.time(), self.stale_after)
                        self._offer(record.barrier_id, view)
            except CacheUnavailable as exc:
                log.warning("status subscription lost: %s", exc)
            finally:
                self.subscribed.clear()
                self.mirror.subscribed(False)
            await asyncio.sleep(RESUBSCRIBE_DELAY)


Send = Callable[[str], Awaitable[None]]


class TooSlow(Exception):
    """The client did not take a message within the send timeout."""


async def serve_watcher(
    watcher: Watcher,
    send: Send,
    snapshot: Callable[[], Awaitable[list[StatusRecord]]],
    *,
    stale_after: float,
    ping_interval: float,
    send_timeout: float,
) -> None:
    """Send a snapshot, then every change, and pings when idle; raise TooSlow for a stuck client."""

    async def deliver(message: LiveMessage | str) -> None:
        text = message if isinstance(message, str) else msgspec.json.encode(message).decode()
        try:
            async with asyncio.timeout(send_timeout):
                await send(text)
        except TimeoutError:
            raise TooSlow from None

    async def send_snapshot() -> None:
        watcher.resync_pending = False  # changes from now on are queued again
        records = [r for r in await snapshot() if watcher.wants(r.barrier_id)]
        now = time.time()
        await deliver(Snapshot([view_of_record(r, now, stale_after) for r in records]))

    await send_snapshot()
    while True:
        try:
            async with asyncio.timeout(ping_interval):
                message = await watcher.queue.get()
        except TimeoutError:
            await deliver(Ping(time.time()))
            continue
        if message is None:
            await send_snapshot()
        else:
            await deliver(message)
