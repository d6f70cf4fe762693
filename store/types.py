"""Types shared by the bridge, the store and the API: statuses, events, commands, cached records."""

from __future__ import annotations

from enum import StrEnum

import msgspec

from plc.quality import Quality


class BarrierStatus(StrEnum):
    """The status a client sees."""

    CLOSED = "closed"
    OPENING = "opening"
    OPENED = "opened"
    CLOSING = "closing"
    ERROR = "error"


CONFIRMED_STATUSES = frozenset({BarrierStatus.OPENED, BarrierStatus.CLOSED, BarrierStatus.ERROR})
"""The statuses PostgreSQL's ``barriers.status`` may hold: only confirmed ones."""


class CommandKind(StrEnum):
    """What a command asks of a barrier."""

    OPEN = "open"
    CLOSE = "close"


class CommandState(StrEnum):
    """Where a command is in its lifecycle; the last six are terminal."""

    ACCEPTED = "accepted"
    WRITTEN = "written"
    MOVING = "moving"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"

    @property
    def terminal(self) -> bool:
        """Whether the command has ended."""
        return self not in (CommandState.ACCEPTED, CommandState.WRITTEN, CommandState.MOVING)


class EventType(StrEnum):
    """Kinds of rows in the ``barrier_events`` history."""

    COMMAND_ACCEPTED = "command_accepted"
    COMMAND_WRITTEN = "command_written"
    COMMAND_MOVING = "command_moving"
    COMMAND_CONFIRMED = "command_confirmed"
    COMMAND_FAILED = "command_failed"
    COMMAND_TIMED_OUT = "command_timed_out"
    COMMAND_REJECTED = "command_rejected"
    COMMAND_EXPIRED = "command_expired"
    COMMAND_SUPERSEDED = "command_superseded"
    STATE_CHANGED = "state_changed"
    """The PLC reports a new state that no running command explains (push button, manual)."""
    FAULT_RAISED = "fault_raised"
    FAULT_CLEARED = "fault_cleared"
    LINK_LOST = "link_lost"
    LINK_RESTORED = "link_restored"
    READING_STALE = "reading_stale"


COMMAND_EVENTS: dict[CommandState, EventType] = {
    state: EventType(f"command_{state.value}") for state in CommandState
}
"""The history event recorded when a command enters each state."""


class PendingCommand(msgspec.Struct, frozen=True):
    """The command a barrier is executing, as shown with its status."""

    command_id: str
    kind: CommandKind
    actor: str
    state: CommandState


class StatusRecord(msgspec.Struct, frozen=True):
    """Everything a client is shown about one barrier: the cached record, one per barrier."""

    barrier_id: int
    name: str
    status: BarrierStatus | None
    """None until the barrier has been read once."""
    quality: Quality
    position: int | None = None
    fault: str | None = None
    """The PLC's fault code name (e.g. ``obstruction``), or None."""
    occupied: bool | None = None
    read_at: float | None = None
    """Unix time of the last good read: a client shows the age, never an old status as fresh."""
    updated_at: float = 0.0
    """Unix time this record was written."""
    pending: PendingCommand | None = None


SHOWN_WHILE_PENDING = {
    CommandKind.OPEN: (
        BarrierStatus.OPENING,
        frozenset({BarrierStatus.CLOSED, BarrierStatus.CLOSING}),
    ),
    CommandKind.CLOSE: (
        BarrierStatus.CLOSING,
        frozenset({BarrierStatus.OPENED, BarrierStatus.OPENING}),
    ),
}
"""Per command kind: the status shown while it is pending, and the statuses it replaces."""


def present(record: StatusRecord) -> StatusRecord:
    """The record as clients see it: an accepted open shows ``opening`` at once, and so on.

    From the moment a command is accepted until the PLC takes it, the PLC still reports the old
    state; clients are shown where the barrier is going, with the pending command beside it.
    The same holds while the record lags a command that already saw the barrier move. A fault
    (``error``) is never hidden.
    """
    pending = record.pending
    if pending is None or pending.state.terminal:
        return record
    shown, replaces = SHOWN_WHILE_PENDING[pending.kind]
    if record.status not in replaces:
        return record
    return msgspec.structs.replace(record, status=shown)
