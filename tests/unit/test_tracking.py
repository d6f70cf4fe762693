"""Status tracking: every change the PLC reports becomes a record and a history event."""

import pytest

from bridge.tracking import CACHE_REFRESH, ErrorLatch, track
from plc.codec import BarrierReading
from plc.poller import BarrierSample
from plc.quality import Quality
from plc.registers import BarrierState, FaultCode
from store.types import (
    BarrierStatus,
    CommandKind,
    CommandState,
    EventType,
    PendingCommand,
    StatusRecord,
    present,
)

pytestmark = pytest.mark.unit

S = BarrierState


def sample(
    state: BarrierState | None,
    *,
    quality: Quality = Quality.GOOD,
    fault: FaultCode = FaultCode.NONE,
    position: int = 0,
    read_at: float = 100.0,
    error: str | None = None,
) -> BarrierSample:
    reading = None if state is None else BarrierReading(state, fault, 1, position, False)
    return BarrierSample(5, reading, quality, read_at, error)


def test_the_first_sample_records_the_state() -> None:
    tracked = track(None, "Gate", sample(S.CLOSED), None, 100.0)
    assert tracked.record.status is BarrierStatus.CLOSED
    assert (tracked.record.name, tracked.record.read_at, tracked.record.quality) == (
        "Gate",
        100.0,
        Quality.GOOD,
    )
    assert [c.event_type for c in tracked.changes] == [EventType.STATE_CHANGED]
    assert tracked.publish
    assert tracked.refresh


def test_an_uncommanded_open_is_noticed_step_by_step() -> None:
    record = track(None, "Gate", sample(S.CLOSED), None, 100.0).record
    seen = []
    for state, position, now in [
        (S.OPENING, 30, 101.0),
        (S.OPENING, 60, 101.1),
        (S.OPENED, 100, 101.2),
    ]:
        tracked = track(record, "Gate", sample(state, position=position, read_at=now), None, now)
        record = tracked.record
        seen.append(([c.event_type for c in tracked.changes], tracked.publish))
    assert seen == [
        ([EventType.STATE_CHANGED], True),
        ([], True),
        ([EventType.STATE_CHANGED], True),
    ]
    assert record.status is BarrierStatus.OPENED
    assert record.position == 100


def test_faults_raise_and_clear() -> None:
    record = track(None, "Gate", sample(S.OPENED, position=100), None, 100.0).record
    raised = track(
        record, "Gate", sample(S.FAULT, fault=FaultCode.EMERGENCY_STOP, position=100), None, 101.0
    )
    assert [(c.event_type, c.status) for c in raised.changes] == [
        (EventType.STATE_CHANGED, BarrierStatus.ERROR),
        (EventType.FAULT_RAISED, BarrierStatus.ERROR),
    ]
    assert raised.record.fault == "emergency_stop"
    cleared = track(raised.record, "Gate", sample(S.OPENED, position=100), None, 102.0)
    assert [c.event_type for c in cleared.changes] == [
        EventType.STATE_CHANGED,
        EventType.FAULT_CLEARED,
    ]


@pytest.mark.parametrize(
    ("before", "after", "event"),
    [
        (Quality.GOOD, Quality.COMM_LOST, EventType.LINK_LOST),
        (Quality.GOOD, Quality.STALE, EventType.READING_STALE),
        (Quality.COMM_LOST, Quality.GOOD, EventType.LINK_RESTORED),
        (Quality.STALE, Quality.GOOD, EventType.LINK_RESTORED),
    ],
)
def test_link_quality_changes_are_events(before: Quality, after: Quality, event: EventType) -> None:
    record = track(None, "Gate", sample(S.CLOSED, quality=before), None, 100.0).record
    tracked = track(record, "Gate", sample(S.CLOSED, quality=after, error="timeout"), None, 101.0)
    assert [c.event_type for c in tracked.changes] == [event]
    assert tracked.record.quality is after
    assert tracked.record.status is BarrierStatus.CLOSED, "the last known status is kept, flagged"
    assert tracked.publish


