"""The command lifecycle, driven by hand-made PLC samples and a fake clock."""

import pytest

from bridge.lifecycle import (
    CommandTimings,
    Execution,
    PollFast,
    WriteCoil,
    barrier_status_after,
    begin,
    check_deadline,
    observed,
    retry_due,
    supersede,
    write_failed,
    write_succeeded,
)
from bridge.messages import Command
from plc.codec import BarrierReading
from plc.poller import BarrierSample
from plc.quality import Quality
from plc.registers import BarrierState, FaultCode
from store.types import BarrierStatus, CommandKind, CommandState

pytestmark = pytest.mark.unit

T0 = 1_000_000.0
TIMINGS = CommandTimings(ttl=30.0, deadline=15.0, write_retry=0.5)
S = BarrierState


def command(kind: CommandKind = CommandKind.OPEN, requested_at: float = T0 - 0.1) -> Command:
    return Command("c-1", 3, kind, "alice", requested_at, "barrier_commands/0/0")


def sample(
    state: BarrierState,
    read_at: float,
    *,
    fault: FaultCode = FaultCode.NONE,
    occupied: bool = False,
    open_pending: bool = False,
    close_pending: bool = False,
    position: int = 50,
) -> BarrierSample:
    reading = BarrierReading(state, fault, 1, position, occupied, open_pending, close_pending)
    return BarrierSample(3, reading, Quality.GOOD, read_at)


def written(kind: CommandKind = CommandKind.OPEN) -> Execution:
    execution, actions = begin(command(kind), T0, TIMINGS)
    assert actions == [WriteCoil(kind)]
    execution, actions = write_succeeded(execution, T0 + 0.01)
    assert execution.state is CommandState.WRITTEN
    assert actions == [PollFast(execution.deadline_at - (T0 + 0.01))]
    return execution


def run(execution: Execution, *samples: BarrierSample) -> list[CommandState]:
    seen = [execution.state]
    for s in samples:
        execution = observed(execution, s, s.read_at or 0.0)
        if execution.state != seen[-1]:
            seen.append(execution.state)
    return seen


def test_open_accepted_written_moving_confirmed() -> None:
    execution = written()
    states = run(
        execution,
        sample(S.CLOSED, T0 + 0.005),  # read before the write completed: ignored
        sample(S.CLOSED, T0 + 0.05, open_pending=True),  # the PLC has not taken it yet
        sample(S.OPENING, T0 + 0.2),
        sample(S.OPENING, T0 + 1.0),
        sample(S.OPENED, T0 + 3.0, position=100),
    )
    assert states == [CommandState.WRITTEN, CommandState.MOVING, CommandState.CONFIRMED]


@pytest.mark.parametrize(
    ("kind", "samples", "outcome", "detail"),
    [
        (CommandKind.OPEN, [sample(S.OPENED, T0 + 0.1)], CommandState.CONFIRMED, None),
        (
            CommandKind.CLOSE,
            [sample(S.CLOSING, T0 + 0.1), sample(S.CLOSED, T0 + 3)],
            CommandState.CONFIRMED,
            None,
        ),
        (
            CommandKind.OPEN,
            [sample(S.OPENING, T0 + 0.1), sample(S.FAULT, T0 + 1, fault=FaultCode.MOTOR_FAULT)],
            CommandState.FAILED,
            "PLC fault: motor_fault",
        ),
        (
            CommandKind.OPEN,
            [sample(S.FAULT, T0 + 0.1, fault=FaultCode.EMERGENCY_STOP)],
            CommandState.FAILED,
            "PLC fault: emergency_stop",
        ),
        (
            CommandKind.CLOSE,
            [sample(S.OPENED, T0 + 0.1, fault=FaultCode.OBSTRUCTION, occupied=True)],
            CommandState.REJECTED,
            "vehicle",
        ),
        (
            CommandKind.CLOSE,
            [
                sample(S.CLOSING, T0 + 0.1),
                sample(S.OPENING, T0 + 1, fault=FaultCode.OBSTRUCTION, occupied=True),
            ],
            CommandState.REJECTED,
            "vehicle",
        ),
        (
            CommandKind.OPEN,
            [sample(S.OPENING, T0 + 0.1), sample(S.CLOSING, T0 + 1)],
            CommandState.FAILED,
            "went closing before reaching opened",
        ),
        # A barrier in an obstruction fault is not failed by a read taken before the PLC took the open.
        (
            CommandKind.OPEN,
            [
                sample(S.FAULT, T0 + 0.1, fault=FaultCode.OBSTRUCTION, open_pending=True),
                sample(S.OPENING, T0 + 0.2),
            ],
            CommandState.MOVING,
            None,
        ),
    ],
)
def test_outcomes(
    kind: CommandKind, samples: list[BarrierSample], outcome: CommandState, detail: str | None
) -> None:
    execution = written(kind)
    for s in samples:
        execution = observed(execution, s, s.read_at or 0.0)
    assert execution.state is outcome
    if detail is None:
        assert execution.detail is None
    else:
        assert detail in (execution.detail or "")


