"""PostgreSQL adapter: barriers, their commands and their history, every change one transaction.

The store records what the bridge decided; it decides nothing. Times cross this boundary as unix
seconds (floats) and are converted in SQL: ``to_timestamp`` on the way in, ``extract(epoch)`` on
the way out (``barriers.last_updated`` is a ``TIMESTAMP`` holding UTC, the others ``TIMESTAMPTZ``).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Self

import msgspec
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from plc.registers import BarrierConfig
from store.migrations import migrate
from store.types import (
    COMMAND_EVENTS,
    CONFIRMED_STATUSES,
    BarrierStatus,
    CommandKind,
    CommandState,
    EventType,
)


class StoreUnavailable(Exception):
    """PostgreSQL cannot be reached, so nothing was recorded; retry once it is back."""


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A history event to record; a confirmed status also becomes the barrier's durable status."""

    barrier_id: int
    event_type: EventType
    at: float
    """Unix seconds."""
    status: BarrierStatus | None = None
    detail: dict[str, object] = msgspec.field(default_factory=dict)
    command_id: str | None = None
    actor: str | None = None
    fault: str | None = None
    position: int | None = None


class NewCommand(msgspec.Struct, frozen=True):
    """A command the bridge has taken on, to be recorded once per ``command_id``."""

    command_id: str
    """A UUID: recording the same one again does nothing."""
    barrier_id: int
    kind: CommandKind
    actor: str
    requested_at: float
    accepted_at: float
    source: str
    """``topic/partition/offset`` of the Kafka record, or ``api``."""
    state: CommandState = CommandState.ACCEPTED
    """The state it is recorded in: ``expired`` for one consumed too late, for instance."""
    detail: str | None = None


class CommandRecord(msgspec.Struct, frozen=True):
    """One row of ``commands``; times are unix seconds."""

    command_id: str
    barrier_id: int
    kind: CommandKind
    actor: str
    state: CommandState
    requested_at: float
    accepted_at: float
    written_at: float | None
    finished_at: float | None
    """Set when the command reaches a terminal state."""
    detail: str | None
    fault: str | None
    source: str | None
    consumed_to_written_ms: float | None
    written_to_confirmed_ms: float | None
    """From the last write to the terminal state, whatever that state is."""


class EventRow(msgspec.Struct, frozen=True):
    """One row of the ``barrier_events`` history."""

    id: int
    barrier_id: int
    event_type: str
    command_id: str | None
    actor: str | None
    status: str | None
    detail: dict[str, object]
    created_at: datetime


class EventFilter(msgspec.Struct, frozen=True):
    """Which events to list; every field is optional."""

    barrier_id: int | None = None
    event_type: str | None = None
    command_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, int] | None = None
    """Keyset cursor: list only events older than this (created_at, id)."""


class IdempotentAnswer(msgspec.Struct, frozen=True):
    """What an earlier request with the same Idempotency-Key got, or that it is still running."""

    request: str
    """What that request asked (to tell a retry from a different request under the same key)."""
    status_code: int | None
    response: dict[str, object] | None


class KeyClaim(msgspec.Struct, frozen=True):
    """A request's hold on an Idempotency-Key: only its holder may answer or release it."""

    actor: str
    key: str
    claimed_at: datetime
    """When it was claimed: tells this claim from a later one that took the key over."""


class BarrierRow(msgspec.Struct, frozen=True):
    """One row of ``barriers``: the last confirmed status, not the live one."""

    id: int
    name: str
    status: BarrierStatus | None
    """None until the first confirmation."""
    fault: str | None
    position: int | None
    last_updated: float | None
    active: bool
    """False once the barrier has left the register map (its history stays)."""


_COMMAND_COLUMNS = """
    command_id::text AS command_id, barrier_id, kind, actor, state,
    extract(epoch FROM requested_at)::float8 AS requested_at,
    extract(epoch FROM accepted_at)::float8 AS accepted_at,
    extract(epoch FROM written_at)::float8 AS written_at,
    extract(epoch FROM finished_at)::float8 AS finished_at,
    detail, fault, source, consumed_to_written_ms, written_to_confirmed_ms
"""

_UPSERT_BARRIER = """
INSERT INTO barriers (id, name, endpoint, slot, points, active)
VALUES (%(id)s, %(name)s, %(endpoint)s, %(slot)s, %(points)s, true)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name,
    endpoint = EXCLUDED.endpoint,
    slot = EXCLUDED.slot,
    points = EXCLUDED.points,
    active = true
"""

_DEACTIVATE_OTHER_BARRIERS = "UPDATE barriers SET active = false WHERE active AND id <> ALL(%s)"

