"""The command lifecycle as a pure state machine: ``(execution, event) -> (execution, actions)``.

accepted -> written -> moving -> confirmed, or one of the other terminal states: failed (a PLC
fault, with its code, or the link gone past the deadline), timed_out (no confirmation within the
deadline), rejected (the PLC refused, e.g. a close while a vehicle is in the path), expired (older
than its TTL when consumed: never written), superseded (a newer command for the same barrier).

The clock is passed in with every event; nothing here sleeps or does I/O. Times are unix seconds.
"""

from __future__ import annotations

import msgspec

from bridge.messages import Command
from plc.codec import BarrierReading
from plc.poller import BarrierSample
from plc.registers import BarrierState, FaultCode
from store.types import BarrierStatus, CommandKind, CommandState


class CommandTimings(msgspec.Struct, frozen=True):
    """How long a command may wait and take."""

    ttl: float = 30.0
    """A command older than this when consumed is never executed: it ends `expired`."""
    deadline: float = 15.0
    """Seconds from acceptance to confirmation before the command ends `timed_out`."""
    write_retry: float = 0.5
    """Seconds between attempts to write the request coil while the link is down."""
    resume_grace: float = 3.0
    """Seconds a command resumed after a restart waits for a fresh reading even if its deadline
    passed while no bridge was watching: the barrier may well have got there meanwhile."""


class Execution(msgspec.Struct, frozen=True):
    """One command's progress."""

    command: Command
    state: CommandState
    accepted_at: float
    deadline_at: float
    written_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None
    """When to try the write again, while the write keeps failing."""
    detail: str | None = None
    fault: FaultCode | None = None


class WriteCoil(msgspec.Struct, frozen=True):
    """Write 1 to the barrier's request coil for `kind`."""

    kind: CommandKind


class PollFast(msgspec.Struct, frozen=True):
    """Poll the barrier at the fast rate for `seconds`."""

    seconds: float


Action = WriteCoil | PollFast

TARGET = {CommandKind.OPEN: BarrierState.OPENED, CommandKind.CLOSE: BarrierState.CLOSED}
TRAVEL = {CommandKind.OPEN: BarrierState.OPENING, CommandKind.CLOSE: BarrierState.CLOSING}
OPEN_SIDE = frozenset({BarrierState.OPENED, BarrierState.OPENING})
TARGET_STATUS = {CommandKind.OPEN: BarrierStatus.OPENED, CommandKind.CLOSE: BarrierStatus.CLOSED}


def begin(
    command: Command,
    now: float,
    timings: CommandTimings,
    *,
    resumed: CommandState | None = None,
    written_at: float | None = None,
    accepted_at: float | None = None,
) -> tuple[Execution, list[Action]]:
    """Start executing `command` consumed at `now`, or resume one recorded before a restart.

    A resumed command that was already written is not written again: it waits for the PLC. One
    that was not is judged like a new one: past its TTL it expires, otherwise it is written.
    """
    started = accepted_at if accepted_at is not None else now
    execution = Execution(
        command=command,
        state=CommandState.ACCEPTED,
        accepted_at=started,
        deadline_at=started + timings.deadline,
    )
    if resumed in (CommandState.WRITTEN, CommandState.MOVING):
        resumed_execution = msgspec.structs.replace(
            execution,
            state=resumed,
            written_at=written_at or started,
            deadline_at=max(execution.deadline_at, now + timings.resume_grace),
        )
        return resumed_execution, [PollFast(resumed_execution.deadline_at - now)]
    age = now - command.requested_at
    if age > timings.ttl:
        return _finish(
            execution,
            CommandState.EXPIRED,
            now,
            f"command is {age:.1f} s old, over its {timings.ttl:g} s TTL: not executed",
        ), []
    if -age > timings.ttl:
        # A time this far ahead of ours is a wrong clock or unit: the command's age cannot be
        # known, and a command of unknown age may be one that should have expired long ago.
        return _finish(
            execution,
            CommandState.REJECTED,
            now,
            f"command is dated {-age:.1f} s in the future, more than its {timings.ttl:g} s TTL: "
            "its age cannot be known, so it is not executed (check the producer's clock)",
        ), []
    return execution, [WriteCoil(command.kind)]


def write_succeeded(execution: Execution, now: float) -> tuple[Execution, list[Action]]:
    """The request coil was written."""
    if execution.state is not CommandState.ACCEPTED:
        return execution, []
    written = msgspec.structs.replace(
        execution, state=CommandState.WRITTEN, written_at=now, retry_at=None
    )
    return written, [PollFast(execution.deadline_at - now)]


def write_failed(
    execution: Execution, now: float, error: str, *, retryable: bool, timings: CommandTimings
) -> tuple[Execution, list[Action]]:
    """The write failed; retry within the deadline where it is safe (the link was down)."""
    if execution.state is not CommandState.ACCEPTED:
        return execution, []
    retry_at = now + timings.write_retry
    if retryable and retry_at < execution.deadline_at:
        return msgspec.structs.replace(execution, retry_at=retry_at, detail=error), []
    return _finish(execution, CommandState.FAILED, now, f"could not write the request: {error}"), []