def test_an_unchanged_barrier_is_rewritten_only_to_keep_its_read_time_true() -> None:
    first = track(None, "Gate", sample(S.CLOSED, read_at=100.0), None, 100.0).record
    soon = track(first, "Gate", sample(S.CLOSED, read_at=100.5), None, 100.5)
    assert (soon.publish, soon.refresh, soon.record) == (False, False, first)
    later = track(
        first, "Gate", sample(S.CLOSED, read_at=100.0 + CACHE_REFRESH), None, 100.0 + CACHE_REFRESH
    )
    assert (later.publish, later.refresh) == (False, True)
    assert later.record.read_at == 100.0 + CACHE_REFRESH


def test_a_pending_command_is_part_of_the_record() -> None:
    first = track(None, "Gate", sample(S.CLOSED), None, 100.0).record
    pending = PendingCommand("c-1", CommandKind.OPEN, "alice", CommandState.WRITTEN)
    tracked = track(first, "Gate", sample(S.CLOSED, read_at=100.2), pending, 100.2)
    assert tracked.record.pending == pending
    assert tracked.publish
    assert not tracked.changes


def test_never_read_barrier_has_no_status() -> None:
    tracked = track(None, "Gate", sample(None, quality=Quality.COMM_LOST, read_at=0.0), None, 100.0)
    assert tracked.record.status is None
    assert [c.event_type for c in tracked.changes] == [EventType.LINK_LOST]


def test_a_failed_command_latches_error_until_the_plc_reports_another_state() -> None:
    latch = ErrorLatch(S.OPENING, "travel_timeout")
    record = track(None, "Gate", sample(S.OPENING, position=40), None, 100.0).record
    stuck = track(record, "Gate", sample(S.OPENING, position=40, read_at=101.0), None, 101.0, latch)
    assert (stuck.record.status, stuck.record.fault, stuck.latch) == (
        BarrierStatus.ERROR,
        "travel_timeout",
        latch,
    )
    assert [c.event_type for c in stuck.changes] == [
        EventType.STATE_CHANGED,
        EventType.FAULT_RAISED,
    ]
    moved = track(
        stuck.record,
        "Gate",
        sample(S.CLOSING, position=39, read_at=102.0),
        None,
        102.0,
        stuck.latch,
    )
    assert (moved.record.status, moved.record.fault, moved.latch) == (
        BarrierStatus.CLOSING,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("status", "kind", "state", "shown"),
    [
        (BarrierStatus.CLOSED, CommandKind.OPEN, CommandState.ACCEPTED, BarrierStatus.OPENING),
        (BarrierStatus.CLOSED, CommandKind.OPEN, CommandState.WRITTEN, BarrierStatus.OPENING),
        (BarrierStatus.CLOSING, CommandKind.OPEN, CommandState.WRITTEN, BarrierStatus.OPENING),
        (BarrierStatus.OPENED, CommandKind.CLOSE, CommandState.ACCEPTED, BarrierStatus.CLOSING),
        (BarrierStatus.OPENED, CommandKind.OPEN, CommandState.ACCEPTED, BarrierStatus.OPENED),
        (BarrierStatus.ERROR, CommandKind.OPEN, CommandState.WRITTEN, BarrierStatus.ERROR),
        (BarrierStatus.CLOSED, CommandKind.OPEN, CommandState.MOVING, BarrierStatus.OPENING),
        (BarrierStatus.CLOSED, CommandKind.OPEN, CommandState.CONFIRMED, BarrierStatus.CLOSED),
        (BarrierStatus.CLOSED, CommandKind.OPEN, None, BarrierStatus.CLOSED),
    ],
)
def test_clients_see_where_a_commanded_barrier_is_going(
    status: BarrierStatus, kind: CommandKind, state: CommandState | None, shown: BarrierStatus
) -> None:
    pending = None if state is None else PendingCommand("c-1", kind, "alice", state)
    record = StatusRecord(
        barrier_id=5, name="Gate", status=status, quality=Quality.GOOD, pending=pending
    )
    assert present(record).status is shown