# Ids come from the register map; the sequence must still hand out fresh ones past them.
_ADVANCE_BARRIER_ID_SEQUENCE = """
SELECT setval(pg_get_serial_sequence('barriers', 'id'), COALESCE(max(id), 0) + 1, false)
FROM barriers
"""

_INSERT_COMMAND = f"""
WITH inserted AS (
    INSERT INTO commands (
        command_id, barrier_id, kind, actor, state,
        requested_at, accepted_at, finished_at, detail, source
    ) VALUES (
        %(command_id)s, %(barrier_id)s, %(kind)s, %(actor)s, %(state)s,
        to_timestamp(%(requested_at)s), to_timestamp(%(accepted_at)s),
        to_timestamp(%(finished_at)s), %(detail)s, %(source)s
    )
    ON CONFLICT (command_id) DO NOTHING
    RETURNING {_COMMAND_COLUMNS}
), event AS (
    INSERT INTO barrier_events
        (barrier_id, event_type, command_id, actor, status, detail, created_at)
    SELECT %(barrier_id)s, %(event_type)s, %(command_id)s, %(actor)s, NULL, %(event_detail)s,
           to_timestamp(%(accepted_at)s)
    WHERE EXISTS (SELECT 1 FROM inserted)
)
SELECT * FROM inserted
"""
"""One statement: the command and its first event, or nothing if the command_id is known."""

_SELECT_COMMAND = f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE command_id = %s"

# The WHERE clause refuses to move a command that has already ended.
_ADVANCE_COMMAND = """
WITH advanced AS (
    UPDATE commands SET
        state = %(state)s,
        written_at = CASE WHEN %(written)s THEN to_timestamp(%(at)s) ELSE written_at END,
        consumed_to_written_ms = CASE WHEN %(written)s
            THEN 1000 * extract(epoch FROM to_timestamp(%(at)s) - accepted_at)::float8
            ELSE consumed_to_written_ms END,
        finished_at = CASE WHEN %(terminal)s THEN to_timestamp(%(at)s) END,
        written_to_confirmed_ms = CASE WHEN %(terminal)s
            THEN 1000 * extract(epoch FROM to_timestamp(%(at)s) - written_at)::float8 END,
        detail = COALESCE(%(detail)s, detail),
        fault = COALESCE(%(fault)s, fault)
    WHERE command_id = %(command_id)s AND state <> ALL(%(terminal_states)s)
    RETURNING barrier_id, actor
), event AS (
    INSERT INTO barrier_events
        (barrier_id, event_type, command_id, actor, status, detail, created_at)
    SELECT barrier_id, %(event_type)s, %(command_id)s, actor, %(status)s, %(event_detail)s,
           to_timestamp(%(at)s)
    FROM advanced
), confirmed AS (
    UPDATE barriers SET
        status = %(status)s,
        last_updated = to_timestamp(%(at)s) AT TIME ZONE 'UTC',
        fault = %(fault)s
    WHERE %(confirm)s AND id = (SELECT barrier_id FROM advanced)
)
SELECT barrier_id FROM advanced
"""
"""One statement, one round trip: the command's new state, its event, and for a confirmed
outcome the barrier's durable status (its position left as it was)."""

_INSERT_EVENT = """
INSERT INTO barrier_events (barrier_id, event_type, command_id, actor, status, detail, created_at)
VALUES (
    %(barrier_id)s, %(event_type)s, %(command_id)s, %(actor)s, %(status)s, %(detail)s,
    to_timestamp(%(at)s)
)
"""

_CONFIRM_BARRIER_STATUS = """
UPDATE barriers SET
    status = %(status)s,
    last_updated = to_timestamp(%(at)s) AT TIME ZONE 'UTC',
    fault = %(fault)s,
    position = COALESCE(%(position)s, position)
WHERE id = %(barrier_id)s
"""

_SELECT_BARRIERS = """
SELECT id, name, status, fault, position,
       extract(epoch FROM last_updated)::float8 AS last_updated, active
FROM barriers
ORDER BY id
"""

_TERMINAL_STATES = [state.value for state in CommandState if state.terminal]

EVENTS_PREPARE = False
"""Never prepare the history query: a prepared statement's generic plan is made for an average
value, and event types are far from even (a rare type's page would read through the others).
Planned with the values at hand, each page is one index range; planning costs a fraction of a
millisecond."""

_SELECT_EVENTS = sql.SQL("""
SELECT id, barrier_id, event_type, command_id::text AS command_id, actor, status, detail,
       created_at
FROM barrier_events
{where}
ORDER BY created_at DESC, id DESC
LIMIT {limit}
""")

