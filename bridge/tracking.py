"""Pure status tracking: from each poll of a barrier to the record clients see and the history.

Every change the PLC reports is tracked whether or not a command caused it: a state nobody
commanded (local push button, manual release), a fault raised or cleared, the link lost or
back, a reading gone stale.
"""

from __future__ import annotations

import msgspec

from plc.poller import BarrierSample
from plc.quality import Quality
from plc.registers import BarrierState, FaultCode
from store.types import (
    BarrierStatus,
    EventType,
    PendingCommand,
    StatusRecord,
)

STATUS_OF_STATE: dict[BarrierState, BarrierStatus] = {
    BarrierState.CLOSED: BarrierStatus.CLOSED,
    BarrierState.OPENING: BarrierStatus.OPENING,
    BarrierState.OPENED: BarrierStatus.OPENED,
    BarrierState.CLOSING: BarrierStatus.CLOSING,
    BarrierState.FAULT: BarrierStatus.ERROR,
}

CACHE_REFRESH = 1.0
"""Seconds after which an unchanged record is written again so that its read time stays true."""


class Change(msgspec.Struct, frozen=True):
    """One history event implied by a new sample."""

    event_type: EventType
    status: BarrierStatus | None
    detail: dict[str, object]


class Tracked(msgspec.Struct, frozen=True):
    """What the tracker decided for one sample."""

    record: StatusRecord
    changes: list[Change]
    publish: bool
    """The record changed in a way a client sees: publish it."""
    refresh: bool
    """The record should be written to the cache (published or not)."""
    latch: ErrorLatch | None
    """The latch still in force: cleared once the PLC reports another state."""


class ErrorLatch(msgspec.Struct, frozen=True):
    """Keeps a barrier in ``error`` after a failed command until its PLC reports a new state.

    A stuck barrier keeps reporting ``opening``; once its command timed out, showing
    ``opening`` would tell a monitor it is still on its way.
    """

    state: BarrierState
    """The PLC state reported when the command failed."""
    fault: str
    """What to show as the fault while latched."""


def _fault_name(fault: FaultCode) -> str | None:
    return None if fault is FaultCode.NONE else fault.name.lower()


def track(
    previous: StatusRecord | None,
    name: str,
    sample: BarrierSample,
    pending: PendingCommand | None,
    now: float,
    latch: ErrorLatch | None = None,
) -> Tracked:
    """Fold `sample` into the barrier's record and list the history events it implies.

    While `latch` holds (the PLC still reports the state it reported when a command failed),
    the barrier shows ``error`` with the latch's fault, whatever that state claims.
    """
    reading = sample.reading
    latched = latch is not None and reading is not None and reading.state is latch.state
    status = STATUS_OF_STATE[reading.state] if reading else None
    fault = _fault_name(reading.fault) if reading else None
    if latched and latch is not None:
        status, fault = BarrierStatus.ERROR, fault or latch.fault
    record = StatusRecord(
        barrier_id=sample.barrier_id,
        name=name,
        status=status,
        quality=sample.quality,
        position=reading.position if reading else None,
        fault=fault,
        occupied=reading.occupied if reading else None,
        read_at=sample.read_at,
        updated_at=now,
        pending=pending,
    )
    changes: list[Change] = []
    before = previous or StatusRecord(
        barrier_id=sample.barrier_id, name=name, status=None, quality=Quality.GOOD
    )
    if record.status is not None and record.status != before.status:
        changes.append(
            Change(
                EventType.STATE_CHANGED,
                record.status,
                {"from": before.status, "to": record.status, "position": record.position},
            )
        )
    if record.fault != before.fault and (record.fault or before.fault):
        if record.fault:
            changes.append(Change(EventType.FAULT_RAISED, record.status, {"fault": record.fault}))
        else:
            changes.append(Change(EventType.FAULT_CLEARED, record.status, {"fault": before.fault}))
    if record.quality != before.quality:
        changes.append(_quality_change(before.quality, record.quality, sample.error))
    visible = (
        record.status,
        record.quality,
        record.position,
        record.fault,
        record.occupied,
        record.pending,
    ) != (
        before.status,
        before.quality,
        before.position,
        before.fault,
        before.occupied,
        before.pending,
    )
    refresh = (
        visible
        or previous is None
        or (record.read_at is not None and now - previous.updated_at >= CACHE_REFRESH)
    )
    if not refresh and previous is not None:
        record = previous
    return Tracked(
        record=record,
        changes=changes,
        publish=visible,
        refresh=refresh,
        latch=latch if latched or reading is None else None,
    )


def _quality_change(before: Quality, after: Quality, error: str | None) -> Change:
    detail: dict[str, object] = {"from": before.value, "to": after.value}
    if error:
        detail["error"] = error
    if after is Quality.COMM_LOST:
        return Change(EventType.LINK_LOST, None, detail)
    if after is Quality.STALE:
        return Change(EventType.READING_STALE, None, detail)
    return Change(EventType.LINK_RESTORED, None, detail)


def with_pending(record: StatusRecord, pending: PendingCommand | None, now: float) -> StatusRecord:
    """Return `record` showing `pending` as the command in progress."""
    return msgspec.structs.replace(record, pending=pending, updated_at=now)
