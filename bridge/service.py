"""The bridge service: Kafka commands -> Modbus -> confirmed outcomes in PostgreSQL and Redis.

The decisions live in pure modules (`bridge.lifecycle`, `bridge.tracking`, `bridge.offsets`);
this module wires them to the adapters. Ownership follows the consumer group: the bridge polls
and drives exactly the barriers whose command partitions it is assigned. Each change is written
to PostgreSQL first, then to the Redis record, then published, so the durable record is never
behind the cache.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from bridge.lifecycle import (
    Action,
    CommandTimings,
    Execution,
    PollFast,
    barrier_status_after,
    begin,
    check_deadline,
    fail_unforeseen,
    observed,
    retry_due,
    supersede,
    write_failed,
    write_succeeded,
)
from bridge.messages import (
    Command,
    CommandRejected,
    CommandResult,
    DeadLetterReason,
    command_key,
    dead_letter,
    encode_command,
    parse_command,
)
from bridge.metrics import BridgeMetrics
from bridge.offsets import OffsetTracker
from bridge.partitioning import barrier_partition
from bridge.settings import BridgeSettings
from bridge.tracking import ErrorLatch, track, with_pending
from plc.errors import PlcConnectionError, PlcError, PlcOverloaded, PlcTimeout
from plc.poller import BarrierSample, Poller, PollSettings
from plc.quality import Quality, QualityLimits
from plc.registers import BarrierState, PlcEndpoint, RegisterMap
from store.cache import CacheUnavailable, StatusCache
from store.kafka import (
    AsyncProducer,
    CommandConsumer,
    KafkaUnavailable,
    Record,
    ensure_topics,
    partition_count,
)
from store.postgres import BarrierStore, NewCommand, NewEvent, StoreUnavailable
from store.types import (
    BarrierStatus,
    CommandKind,
    CommandState,
    PendingCommand,
    StatusRecord,
    present,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_DELAY = 0.5
"""Seconds between attempts to reach PostgreSQL or Kafka while they are down."""

TRACKER_WAIT = 1.0
"""Seconds an outcome waits for the tracker to fold in the sample that decided it."""

TRACK_CHUNK = 500
"""Most samples the tracker folds in before it lets other tasks run."""

HISTORY_BATCH = 1000
"""Most history events written in one transaction."""

HOUSEKEEPING_INTERVAL = 0.2
"""Seconds between offset commits and metric updates."""

SENTINEL_INTERVAL = 2.0
"""Seconds between checks that Redis still holds this bridge's records."""

RETRYABLE_WRITE_ERRORS = (PlcConnectionError, PlcTimeout, PlcOverloaded)
"""Write failures worth retrying: the request may not have reached the PLC, and a repeated
request coil write is harmless (an open request for an opening barrier changes nothing)."""