# A key is free if it is new, older than the retention, or claimed long ago by a request that
# never answered (it died between claim and answer): claiming it then takes it over.
_CLAIM_KEY = """
INSERT INTO idempotency_keys AS held (actor, key, request)
VALUES (%(actor)s, %(key)s, %(request)s)
ON CONFLICT (actor, key) DO UPDATE
    SET request = EXCLUDED.request, status_code = NULL, response = NULL, created_at = now()
    WHERE held.created_at < now() - make_interval(secs => %(retention)s)
       OR (held.response IS NULL AND held.created_at < now() - make_interval(secs => %(lease)s))
RETURNING created_at
"""

_SELECT_KEY = """
SELECT request, status_code, response FROM idempotency_keys
WHERE actor = %(actor)s AND key = %(key)s
"""

# Only the claim's holder answers or releases it: one taken over is the new holder's.
_COMPLETE_KEY = """
UPDATE idempotency_keys SET status_code = %(status_code)s, response = %(response)s
WHERE actor = %(actor)s AND key = %(key)s AND created_at = %(claimed_at)s
"""

_RELEASE_KEY = """
DELETE FROM idempotency_keys
WHERE actor = %(actor)s AND key = %(key)s AND created_at = %(claimed_at)s
"""

_FORGET_KEYS = "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %s)"


def _jsonb(value: object) -> Jsonb:
    """Wrap `value` for a JSONB parameter, encoded by msgspec (Structs and enums included)."""
    return Jsonb(value, dumps=msgspec.json.encode)


def events_query(where: EventFilter, limit: int) -> tuple[sql.Composed, dict[str, object]]:
    """The history query for `where` and its parameters: one index range, newest first.

    Only the filters given appear, so that the planner sees which index fits them; the keyset
    cursor is a row comparison, so a deep page starts right at the cursor in that index; the
    limit is a literal, so the planner knows how few rows are wanted. Run it unprepared
    (`EVENTS_PREPARE`).
    """
    conditions: list[sql.Composable] = []
    params: dict[str, object] = {}

    def add(condition: str, **values: object) -> None:
        conditions.append(sql.SQL(condition))
        params.update(values)

    if where.barrier_id is not None:
        add("barrier_id = %(barrier_id)s::int", barrier_id=where.barrier_id)
    if where.event_type is not None:
        add("event_type = %(event_type)s::text", event_type=where.event_type)
    if where.command_id is not None:
        add("command_id = %(command_id)s::uuid", command_id=where.command_id)
    if where.since is not None:
        add("created_at >= %(since)s::timestamptz", since=where.since)
    if where.until is not None:
        add("created_at < %(until)s::timestamptz", until=where.until)
    if where.after is not None:
        after_at, after_id = where.after
        add(
            "(created_at, id) < (%(after_at)s::timestamptz, %(after_id)s::bigint)",
            after_at=after_at,
            after_id=after_id,
        )
    filters = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    return _SELECT_EVENTS.format(where=filters, limit=sql.Literal(limit)), params


