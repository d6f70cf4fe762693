"""Poll every barrier of every PLC endpoint: batched reads, one independent loop per endpoint.

Each endpoint's loop reads all its barriers with the fewest requests (see `plc.planning`) every
`interval`, and the barriers that move (or were just commanded) every `fast_interval`. A dead or
slow PLC only delays its own loop. A cycle that overruns starts the next one at once but never
queues cycles up: missed cycles are counted, not piled on the PLC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

import msgspec

from plc.client import PlcClient
from plc.codec import BarrierReading, DecodeError, decode_reading
from plc.errors import PlcConnectionError, PlcError, PlcTimeout
from plc.planning import ReadRequest, plan_reads
from plc.quality import Quality, QualityLimits, assess_quality
from plc.registers import BarrierConfig, BarrierState, PlcEndpoint, RegisterMap, Table

MOVING_STATES = frozenset({BarrierState.OPENING, BarrierState.CLOSING})

log = logging.getLogger(__name__)


class BarrierSample(msgspec.Struct, frozen=True):
    """What is known of one barrier after a poll: its last good reading and how far to trust it."""

    barrier_id: int
    reading: BarrierReading | None
    """The last reading that decoded; None until one has."""
    quality: Quality
    read_at: float | None
    """Wall-clock time (unix seconds) of the last good read."""
    error: str | None = None
    """Why the latest attempt gave no fresh reading, if it did not."""


class PollSettings(msgspec.Struct, frozen=True):
    """How often and how patiently the poller reads."""

    interval: float = 1.0
    """Seconds between full reads of an endpoint."""
    fast_interval: float = 0.1
    """Seconds between reads of barriers that move or were just commanded."""
    request_timeout: float = 1.0
    """Seconds to wait for one Modbus answer."""
    limits: QualityLimits = msgspec.field(default_factory=QualityLimits)


class EndpointStats(msgspec.Struct):
    """Counters of one endpoint's poll loop."""

    cycles: int = 0
    failed_cycles: int = 0
    missed_cycles: int = 0
    last_cycle_seconds: float = 0.0


STOP_RECANCEL = 0.05
"""Seconds `Poller.stop` waits for a cancelled loop to end before cancelling it again."""

SampleSink = Callable[[PlcEndpoint, list[BarrierSample]], None]
"""Receives the samples of the barriers read in one cycle of one endpoint."""


class _Tracked:
    """Mutable per-barrier memory of the poll loop."""

    __slots__ = (
        "config",
        "error",
        "fast_until",
        "heartbeat",
        "heartbeat_changed",
        "read_at",
        "read_mono",
        "reading",
    )

    def __init__(self, config: BarrierConfig) -> None:
        self.config = config
        self.reading: BarrierReading | None = None
        self.read_at: float | None = None
        self.read_mono: float | None = None
        self.heartbeat: int | None = None
        self.heartbeat_changed: float | None = None
        self.error: str | None = None
        self.fast_until = 0.0


