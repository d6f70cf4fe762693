"""Response bodies, and the pure conversions from stored records to what a client is shown."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from enum import StrEnum

import msgspec

from plc.quality import Quality
from store import BarrierRow, CommandRecord, EventRow
from store.types import BarrierStatus, CommandKind, CommandState, PendingCommand, StatusRecord


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error: a stable code, and a sentence saying what went wrong and what to do."""

    error: str
    message: str


class Source(StrEnum):
    """Where a status came from."""

    CACHE = "cache"
    """The live record the bridge keeps in Redis."""
    DATABASE = "database"
    """The last confirmed status in PostgreSQL (the cache had none, or is down)."""


class CommandAccepted(msgspec.Struct, frozen=True):
    """The answer to an open or close: the command is on its way (202)."""

    barrier_id: int
    command_id: str
    status: BarrierStatus
    message: str


class BarrierView(msgspec.Struct, frozen=True):
    """A barrier's status as a client must see it: never an old status shown as fresh."""

    barrier_id: int
    name: str
    status: BarrierStatus | None
    quality: Quality
    read_at: datetime | None
    """When the PLC was last read well."""
    age_seconds: float | None
    """How old that read is at the time of this answer."""
    position: int | None
    fault: str | None
    occupied: bool | None
    pending: PendingCommand | None
    source: Source


class BarrierList(msgspec.Struct, frozen=True):
    """Every barrier with its status."""

    barriers: list[BarrierView]


class EventView(msgspec.Struct, frozen=True):
    """One entry of the history (the audit trail)."""

    id: int
    barrier_id: int
    event_type: str
    command_id: str | None
    actor: str | None
    status: str | None
    detail: dict[str, object]
    created_at: datetime


class EventPage(msgspec.Struct, frozen=True):
    """One page of events, newest first; pass `next_cursor` as ``cursor`` for the next page."""

    events: list[EventView]
    next_cursor: str | None


class CommandView(msgspec.Struct, frozen=True):
    """One command's lifecycle and outcome, with its events."""

    command_id: str
    barrier_id: int
    kind: CommandKind
    actor: str
    state: CommandState
    requested_at: datetime
    accepted_at: datetime
    written_at: datetime | None
    finished_at: datetime | None
    detail: str | None
    fault: str | None
    consumed_to_written_ms: float | None
    written_to_confirmed_ms: float | None
    events: list[EventView]


class DependencyState(StrEnum):
    """Whether a dependency answers."""

    UP = "up"
    DOWN = "down"


class Health(msgspec.Struct, frozen=True):
    """Liveness: the process answers."""

    status: str = "ok"


class Readiness(msgspec.Struct, frozen=True):
    """Readiness: each dependency's state."""

    ready: bool
    dependencies: dict[str, DependencyState]


def _time(unix: float | None) -> datetime | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC)


def view_of_record(record: StatusRecord, now: float, stale_after: float) -> BarrierView:
    """Show a cached record, judged at `now`: a reading older than `stale_after` is stale.

    The bridge keeps the record's read time current; if the bridge stops, the read time stops
    too, and the status turns stale here even though the cache still says ``good``.
    """
    age = None if record.read_at is None else max(now - record.read_at, 0.0)
    quality = record.quality
    if quality is Quality.GOOD and (age is None or age > stale_after):
        quality = Quality.STALE
    return BarrierView(
        barrier_id=record.barrier_id,
        name=record.name,
        status=record.status,
        quality=quality,
        read_at=_time(record.read_at),
        age_seconds=None if age is None else round(age, 3),
        position=record.position,
        fault=record.fault,
        occupied=record.occupied,
        pending=record.pending,
        source=Source.CACHE,
    )


def view_of_row(row: BarrierRow, now: float) -> BarrierView:
    """Show a barrier from PostgreSQL: its last confirmed status, never presented as live."""
    age = None if row.last_updated is None else max(now - row.last_updated, 0.0)
    return BarrierView(
        barrier_id=row.id,
        name=row.name,
        status=row.status,
        quality=Quality.STALE,
        read_at=_time(row.last_updated),
        age_seconds=None if age is None else round(age, 3),
        position=row.position,
        fault=row.fault,
        occupied=None,
        pending=None,
        source=Source.DATABASE,
    )


def view_of_event(row: EventRow) -> EventView:
    """Show one history row."""
    return EventView(
        id=row.id,
        barrier_id=row.barrier_id,
        event_type=row.event_type,
        command_id=row.command_id,
        actor=row.actor,
        status=row.status,
        detail=row.detail,
        created_at=row.created_at,
    )


def view_of_command(record: CommandRecord, events: list[EventRow]) -> CommandView:
    """Show one command with its events."""
    return CommandView(
        command_id=record.command_id,
        barrier_id=record.barrier_id,
        kind=record.kind,
        actor=record.actor,
        state=record.state,
        requested_at=datetime.fromtimestamp(record.requested_at, UTC),
        accepted_at=datetime.fromtimestamp(record.accepted_at, UTC),
        written_at=_time(record.written_at),
        finished_at=_time(record.finished_at),
        detail=record.detail,
        fault=record.fault,
        consumed_to_written_ms=record.consumed_to_written_ms,
        written_to_confirmed_ms=record.written_to_confirmed_ms,
        events=[view_of_event(e) for e in events],
    )


class InvalidCursor(ValueError):
    """A pagination cursor this API did not hand out."""


def encode_cursor(row: EventRow) -> str:
    """The cursor that continues after `row`."""
    raw = msgspec.json.encode([row.created_at.isoformat(), row.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (created_at, id) a cursor continues after; raise InvalidCursor if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, event_id = msgspec.json.decode(raw, type=tuple[datetime, int])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidCursor(cursor) from None
    if created_at.tzinfo is None:
        raise InvalidCursor(cursor)
    return created_at, event_id