class BarrierStore:
    """The PostgreSQL record of barriers, commands and events, over a connection pool."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 20, acquire_timeout: float = 5.0
    ) -> Self:
        """Connect to `url` (a libpq URL or conninfo string); raise StoreUnavailable if it fails.

        `acquire_timeout` bounds opening and every later wait for a connection.
        """
        pool = AsyncConnectionPool(
            url,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=min_size,
            max_size=max_size,
            timeout=acquire_timeout,
            check=_check_if_idle,
            name="barrier-store",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=acquire_timeout)
        except psycopg.OperationalError as error:
            await pool.close()
            raise StoreUnavailable(f"PostgreSQL is unavailable: {error}") from error
        return cls(pool)

    async def close(self) -> None:
        """Close every connection."""
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def migrate(self) -> list[int]:
        """Apply the missing schema migrations; return the versions applied now."""
        async with self._connection() as conn:
            return await migrate(conn)

    async def sync_barriers(self, barriers: Iterable[BarrierConfig]) -> None:
        """Make ``barriers`` match the register map: upsert these, mark the others inactive."""
        rows = [
            {
                "id": barrier.id,
                "name": barrier.name,
                "endpoint": barrier.endpoint,
                "slot": barrier.slot,
                "points": _jsonb(barrier.points),
            }
            for barrier in barriers
        ]
        async with self._transaction() as conn:
            async with conn.cursor() as cursor:
                await cursor.executemany(_UPSERT_BARRIER, rows)
            await conn.execute(_DEACTIVATE_OTHER_BARRIERS, ([row["id"] for row in rows],))
            await conn.execute(_ADVANCE_BARRIER_ID_SEQUENCE)

    async def start_command(self, cmd: NewCommand) -> tuple[CommandRecord, bool]:
        """Record `cmd` and its event once; return the record and whether this call created it.

        A redelivered ``command_id`` writes nothing and returns the record as it stands.
        """
        detail: dict[str, object] = {"kind": cmd.kind, "source": cmd.source}
        if cmd.detail is not None:
            detail["detail"] = cmd.detail
        async with self._connection() as conn:
            cursor = await conn.execute(
                _INSERT_COMMAND,
                {
                    "command_id": cmd.command_id,
                    "barrier_id": cmd.barrier_id,
                    "kind": cmd.kind,
                    "actor": cmd.actor,
                    "state": cmd.state,
                    "requested_at": cmd.requested_at,
                    "accepted_at": cmd.accepted_at,
                    "finished_at": cmd.accepted_at if cmd.state.terminal else None,
                    "detail": cmd.detail,
                    "source": cmd.source,
                    "event_type": COMMAND_EVENTS[cmd.state],
                    "event_detail": _jsonb(detail),
                },
            )
            inserted = await cursor.fetchone()
            if inserted is not None:
                return msgspec.convert(inserted, CommandRecord), True
            cursor = await conn.execute(_SELECT_COMMAND, (cmd.command_id,))
            existing = await cursor.fetchone()
        # The row that conflicted is committed: ON CONFLICT waited for its transaction.
        assert existing is not None, cmd.command_id
        return msgspec.convert(existing, CommandRecord), False

    async def advance_command(
        self,
        command_id: str,
        state: CommandState,
        *,
        at: float,
        detail: str | None = None,
        fault: str | None = None,
        barrier_status: BarrierStatus | None = None,
        event_detail: Mapping[str, object] | None = None,
    ) -> bool:
        """Move a command to `state` with its event, and the barrier's status if confirmed.

        All in one statement. Entering ``written`` stamps ``written_at`` and the
        consumed→written latency; a terminal state stamps ``finished_at`` and the
        written→finished latency. Return False, writing nothing, if the command is unknown or
        has already ended. `detail` and `fault` replace the command's only when given.
        """
        event_detail = dict(event_detail or {})
        if fault is not None:
            event_detail["fault"] = fault
        async with self._connection() as conn:
            cursor = await conn.execute(
                _ADVANCE_COMMAND,
                {
                    "command_id": command_id,
                    "state": state,
                    "at": at,
                    "written": state is CommandState.WRITTEN,
                    "terminal": state.terminal,
                    "detail": detail,
                    "fault": fault,
                    "terminal_states": _TERMINAL_STATES,
                    "event_type": COMMAND_EVENTS[state],
                    "status": barrier_status,
                    "event_detail": _jsonb(event_detail),
                    "confirm": barrier_status in CONFIRMED_STATUSES,
                },
            )
            if await cursor.fetchone() is None:
                return False
        return True

    async def record_event(
        self,
        barrier_id: int,
        event_type: EventType,
        *,
        at: float,
        status: BarrierStatus | None = None,
        detail: Mapping[str, object] | None = None,
        command_id: str | None = None,
        actor: str | None = None,
        fault: str | None = None,
        position: int | None = None,
    ) -> None:
        """Record an event and, for a confirmed `status`, the barrier's status: one transaction."""
        await self.record_events(
            [
                NewEvent(
                    barrier_id=barrier_id,
                    event_type=event_type,
                    at=at,
                    status=status,
                    detail=dict(detail or {}),
                    command_id=command_id,
                    actor=actor,
                    fault=fault,
                    position=position,
                )
            ]
        )

    async def record_events(self, events: Sequence[NewEvent]) -> None:
        """Record `events` in order, in one transaction, their statements pipelined."""
        if not events:
            return
        async with self._transaction() as conn, conn.pipeline():
            for event in events:
                await _record(conn, event)

    async def get_command(self, command_id: str) -> CommandRecord | None:
        """Return the command recorded as `command_id`, or None."""
        async with self._connection() as conn:
            cursor = await conn.execute(_SELECT_COMMAND, (command_id,))
            row = await cursor.fetchone()
        return None if row is None else msgspec.convert(row, CommandRecord)

    async def barrier_rows(self) -> list[BarrierRow]:
        """Return every barrier, active or not, by id."""
        async with self._connection() as conn:
            cursor = await conn.execute(_SELECT_BARRIERS)
            rows = await cursor.fetchall()
        return msgspec.convert(rows, list[BarrierRow])

    async def events(self, where: EventFilter, limit: int) -> list[EventRow]:
        """The events matching `where`, newest first, at most `limit` of them."""
        query, params = events_query(where, limit)
        async with self._connection() as conn:
            cursor = await conn.execute(query, params, prepare=EVENTS_PREPARE)
            rows = await cursor.fetchall()
        return [EventRow(**row) for row in rows]

    async def claim_idempotency_key(
        self, actor: str, key: str, request: str, *, lease: float, retention: float
    ) -> KeyClaim | IdempotentAnswer:
        """Claim `key` for `actor`'s request: the claim if it is ours now, else the earlier answer.

        The key is ours if it is new, older than `retention` seconds, or held by a request that
        has not answered within `lease` seconds (it died): that claim is taken over.
        """
        params = {
            "actor": actor,
            "key": key,
            "request": request,
            "lease": lease,
            "retention": retention,
        }
        async with self._transaction() as conn:
            cursor = await conn.execute(_CLAIM_KEY, params)
            claimed = await cursor.fetchone()
            if claimed is not None:
                return KeyClaim(actor, key, claimed["created_at"])
            cursor = await conn.execute(_SELECT_KEY, params)
            row = await cursor.fetchone()
        if row is None:  # released between the two statements: the caller may try again
            return IdempotentAnswer(request=request, status_code=None, response=None)
        return msgspec.convert(row, IdempotentAnswer)

    async def complete_idempotency_key(
        self, claim: KeyClaim, status_code: int, response: Mapping[str, object]
    ) -> None:
        """Keep the answer to the request holding `claim`, for its retries."""
        async with self._connection() as conn:
            await conn.execute(
                _COMPLETE_KEY,
                {
                    **msgspec.structs.asdict(claim),
                    "status_code": status_code,
                    "response": _jsonb(response),
                },
            )

    async def release_idempotency_key(self, claim: KeyClaim) -> None:
        """Forget a claim whose request failed, so that a retry runs it afresh."""
        async with self._connection() as conn:
            await conn.execute(_RELEASE_KEY, msgspec.structs.asdict(claim))

    async def forget_idempotency_keys(self, older_than: float) -> int:
        """Delete the Idempotency-Keys claimed more than `older_than` seconds ago; count them."""
        async with self._connection() as conn:
            cursor = await conn.execute(_FORGET_KEYS, (older_than,))
            return cursor.rowcount

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        """Lend a pooled autocommit connection; turn a lost database into StoreUnavailable."""
        try:
            async with self._pool.connection() as conn:
                try:
                    yield conn
                finally:
                    _last_used[conn] = time.monotonic()
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {error}") from error

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        """Lend a pooled connection inside a transaction that commits when the block ends."""
        async with self._connection() as conn, conn.transaction():
            yield conn