def test_a_fault_carries_its_code_and_implies_error() -> None:
    execution = observed(
        written(), sample(S.FAULT, T0 + 0.1, fault=FaultCode.MOTOR_FAULT), T0 + 0.1
    )
    assert execution.fault is FaultCode.MOTOR_FAULT
    assert barrier_status_after(execution) is BarrierStatus.ERROR


@pytest.mark.parametrize(
    ("samples", "fragment"),
    [
        ([], "the PLC did not act on the request within 15 s"),
        ([sample(S.CLOSED, T0 + 0.1, open_pending=True)], "did not act"),
        (
            [sample(S.OPENING, T0 + 0.1), sample(S.OPENING, T0 + 14)],
            "did not reach its end position within 15 s",
        ),
    ],
)
def test_no_confirmation_by_the_deadline_times_out_to_error(
    samples: list[BarrierSample], fragment: str
) -> None:
    execution = written()
    for s in samples:
        execution = observed(execution, s, s.read_at or 0.0)
    assert check_deadline(execution, T0 + 14.99)[0] == execution
    execution, actions = check_deadline(execution, T0 + 15.0)
    assert (execution.state, actions) == (CommandState.TIMED_OUT, [])
    assert fragment in (execution.detail or "")
    assert barrier_status_after(execution) is BarrierStatus.ERROR


def test_a_command_past_its_ttl_expires_and_is_never_written() -> None:
    old = command(requested_at=T0 - 30.5)
    execution, actions = begin(old, T0, TIMINGS)
    assert (execution.state, actions) == (CommandState.EXPIRED, [])
    assert "30.5 s old" in (execution.detail or "")
    assert barrier_status_after(execution) is None
    fresh, actions = begin(command(requested_at=T0 - 29.9), T0, TIMINGS)
    assert (fresh.state, actions) == (CommandState.ACCEPTED, [WriteCoil(CommandKind.OPEN)])


def test_a_command_dated_beyond_its_ttl_in_the_future_is_rejected_unwritten() -> None:
    # E.g. an original producer sending milliseconds would be caught at parsing; a producer
    # whose clock runs minutes ahead is caught here: the command's age cannot be known.
    ahead = command(requested_at=T0 + 30.5)
    execution, actions = begin(ahead, T0, TIMINGS)
    assert (execution.state, actions) == (CommandState.REJECTED, [])
    assert "30.5 s in the future" in (execution.detail or "")
    assert barrier_status_after(execution) is None
    skewed, actions = begin(command(requested_at=T0 + 29.9), T0, TIMINGS)
    assert (skewed.state, actions) == (CommandState.ACCEPTED, [WriteCoil(CommandKind.OPEN)])


def test_a_command_never_written_times_out_without_claiming_an_error() -> None:
    execution, _ = begin(command(), T0, TIMINGS)
    execution, _ = write_failed(execution, T0 + 0.1, "link down", retryable=True, timings=TIMINGS)
    execution, _ = check_deadline(execution, T0 + 15.0)
    assert execution.state is CommandState.TIMED_OUT
    assert "could not be written" in (execution.detail or "")
    assert barrier_status_after(execution) is None  # the PLC never had it: it says what it is