class EndpointPoller:
    """The poll loop of one endpoint, with its own `PlcClient`."""

    def __init__(
        self,
        endpoint: PlcEndpoint,
        barriers: Iterable[BarrierConfig],
        client: PlcClient,
        settings: PollSettings,
        sink: SampleSink,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.client = client
        self.settings = settings
        self.stats = EndpointStats()
        self._sink = sink
        self._monotonic = monotonic
        self._wall = wall
        self._barriers = {b.id: _Tracked(b) for b in barriers}
        self._full_plan = plan_reads(
            endpoint, (p for b in self._barriers.values() for _, p in b.config.points.by_role())
        )
        self._link_up = True
        self._wake = asyncio.Event()

    @property
    def link_up(self) -> bool:
        """Whether the last request to the endpoint got an answer."""
        return self._link_up

    @property
    def full_plan(self) -> tuple[ReadRequest, ...]:
        """The reads of one full cycle."""
        return self._full_plan

    def boost(self, barrier_id: int, seconds: float, *, extend: bool = True) -> None:
        """Poll `barrier_id` at the fast rate for `seconds` (e.g. after writing a command).

        With `extend` false the boost is set, not lengthened: ``boost(b, 0, extend=False)``
        ends it (a moving barrier is still polled fast while it moves).
        """
        tracked = self._barriers[barrier_id]
        until = self._monotonic() + seconds
        tracked.fast_until = max(tracked.fast_until, until) if extend else until
        self._wake.set()

    def _sample(self, tracked: _Tracked, now: float) -> BarrierSample:
        return BarrierSample(
            barrier_id=tracked.config.id,
            reading=tracked.reading,
            quality=assess_quality(
                now,
                link_up=self._link_up,
                last_good_read=tracked.read_mono,
                heartbeat_changed=tracked.heartbeat_changed,
                limits=self.settings.limits,
            ),
            read_at=tracked.read_at,
            error=tracked.error,
        )

    def _fast_barriers(self, now: float) -> list[_Tracked]:
        return [
            t
            for t in self._barriers.values()
            if t.fast_until > now or (t.reading is not None and t.reading.state in MOVING_STATES)
        ]

    async def run(self, *, phase: float = 0.0) -> None:
        """Poll until cancelled, the first full cycle `phase` seconds from now.

        An error nobody foresaw (a bug in a sink, say) is logged and counted as a failed
        cycle; the loop goes on at the next full cycle rather than leave the PLC unwatched.
        """
        while True:
            try:
                await self._run(phase)
            except Exception:
                log.exception("poll loop of %s failed; polling again", self.endpoint.name)
                self.stats.failed_cycles += 1
                phase = self.settings.interval

    async def _run(self, phase: float) -> None:
        interval, fast = self.settings.interval, self.settings.fast_interval
        next_full = self._monotonic() + phase
        next_fast = 0.0
        while True:
            # Cleared before deciding, so a boost that comes while we poll is not lost.
            self._wake.clear()
            now = self._monotonic()
            moving = self._fast_barriers(now)
            fast_due = bool(moving) and now >= next_fast
            # A full read due before the next fast one would be takes its place, a little
            # early: a moving barrier is never left unread for longer than `fast`.
            if now >= next_full or (fast_due and next_full - now < fast):
                await self.poll_once()
                next_fast = now + fast
                next_full += interval
                finished = self._monotonic()
                if finished > next_full:
                    missed = int((finished - next_full) // interval) + 1
                    self.stats.missed_cycles += missed
                    next_full += missed * interval
                continue
            if fast_due:
                points = (p for t in moving for _, p in t.config.points.by_role())
                await self._poll(moving, plan_reads(self.endpoint, points))
                next_fast = now + fast
            until = min(next_full, next_fast) if moving else next_full
            try:
                async with asyncio.timeout(max(until - self._monotonic(), 0.0)):
                    await self._wake.wait()
            except TimeoutError:
                continue
            next_fast = 0.0  # a boost: read the barrier it names at once

    async def poll_once(self) -> list[BarrierSample]:
        """Read every barrier of the endpoint once; return their samples (also sent to the sink)."""
        return await self._poll(list(self._barriers.values()), self._full_plan)

    async def _poll(
        self, barriers: list[_Tracked], plan: Iterable[ReadRequest]
    ) -> list[BarrierSample]:
        started = self._monotonic()
        image: dict[Table, dict[int, int]] = {table: {} for table in Table}
        failure: PlcError | None = None
        for request in plan:
            try:
                values = await self.client.read(request.table, request.address, request.count)
            except PlcError as exc:
                failure = exc
                break
            image[request.table].update(
                zip(range(request.address, request.end), values, strict=True)
            )
        now = self._monotonic()
        self.stats.cycles += 1
        self.stats.last_cycle_seconds = now - started
        if failure is not None:
            self.stats.failed_cycles += 1
            # Timeouts and refused connections mean the link is down; an exception reply means
            # the PLC answers but gives no data, which ages the reading into `stale`.
            self._link_up = not isinstance(failure, PlcConnectionError | PlcTimeout)
            for tracked in barriers:
                tracked.error = str(failure)
        else:
            self._link_up = True
            wall = self._wall()
            for tracked in barriers:
                self._decode(tracked, image, now, wall)
        samples = [self._sample(t, now) for t in barriers]
        self._sink(self.endpoint, samples)
        return samples

    def _decode(
        self, tracked: _Tracked, image: dict[Table, dict[int, int]], now: float, wall: float
    ) -> None:
        try:
            reading = decode_reading(tracked.config.points, image)
        except DecodeError as exc:
            tracked.error = str(exc)
            return
        if reading.heartbeat != tracked.heartbeat:
            tracked.heartbeat = reading.heartbeat
            tracked.heartbeat_changed = now
        tracked.reading = reading
        tracked.read_at = wall
        tracked.read_mono = now
        tracked.error = None


class Poller:
    """Every endpoint's poll loop, each with its own client, started and stopped together."""

    def __init__(self, register_map: RegisterMap, settings: PollSettings, sink: SampleSink) -> None:
        self.settings = settings
        self.endpoints = {
            endpoint.name: EndpointPoller(
                endpoint,
                register_map.barriers_on(endpoint.name),
                PlcClient(endpoint, timeout=settings.request_timeout),
                settings,
                sink,
            )
            for endpoint in register_map.endpoints
        }
        self._by_barrier = {
            barrier.id: self.endpoints[barrier.endpoint] for barrier in register_map.barriers
        }
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        """Start one loop per endpoint, their cycles spread evenly over the poll interval.

        Endpoints polled in step would send every request at the same instant and hand every
        sample over at once; spread out, the work (and each request's wait) stays even.
        """
        spacing = self.settings.interval / max(len(self.endpoints), 1)
        self._tasks = [
            asyncio.create_task(loop.run(phase=index * spacing), name=f"poll {name}")
            for index, (name, loop) in enumerate(self.endpoints.items())
        ]

    async def stop(self) -> None:
        """Stop every loop and close every connection.

        Python 3.11's `asyncio.wait_for` (ours and pymodbus's) drops a cancellation that comes
        just as the awaited answer arrives, so a loop may outlive one `cancel()`: cancel again
        until every loop has ended.
        """
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_RECANCEL)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for loop in self.endpoints.values():
            loop.client.close()

    def for_barrier(self, barrier_id: int) -> EndpointPoller:
        """Return the loop that polls `barrier_id`."""
        return self._by_barrier[barrier_id]