CHECK_AFTER_IDLE = 1.0
"""Seconds a pooled connection may sit unused before it is checked on its next loan."""

_last_used: weakref.WeakKeyDictionary[AsyncConnection[DictRow], float] = weakref.WeakKeyDictionary()


async def _check_if_idle(conn: AsyncConnection[DictRow]) -> None:
    """Check a connection that sat idle (the server may have gone meanwhile) before lending it.

    One that was just used is lent as is: a round trip per loan would cost as much as the work.
    """
    if time.monotonic() - _last_used.get(conn, -math.inf) > CHECK_AFTER_IDLE:
        await AsyncConnectionPool.check_connection(conn)


async def _record(conn: AsyncConnection[DictRow], event: NewEvent) -> None:
    """Insert a history row; for a confirmed status also update the barrier's durable status.

    The fault, when given, goes into the event's detail as well, so the history is complete.
    A confirmed status sets ``fault`` as given (None clears it) and keeps an unknown position.
    """
    barrier_id, status, at, fault = event.barrier_id, event.status, event.at, event.fault
    event_detail = dict(event.detail)
    if fault is not None:
        event_detail["fault"] = fault
    await conn.execute(
        _INSERT_EVENT,
        {
            "barrier_id": barrier_id,
            "event_type": event.event_type,
            "command_id": event.command_id,
            "actor": event.actor,
            "status": status,
            "detail": _jsonb(event_detail),
            "at": at,
        },
    )
    if status in CONFIRMED_STATUSES:
        await conn.execute(
            _CONFIRM_BARRIER_STATUS,
            {
                "barrier_id": barrier_id,
                "status": status,
                "at": at,
                "fault": fault,
                "position": event.position,
            },
        )