def test_write_failures_retry_within_the_deadline_then_fail() -> None:
    execution, _ = begin(command(), T0, TIMINGS)
    execution, actions = write_failed(
        execution, T0 + 0.1, "link down", retryable=True, timings=TIMINGS
    )
    assert (execution.state, execution.retry_at, actions) == (CommandState.ACCEPTED, T0 + 0.6, [])
    assert retry_due(execution, T0 + 0.5) == (execution, [])
    execution, actions = retry_due(execution, T0 + 0.6)
    assert actions == [WriteCoil(CommandKind.OPEN)]
    execution, _ = write_failed(execution, T0 + 14.7, "link down", retryable=True, timings=TIMINGS)
    assert execution.state is CommandState.FAILED
    assert execution.detail == "could not write the request: link down"


def test_a_refused_write_fails_at_once() -> None:
    execution, _ = begin(command(), T0, TIMINGS)
    execution, _ = write_failed(
        execution, T0 + 0.1, "exception 2", retryable=False, timings=TIMINGS
    )
    assert execution.state is CommandState.FAILED


def test_a_newer_command_supersedes_a_running_one() -> None:
    execution = observed(written(), sample(S.OPENING, T0 + 0.1), T0 + 0.1)
    newer = Command("c-2", 3, CommandKind.CLOSE, "bob", T0 + 1, "barrier_commands/0/1")
    execution = supersede(execution, newer, T0 + 1.1)
    assert execution.state is CommandState.SUPERSEDED
    assert execution.detail == "superseded by close c-2"
    assert supersede(execution, newer, T0 + 2) == execution, "a terminal command stays as it ended"


def test_a_resumed_written_command_is_not_written_again() -> None:
    execution, actions = begin(
        command(),
        T0 + 5,
        TIMINGS,
        resumed=CommandState.WRITTEN,
        written_at=T0 + 0.01,
        accepted_at=T0,
    )
    assert execution.state is CommandState.WRITTEN
    assert execution.deadline_at == T0 + 15
    assert actions == [PollFast(10.0)]
    assert observed(execution, sample(S.OPENED, T0 + 5.1), T0 + 5.1).state is CommandState.CONFIRMED


def test_a_resumed_unwritten_command_is_judged_like_a_new_one() -> None:
    execution, actions = begin(
        command(requested_at=T0 - 40),
        T0,
        TIMINGS,
        resumed=CommandState.ACCEPTED,
        accepted_at=T0 - 39,
    )
    assert (execution.state, actions) == (CommandState.EXPIRED, [])


def test_events_after_the_end_change_nothing() -> None:
    execution = observed(written(), sample(S.OPENED, T0 + 0.1), T0 + 0.1)
    assert execution.state is CommandState.CONFIRMED
    assert observed(execution, sample(S.FAULT, T0 + 1), T0 + 1) == execution
    assert check_deadline(execution, T0 + 100) == (execution, [])
    assert write_succeeded(execution, T0 + 1) == (execution, [])


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (observed(written(), sample(S.OPENED, T0 + 0.1), T0 + 0.1), BarrierStatus.OPENED),
        (
            observed(written(CommandKind.CLOSE), sample(S.CLOSED, T0 + 0.1), T0 + 0.1),
            BarrierStatus.CLOSED,
        ),
        (
            observed(
                written(CommandKind.CLOSE),
                sample(S.OPENED, T0 + 0.1, fault=FaultCode.OBSTRUCTION),
                T0 + 0.1,
            ),
            None,
        ),
        (
            write_failed(
                begin(command(), T0, TIMINGS)[0], T0, "refused", retryable=False, timings=TIMINGS
            )[0],
            None,
        ),
        (begin(command(requested_at=T0 - 99), T0, TIMINGS)[0], None),
    ],
)
def test_what_each_outcome_says_of_the_barrier(
    outcome: Execution, expected: BarrierStatus | None
) -> None:
    assert barrier_status_after(outcome) is expected


def test_a_command_resumed_past_its_deadline_gets_one_look_at_the_plc() -> None:
    execution, _ = begin(
        command(),
        T0 + 40,
        TIMINGS,
        resumed=CommandState.MOVING,
        written_at=T0 + 0.01,
        accepted_at=T0,
    )
    assert (execution.state, execution.deadline_at) == (CommandState.MOVING, T0 + 43)
    assert (
        observed(execution, sample(S.OPENED, T0 + 40.2), T0 + 40.2).state is CommandState.CONFIRMED
    )
    assert check_deadline(execution, T0 + 43)[0].state is CommandState.TIMED_OUT