class CommandRun:
    """One command executing on one barrier, fed with that barrier's samples."""

    def __init__(self, bridge: Bridge, command: Command, record: Record | None) -> None:
        self.bridge = bridge
        self.command = command
        self.record = record
        self.inbox: asyncio.Queue[BarrierSample | Command] = asyncio.Queue()
        self.execution: Execution | None = None
        self.task: asyncio.Task[None] | None = None
        self.abandoned = False
        """Stopped without an outcome (partition revoked): its record must stay uncommitted."""
        self.decided = asyncio.Event()
        """Set once the command has reached its outcome (or stopped): the barrier's next
        command may go ahead while this one's outcome is still being recorded."""

    async def execute(self, previous: CommandRun | None) -> None:
        """Run the command to a terminal state, recording every step; resume if it ran before.

        Commands for one barrier run in order: this one starts once `previous` has decided
        its outcome.
        """
        try:
            if previous is not None:
                await previous.decided.wait()
            execution, actions = await self._begin()
            if execution is None:
                return
            self.execution = execution
            execution = await self._superseded_while_waiting(execution)
            while not execution.state.terminal:
                execution = await self._act(execution, actions)
                if execution.state.terminal:
                    break
                execution, actions = await self._next(execution)
            await self.bridge.finish_command(self, execution)
        except asyncio.CancelledError:
            self.abandoned = True
            raise
        except Exception as exc:  # a bug or a record PostgreSQL refuses: kept, never dropped
            log.exception("command %s failed unexpectedly", self.command.command_id)
            await self.bridge.unforeseen(self, exc)
        finally:
            self.decided.set()
            self.bridge.release(self)

    async def _begin(self) -> tuple[Execution | None, list[Action]]:
        bridge, command = self.bridge, self.command
        now = bridge.wall()
        execution, actions = begin(command, now, bridge.timings)
        record, created = await bridge.durably(
            lambda: bridge.store.start_command(
                NewCommand(
                    command_id=command.command_id,
                    barrier_id=command.barrier_id,
                    kind=command.kind,
                    actor=command.actor,
                    requested_at=command.requested_at,
                    accepted_at=now,
                    source=command.source,
                    state=execution.state,
                    detail=execution.detail,
                )
            )
        )
        if not created:
            if record.state.terminal:
                if record.source == command.source:
                    # Redelivered after a crash that came between the outcome and its result.
                    await bridge.send_result(
                        command,
                        record.state,
                        record.finished_at or now,
                        record.detail,
                        record.fault,
                        record.consumed_to_written_ms,
                        record.written_to_confirmed_ms,
                    )
                else:
                    log.info(
                        "command %s ended before (%s): not run again",
                        command.command_id,
                        record.state.value,
                    )
                return None, []
            resumed, actions = begin(
                command,
                now,
                bridge.timings,
                resumed=record.state,
                written_at=record.written_at,
                accepted_at=record.accepted_at,
            )
            await bridge.persist(self, execution=resumed, before=record.state)
            execution = resumed
        else:
            await bridge.persist(self, execution=execution, before=None)
        return execution, actions

    async def _superseded_while_waiting(self, execution: Execution) -> Execution:
        """End a command superseded while it waited for the barrier's previous one.

        It is recorded as superseded and never written: writing it would only send the barrier
        one way for the newer command to send it back. The samples that came meanwhile were
        read before any write of this command and say nothing of it.
        """
        newer: Command | None = None
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if isinstance(item, Command):
                newer = item
        if newer is None or execution.state.terminal:
            return execution
        before = execution.state
        execution = supersede(execution, newer, self.bridge.wall())
        await self.bridge.persist(self, execution=execution, before=before)
        self.execution = execution
        return execution

    async def _act(self, execution: Execution, actions: list[Action]) -> Execution:
        bridge = self.bridge
        pending = collections.deque(actions)
        while pending:
            action = pending.popleft()
            if isinstance(action, PollFast):
                bridge.poll_fast(self.command.barrier_id, action.seconds)
                continue
            before = execution.state
            try:
                await bridge.write_request(self.command.barrier_id, action.kind)
            except PlcError as exc:
                execution, more = write_failed(
                    execution,
                    bridge.wall(),
                    str(exc),
                    retryable=isinstance(exc, RETRYABLE_WRITE_ERRORS),
                    timings=bridge.timings,
                )
            else:
                execution, more = write_succeeded(execution, bridge.wall())
            pending.extend(more)  # e.g. poll fast once the request is written
            if execution.state != before:
                await bridge.persist(self, execution=execution, before=before)
        return execution

    async def _next(self, execution: Execution) -> tuple[Execution, list[Action]]:
        bridge = self.bridge
        wake_at = min(execution.deadline_at, execution.retry_at or math.inf)
        item: BarrierSample | Command | None
        try:
            async with asyncio.timeout(max(wake_at - bridge.wall(), 0.0)):
                item = await self.inbox.get()
        except TimeoutError:
            item = None
        now = bridge.wall()
        before = execution.state
        if isinstance(item, BarrierSample):
            execution = observed(execution, item, now)
        elif isinstance(item, Command):
            execution = supersede(execution, item, now)
        execution, actions = retry_due(execution, now)
        execution, _ = check_deadline(execution, now)
        if execution.state != before:
            seen = item if isinstance(item, BarrierSample) else None
            await bridge.persist(self, execution=execution, before=before, seen=seen)
        self.execution = execution
        return execution, actions