def retry_due(execution: Execution, now: float) -> tuple[Execution, list[Action]]:
    """Try the write again if its retry time has come."""
    if execution.state is not CommandState.ACCEPTED or execution.retry_at is None:
        return execution, []
    if now < execution.retry_at:
        return execution, []
    return msgspec.structs.replace(execution, retry_at=None), [WriteCoil(execution.command.kind)]


def observed(execution: Execution, sample: BarrierSample, now: float) -> Execution:
    """Judge a poll of the barrier against the command."""
    reading = sample.reading
    if (
        execution.state not in (CommandState.WRITTEN, CommandState.MOVING)
        or reading is None
        or execution.written_at is None
        or sample.read_at is None
        or sample.read_at <= execution.written_at  # read before the write: says nothing of it
    ):
        return execution
    kind = execution.command.kind
    pending = reading.open_pending if kind is CommandKind.OPEN else reading.close_pending
    if pending and execution.state is CommandState.WRITTEN:
        return execution  # the PLC has not taken the request yet
    return _judge(execution, reading, now)


def _judge(execution: Execution, reading: BarrierReading, now: float) -> Execution:
    kind = execution.command.kind
    if reading.state is TARGET[kind]:
        return _finish(execution, CommandState.CONFIRMED, now, None)
    if reading.state is BarrierState.FAULT:
        name = reading.fault.name.lower()
        return _finish(
            execution, CommandState.FAILED, now, f"PLC fault: {name}", fault=reading.fault
        )
    blocked = reading.fault is FaultCode.OBSTRUCTION or reading.occupied
    if kind is CommandKind.CLOSE and blocked and reading.state in OPEN_SIDE:
        # A close is refused while the loop detector sees a vehicle; a closing barrier that
        # detects one returns open.
        return _finish(
            execution,
            CommandState.REJECTED,
            now,
            "close refused: a vehicle is in the barrier's path",
            fault=reading.fault if reading.fault is not FaultCode.NONE else None,
        )
    if reading.state is TRAVEL[kind]:
        if execution.state is CommandState.WRITTEN:
            return msgspec.structs.replace(execution, state=CommandState.MOVING)
        return execution
    if execution.state is CommandState.MOVING:
        went, target = reading.state.name.lower(), TARGET[kind].name.lower()
        return _finish(
            execution, CommandState.FAILED, now, f"barrier went {went} before reaching {target}"
        )
    return execution  # taken but not yet moving: the deadline decides


def check_deadline(execution: Execution, now: float) -> tuple[Execution, list[Action]]:
    """End a command that has not been confirmed by its deadline."""
    if execution.state.terminal or now < execution.deadline_at:
        return execution, []
    if execution.state is CommandState.ACCEPTED:
        reason = f"the request could not be written: {execution.detail or 'PLC unreachable'}"
    elif execution.state is CommandState.WRITTEN:
        reason = "the PLC did not act on the request"
    else:
        reason = "the barrier did not reach its end position"
    timeout = execution.deadline_at - execution.accepted_at
    return _finish(execution, CommandState.TIMED_OUT, now, f"{reason} within {timeout:g} s"), []


def fail_unforeseen(execution: Execution, now: float, detail: str) -> Execution:
    """End a running command on an error the bridge did not foresee (a bug, say)."""
    if execution.state.terminal:
        return execution
    return _finish(execution, CommandState.FAILED, now, detail)


def supersede(execution: Execution, by: Command, now: float) -> Execution:
    """End a running command because a newer one for the same barrier arrived."""
    if execution.state.terminal:
        return execution
    return _finish(
        execution, CommandState.SUPERSEDED, now, f"superseded by {by.kind.value} {by.command_id}"
    )


def _finish(
    execution: Execution,
    state: CommandState,
    now: float,
    detail: str | None,
    *,
    fault: FaultCode | None = None,
) -> Execution:
    return msgspec.structs.replace(
        execution, state=state, finished_at=now, retry_at=None, detail=detail, fault=fault
    )


def barrier_status_after(execution: Execution) -> BarrierStatus | None:
    """The confirmed barrier status to record with a terminal outcome, if it implies one.

    Confirmed: the end position. A PLC fault or a written command that never got there: error.
    A write that never reached the PLC, a refusal, an expiry: none, the barrier is as the PLC
    says.
    """
    if execution.state is CommandState.CONFIRMED:
        return TARGET_STATUS[execution.command.kind]
    if execution.state is CommandState.REJECTED:
        return None
    if execution.fault is not None:
        return BarrierStatus.ERROR
    if execution.state is CommandState.TIMED_OUT and execution.written_at is not None:
        return BarrierStatus.ERROR
    return None