class Bridge:
    """One bridge instance: a consumer-group member that polls and drives the barriers it owns."""

    def __init__(
        self,
        settings: BridgeSettings,
        register_map: RegisterMap,
        store: BarrierStore,
        cache: StatusCache,
        producer: AsyncProducer,
        *,
        metrics: BridgeMetrics | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.register_map = register_map
        self.store = store
        self.cache = cache
        self.producer = producer
        self.metrics = metrics or BridgeMetrics()
        self.wall = wall
        self.timings = CommandTimings(
            ttl=settings.command_ttl,
            deadline=settings.command_deadline,
            write_retry=settings.write_retry,
        )
        self.poll_settings = PollSettings(
            interval=settings.poll_interval,
            fast_interval=settings.fast_poll_interval,
            request_timeout=settings.request_timeout,
            limits=QualityLimits(
                stale_after=settings.stale_after, frozen_after=settings.stale_after
            ),
        )
        self.partitions = settings.partitions
        self._home = self._partitions_of(self.partitions)
        """Each barrier's command partition: which partition's owner drives it."""
        self.owned_partitions: set[int] = set()
        self.runs: dict[int, CommandRun] = {}
        """The newest command of each barrier with one."""
        self._live: set[CommandRun] = set()
        """Every run not yet ended, older ones still recording their outcome included."""
        self.records: dict[int, StatusRecord] = {}
        self.latches: dict[int, ErrorLatch] = {}
        self._plc_states: dict[int, BarrierState] = {}
        self.offsets = OffsetTracker()
        self.poller: Poller | None = None
        self.consumer: CommandConsumer | None = None
        self._names = {b.id: b.name for b in register_map.barriers}
        self._untracked: dict[int, BarrierSample] = {}
        self._untracked_event = asyncio.Event()
        self._tracked_at: dict[int, float] = {}
        """Read time of the newest sample the tracker has folded in, per barrier."""
        self._tracked = asyncio.Condition()
        self._history: list[NewEvent] = []
        """Tracked events not yet written to PostgreSQL, oldest first."""
        self._history_event = asyncio.Event()
        self._dirty: dict[int, bool] = {}
        """Barriers whose record the cache is to get, and whether to publish it."""
        self._dirty_event = asyncio.Event()
        self._unrecorded: collections.Counter[int] = collections.Counter()
        """Per barrier, its tracked events not yet written to PostgreSQL."""
        self._held: dict[int, bool] = {}
        """Barriers whose cache write waits for their history to be written (and publish?)."""
        self._tasks: list[asyncio.Task[None]] = []
        self.crashed = asyncio.Event()
        """Set when one of the bridge's own loops died of an error: the process must go."""
        self.ready = asyncio.Event()
        """Set once the first partitions were assigned and their barriers are polled."""

    # -- ownership -------------------------------------------------------------------------

    def owns(self, barrier_id: int) -> bool:
        """Whether this instance drives `barrier_id` now."""
        return self._home.get(barrier_id) in self.owned_partitions

    def _partitions_of(self, partitions: int) -> dict[int, int]:
        return {b.id: barrier_partition(b.id, partitions) for b in self.register_map.barriers}

    async def _assigned(self, partitions: set[int]) -> dict[int, int]:
        self.owned_partitions |= partitions
        await self._repoll()
        self.ready.set()
        log.info("assigned partitions %s", sorted(partitions))
        return {}

    async def _revoked(self, partitions: set[int]) -> dict[int, int]:
        # Stop the commands of the revoked barriers without an outcome: their records stay
        # uncommitted, so the next owner gets them again and resumes from PostgreSQL.
        leaving = [run for run in self._live if self._home[run.command.barrier_id] in partitions]
        for run in leaving:
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in leaving if r.task), return_exceptions=True)
        offsets = {p: o for p, o in self.offsets.committable().items() if p in partitions}
        self.offsets.committed(offsets)
        self.offsets.forget(partitions)
        self.owned_partitions -= partitions
        await self._repoll()
        log.info("revoked partitions %s", sorted(partitions))
        return offsets

    async def _repoll(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None
        owned = tuple(b for b in self.register_map.barriers if self.owns(b.id))
        self.metrics.owned_barriers.set(len(owned))
        for barrier_id in list(self.records):
            if not self.owns(barrier_id):
                del self.records[barrier_id]
        await self._seed({b.id for b in owned} - self.records.keys())
        if not owned:
            return
        endpoints = {b.endpoint for b in owned}
        subset = RegisterMap(
            endpoints=tuple(e for e in self.register_map.endpoints if e.name in endpoints),
            barriers=owned,
        )
        self.poller = Poller(subset, self.poll_settings, self._on_samples)
        self.poller.start()

    # -- PLC -------------------------------------------------------------------------------

    async def write_request(self, barrier_id: int, kind: CommandKind) -> None:
        """Write 1 to the barrier's OPEN or CLOSE request coil."""
        if self.poller is None or not self.owns(barrier_id):
            raise PlcConnectionError(str(barrier_id), "barrier is not owned by this bridge")
        points = self.register_map.barrier(barrier_id).points
        point = points.open_request if kind is CommandKind.OPEN else points.close_request
        await self.poller.for_barrier(barrier_id).client.write_coil(point.address, True)

    def poll_fast(self, barrier_id: int, seconds: float) -> None:
        """Poll `barrier_id` at the fast rate for `seconds`."""
        if self.poller is not None and self.owns(barrier_id):
            self.poller.for_barrier(barrier_id).boost(barrier_id, seconds)

    def settle(self, barrier_id: int) -> None:
        """Stop polling `barrier_id` at the fast rate (its command ended)."""
        if self.poller is not None and self.owns(barrier_id):
            self.poller.for_barrier(barrier_id).boost(barrier_id, 0.0, extend=False)

    def _on_samples(self, endpoint: PlcEndpoint, samples: list[BarrierSample]) -> None:
        # Runs in the poll loop. Commands hear of their barrier at once; the history and the
        # cache are written by the tracker, which keeps only the newest sample of each barrier
        # while it catches up: bounded by the number of barriers, never an unbounded backlog.
        self._observe_endpoint(endpoint)
        for sample in samples:
            run = self.runs.get(sample.barrier_id)
            if run is not None:
                run.inbox.put_nowait(sample)
            self._untracked[sample.barrier_id] = sample
        self._untracked_event.set()

    async def _track(self) -> None:
        while True:
            await self._untracked_event.wait()
            self._untracked_event.clear()
            batch, self._untracked = self._untracked, {}
            samples = list(batch.values())
            for first in range(0, len(samples), TRACK_CHUNK):
                self._track_many(samples[first : first + TRACK_CHUNK], self.wall())
                await asyncio.sleep(0)  # let the poll loops run between chunks
            async with self._tracked:
                self._tracked.notify_all()

    async def _tracked_through(self, barrier_id: int, read_at: float) -> None:
        """Wait (briefly) until the tracker has folded in the barrier's sample read at `read_at`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TRACKER_WAIT), self._tracked:
                await self._tracked.wait_for(
                    lambda: self._tracked_at.get(barrier_id, -math.inf) >= read_at
                )

    def _ends_command(self, sample: BarrierSample, now: float) -> bool:
        """Whether `sample` ends the barrier's running command.

        The record is then published with the outcome, in one message: a client never sees
        ``opened`` beside an open command still in progress.
        """
        run = self.runs.get(sample.barrier_id)
        execution = run.execution if run is not None else None
        return (
            execution is not None
            and not execution.state.terminal
            and observed(execution, sample, now).state.terminal
        )

    def _observe_endpoint(self, endpoint: PlcEndpoint) -> None:
        if self.poller is None or endpoint.name not in self.poller.endpoints:
            return
        loop = self.poller.endpoints[endpoint.name]
        self.metrics.poll_cycle.labels(endpoint.name).observe(loop.stats.last_cycle_seconds)
        self.metrics.link_up.labels(endpoint.name).set(1 if loop.link_up else 0)
        self.metrics.missed_cycles.labels(endpoint.name).set(loop.stats.missed_cycles)

    def _track_many(self, samples: list[BarrierSample], now: float) -> None:
        """Fold `samples` into the records at once; queue the history they imply.

        The history is written in order, in batches (`_write_history`); a record whose change
        has an event reaches the cache once that event is written, so the durable record is
        never behind the cache. A record whose change has none (a position, a read time)
        reaches it at once.
        """
        for sample in samples:
            barrier_id = sample.barrier_id
            if not self.owns(barrier_id):
                continue
            if sample.reading is not None:
                self._plc_states[barrier_id] = sample.reading.state
            previous = self.records.get(barrier_id)
            pending = previous.pending if previous is not None else None
            latch = self.latches.get(barrier_id)
            tracked = track(previous, self._names[barrier_id], sample, pending, now, latch)
            if tracked.latch is None:
                self.latches.pop(barrier_id, None)
            self._unrecorded[barrier_id] += len(tracked.changes)
            self._history.extend(
                NewEvent(
                    barrier_id=barrier_id,
                    event_type=change.event_type,
                    at=now,
                    status=change.status,
                    detail=change.detail,
                    command_id=pending.command_id if pending else None,
                    actor=pending.actor if pending else None,
                    fault=tracked.record.fault,
                    position=tracked.record.position,
                )
                for change in tracked.changes
            )
            if tracked.refresh:
                self.records[barrier_id] = tracked.record
                if not self._ends_command(sample, now):
                    self._mark_dirty(barrier_id, tracked.publish)
            if sample.read_at is not None:
                self._tracked_at[barrier_id] = sample.read_at
        if self._history:
            self._history_event.set()

    async def _write_history(self) -> None:
        """Write the tracked history in order, a batch per transaction, retrying while down.

        A batch leaves the queue only once written: one caught by a stop stays for `stop`.
        """
        while True:
            await self._history_event.wait()
            self._history_event.clear()
            await self._flush_history(
                lambda batch: self.durably(functools.partial(self.store.record_events, batch))
            )

    async def _flush_history(self, write: Callable[[list[NewEvent]], Awaitable[None]]) -> None:
        """Write the queued history with `write`, a batch at a time, oldest first."""
        while self._history:
            batch = self._history[:HISTORY_BATCH]
            await write(batch)
            del self._history[: len(batch)]
            self._recorded(batch)

    def _recorded(self, events: list[NewEvent]) -> None:
        """Let the records whose history is now written go to the cache."""
        for event in events:
            barrier_id = event.barrier_id
            self._unrecorded[barrier_id] -= 1
            if self._unrecorded[barrier_id] <= 0:
                del self._unrecorded[barrier_id]
                if barrier_id in self._held:
                    self._mark_dirty(barrier_id, self._held.pop(barrier_id))

    # -- recording -------------------------------------------------------------------------

    async def durably(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a PostgreSQL write, retrying while PostgreSQL is down: outcomes are never lost."""
        while True:
            try:
                return await write()
            except StoreUnavailable as exc:
                log.warning("PostgreSQL unavailable, retrying: %s", exc)
                await asyncio.sleep(RETRY_DELAY)

    async def persist(
        self,
        run: CommandRun,
        *,
        execution: Execution,
        before: CommandState | None,
        seen: BarrierSample | None = None,
    ) -> None:
        """Record a command's new state in PostgreSQL, then show it in the Redis record.

        For an outcome the PLC itself reported (the sample `seen` ended the command), the
        record is shown once the tracker has folded that sample in, so it shows the state that
        ended the command beside no pending command, in one published message.
        """
        state = execution.state
        if state.terminal:
            run.decided.set()
        if before is not None and state != before:
            await self._record_state(run, execution)
        if seen is not None and seen.read_at is not None and state.terminal:
            await self._tracked_through(run.command.barrier_id, seen.read_at)
        self._show(run, execution)

    async def _record_state(self, run: CommandRun, execution: Execution) -> None:
        """Move the command to `execution`'s state in PostgreSQL, retrying while it is down."""
        command, state = run.command, execution.state
        at = execution.finished_at or execution.written_at or self.wall()
        if state is CommandState.WRITTEN and execution.written_at is not None:
            at = execution.written_at
        fault = execution.fault.name.lower() if execution.fault is not None else None
        await self.durably(
            lambda: self.store.advance_command(
                command.command_id,
                state,
                at=at,
                detail=execution.detail,
                fault=fault,
                barrier_status=barrier_status_after(execution) if state.terminal else None,
                event_detail={"kind": command.kind.value, "detail": execution.detail},
            )
        )

    def _show(self, run: CommandRun, execution: Execution) -> None:
        """Put the command's state (pending, or gone once it ended) in the barrier's record."""
        command, state = run.command, execution.state
        pending = (
            None
            if state.terminal
            else PendingCommand(command.command_id, command.kind, command.actor, state)
        )
        record = self.records.get(command.barrier_id)
        if record is None:
            return
        if record.pending is not None and record.pending.command_id != command.command_id:
            return  # the barrier's next command has taken over the record
        record = with_pending(record, pending, self.wall())
        plc_state = self._plc_states.get(command.barrier_id)
        if state is CommandState.TIMED_OUT and plc_state is not None:
            # Whatever the PLC still claims (a stuck barrier says "opening" forever), the
            # barrier is in error until it reports something new.
            latch = ErrorLatch(plc_state, "travel_timeout")
            self.latches[command.barrier_id] = latch
            record = msgspec.structs.replace(
                record, status=BarrierStatus.ERROR, fault=record.fault or latch.fault
            )
        self.records[command.barrier_id] = record
        self._mark_dirty(command.barrier_id, True)

    async def finish_command(self, run: CommandRun, execution: Execution) -> None:
        """Publish a terminal outcome and let its offset be committed."""
        command = run.command
        if self.runs.get(command.barrier_id) is run:
            self.settle(command.barrier_id)
        written, finished = execution.written_at, execution.finished_at or self.wall()
        to_written = (written - execution.accepted_at) * 1000 if written is not None else None
        to_confirmed = (finished - written) * 1000 if written is not None else None
        fault = execution.fault.name.lower() if execution.fault is not None else None
        await self.send_result(
            command, execution.state, finished, execution.detail, fault, to_written, to_confirmed
        )
        self.metrics.outcomes.labels(execution.state.value).inc()
        if to_written is not None:
            self.metrics.consumed_to_written.observe(to_written / 1000)
        if to_confirmed is not None and execution.state is CommandState.CONFIRMED:
            self.metrics.written_to_confirmed.observe(to_confirmed / 1000)

    async def send_result(
        self,
        command: Command,
        outcome: CommandState,
        finished_at: float,
        detail: str | None,
        fault: str | None,
        consumed_to_written_ms: float | None,
        written_to_confirmed_ms: float | None,
    ) -> None:
        """Produce the command's record on the results topic (retrying while Kafka is down)."""
        result = CommandResult(
            command_id=command.command_id,
            barrier_id=str(command.barrier_id),
            command=command.kind,
            outcome=outcome,
            actor=command.actor,
            requested_at=round(command.requested_at * 1000),
            finished_at=round(finished_at * 1000),
            detail=detail,
            fault=fault,
            consumed_to_written_ms=consumed_to_written_ms,
            written_to_confirmed_ms=written_to_confirmed_ms,
        )
        await self._produce(
            self.settings.results_topic,
            msgspec.json.encode(result),
            command_key(command.barrier_id),
        )

    async def _produce(
        self, topic: str, value: bytes, key: bytes | None, partition: int | None = None
    ) -> None:
        while True:
            try:
                await self.producer.send(topic, value, key=key, partition=partition)
                return
            except KafkaUnavailable as exc:
                log.warning("Kafka unavailable, retrying: %s", exc)
                await asyncio.sleep(RETRY_DELAY)

    def release(self, run: CommandRun) -> None:
        """Forget a run that ended (or was stopped) and free its record's offset."""
        self._live.discard(run)
        if self.runs.get(run.command.barrier_id) is run:
            del self.runs[run.command.barrier_id]
        self.metrics.running_commands.set(len(self.runs))
        if run.record is None:
            return
        if run.abandoned:
            if self.consumer is not None:
                self.consumer.done()  # free the slot; the offset stays for the next owner
        else:
            self._record_done(run.record)

    def _record_done(self, record: Record) -> None:
        self.offsets.finished(record.partition, record.offset)
        if self.consumer is not None:
            self.consumer.done()

    def _mark_dirty(self, barrier_id: int, publish: bool) -> None:
        """Have the cache get the barrier's record: once its history is written, if it waits."""
        if self._unrecorded.get(barrier_id):
            self._held[barrier_id] = self._held.get(barrier_id, False) or publish
            return
        self._dirty[barrier_id] = self._dirty.get(barrier_id, False) or publish
        self._dirty_event.set()

    async def _write_cache(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            batch, self._dirty = self._dirty, {}
            records = [present(self.records[b]) for b in batch if b in self.records]
            try:
                await self.cache.put_many(records, publish={b for b, p in batch.items() if p})
            except CacheUnavailable as exc:
                # Redis is a cache: commands go on; the records are written when it is back.
                log.warning("Redis unavailable, will catch up: %s", exc)
                for barrier_id, publish in batch.items():
                    self._dirty[barrier_id] = self._dirty.get(barrier_id, False) or publish
                await asyncio.sleep(RETRY_DELAY)
                self._dirty_event.set()

    # -- commands --------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.consumer is not None
        while True:
            record = await self.consumer.records.get()
            if record.partition not in self.owned_partitions or self.consumer.paused:
                # Consumed just before a revoke, or handed out just before a stop: left
                # uncommitted, so that the next owner reads it again.
                self.consumer.done()
                continue
            self.offsets.started(record.partition, record.offset)
            await self._handle(record)

    async def _handle(self, record: Record) -> None:
        try:
            await self._dispatch(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: the record goes to the dead letters, the rest go on
            log.exception("record %s/%s failed unexpectedly", record.partition, record.offset)
            await self._dead_letter(
                record, CommandRejected(DeadLetterReason.INTERNAL_ERROR, _described(exc))
            )

    async def _dispatch(self, record: Record) -> None:
        try:
            command = parse_command(
                record.value,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                record_timestamp_ms=record.timestamp_ms,
            )
            try:
                self.register_map.barrier(command.barrier_id)
            except KeyError:
                raise CommandRejected(
                    DeadLetterReason.UNKNOWN_BARRIER,
                    f"barrier {command.barrier_id} is not in the register map",
                ) from None
        except CommandRejected as rejected:
            await self._dead_letter(record, rejected)
            return
        home = self._home[command.barrier_id]
        if home != record.partition:
            # A producer with another partitioner: hand the command to the barrier's owner,
            # with its id fixed, so that no two bridges ever drive one barrier.
            await self._produce(
                self.settings.commands_topic,
                encode_command(command),
                command_key(command.barrier_id),
                partition=home,
            )
            self._record_done(record)
            return
        self._start(command, record)

    async def _dead_letter(self, record: Record, rejected: CommandRejected) -> None:
        """Send `record` to the dead-letter topic with the reason, and let its offset go."""
        await self._send_dead_letter(record, rejected)
        self._record_done(record)

    async def _send_dead_letter(self, record: Record, rejected: CommandRejected) -> None:
        letter = dead_letter(
            rejected,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            now=self.wall(),
        )
        await self._produce(
            self.settings.dead_letter_topic, msgspec.json.encode(letter), record.key
        )
        self.metrics.dead_letters.labels(rejected.reason.value).inc()
        log.warning("dead letter %s/%s: %s", record.partition, record.offset, rejected)

    async def unforeseen(self, run: CommandRun, exc: Exception) -> None:
        """End a command that failed in a way nobody foresaw, so that it is not silently lost.

        One that was never recorded goes to the dead letters with its record; one that was is
        recorded ``failed`` (best effort: whatever broke may break this too) and its result
        produced. Its offset is let go either way (`release`): retrying a bug would repeat it.
        """
        detail = f"internal error: {_described(exc)}"
        execution = run.execution
        if execution is None:
            if run.record is not None:
                rejected = CommandRejected(DeadLetterReason.INTERNAL_ERROR, detail)
                await self._send_dead_letter(run.record, rejected)
            return
        if execution.state.terminal:
            return  # its outcome was decided and recorded; only telling of it failed
        failed = fail_unforeseen(execution, self.wall(), detail)
        run.execution = failed
        try:
            await self._record_state(run, failed)
        except Exception:
            log.exception("could not record the failure of %s", run.command.command_id)
        self._show(run, failed)
        await self.finish_command(run, failed)

    def _start(self, command: Command, record: Record | None) -> None:
        previous = self.runs.get(command.barrier_id)
        if previous is not None and previous.command.command_id == command.command_id:
            if record is not None:
                self._record_done(record)  # the same command is running already
            return
        if previous is not None:
            previous.inbox.put_nowait(command)  # a newer command supersedes it
        run = CommandRun(self, command, record)
        self.runs[command.barrier_id] = run
        self._live.add(run)
        run.task = asyncio.create_task(run.execute(previous), name=f"command {command.command_id}")
        self.metrics.running_commands.set(len(self.runs))

    # -- lifecycle -------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_sentinel = 0.0
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            if self.consumer is not None:
                offsets = self.offsets.committable()
                if offsets:
                    self.consumer.commit(offsets)
                    self.offsets.committed(offsets)
                for partition, lag in list(self.consumer.lag.items()):
                    self.metrics.consumer_lag.labels(str(partition)).set(lag)
            now = time.monotonic()
            if now - last_sentinel >= SENTINEL_INTERVAL:
                last_sentinel = now
                await self._check_cache()

    async def _check_cache(self) -> None:
        try:
            if await self.cache.has_sentinel(self.settings.instance_id):
                return
            log.info("Redis lost this bridge's records: rebuilding %d", len(self.records))
            await self.cache.rebuild(
                [present(r) for r in self.records.values()], owner=self.settings.instance_id
            )
        except CacheUnavailable as exc:
            log.warning("Redis unavailable: %s", exc)

    async def _seed(self, barrier_ids: set[int]) -> None:
        """Start newly owned barriers from their last confirmed status: no false changes."""
        if not barrier_ids:
            return
        rows = await self.durably(self.store.barrier_rows)
        now = self.wall()
        for row in rows:
            if row.id in barrier_ids:
                self.records[row.id] = StatusRecord(
                    barrier_id=row.id,
                    name=row.name,
                    status=row.status,
                    quality=Quality.GOOD,
                    position=row.position,
                    fault=row.fault,
                    read_at=None,
                    updated_at=now,
                )

    async def start(self) -> None:
        """Prepare topics and database, join the consumer group and start every loop."""
        settings = self.settings
        await asyncio.to_thread(
            ensure_topics,
            settings.kafka_bootstrap,
            {
                settings.commands_topic: settings.partitions,
                settings.results_topic: settings.partitions,
                settings.dead_letter_topic: 1,
            },
        )
        # Ownership follows the topic as it is, whatever `partitions` says.
        self.partitions = await asyncio.to_thread(
            partition_count, settings.kafka_bootstrap, settings.commands_topic
        )
        self._home = self._partitions_of(self.partitions)
        await self.durably(self.store.migrate)
        await self.durably(lambda: self.store.sync_barriers(self.register_map.barriers))
        self.consumer = CommandConsumer(
            self.settings.kafka_bootstrap,
            self.settings.commands_topic,
            self.settings.group_id,
            on_assign=self._assigned,
            on_revoke=self._revoked,
            session_timeout_ms=self.settings.session_timeout_ms,
            client_id=f"barrier-bridge-{self.settings.instance_id}",
        )
        self.consumer.start()
        self._tasks = [
            asyncio.create_task(self._consume(), name="consume"),
            asyncio.create_task(self._track(), name="track"),
            asyncio.create_task(self._write_history(), name="history"),
            asyncio.create_task(self._write_cache(), name="cache"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._watch)

    def _watch(self, task: asyncio.Task[None]) -> None:
        """A loop of the bridge ended: unless it was stopped, the bridge cannot go on."""
        if task.cancelled():
            return
        log.critical("the bridge's %s loop died", task.get_name(), exc_info=task.exception())
        self.crashed.set()

    async def stop(self) -> None:
        """SIGTERM: take no new commands, let running ones finish (or hand them over), leave."""
        if self.consumer is not None:
            self.consumer.pause()
            running = [r.task for r in self._live if r.task is not None]
            if running:
                await asyncio.wait(running, timeout=self.settings.shutdown_grace)
            offsets = self.offsets.committable()
            self.consumer.commit(offsets)
            self.offsets.committed(offsets)
            await self.consumer.stop()  # leaves the group; unfinished commands are handed over
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Write the history still queued, best effort.
        with contextlib.suppress(StoreUnavailable):
            await self._flush_history(self.store.record_events)
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None
        # Flush what the cache has not yet seen, best effort.
        with contextlib.suppress(CacheUnavailable):
            if self._dirty:
                await self.cache.put_many(
                    [present(self.records[b]) for b in self._dirty if b in self.records],
                    publish={b for b, p in self._dirty.items() if p},
                )


def _described(exc: BaseException) -> str:
    """`exc` in one line for a dead letter or a command's detail."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else f"{text[:497]}..."
