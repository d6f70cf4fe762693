"""Barrier physics: travel, occupancy, faults, scans and request coils, on a fake clock."""

from __future__ import annotations

import pytest

from plc.registers import BarrierState, FaultCode
from simulator.physics import (
    Barrier,
    Command,
    Fault,
    Mechanics,
    PlcClock,
    Rest,
    clear_fault,
    inject_fault,
    observe,
    plc_time,
    reported_position,
    request,
    rest_after,
    resume_scan,
    set_occupied,
    stop_scan,
    write_request,
)

pytestmark = pytest.mark.unit

# Binary-exact times: a 3 s stroke (1 % per 30 ms) and a 0.25 s scan.
MECHANICS = Mechanics(travel_time=3.0, scan_interval=0.25)
CLOSED = Barrier(mechanics=MECHANICS)
OPENED = Barrier(mechanics=MECHANICS, state=BarrierState.OPENED, position=100)
OPENING = request(CLOSED, Command.OPEN, 0.0)
"""Sets off from closed at 0; 50 % at 1.5 s, open at 3 s."""

S = BarrierState
F = FaultCode


def seen(barrier: Barrier, now: float) -> tuple[BarrierState, FaultCode, int]:
    reading = observe(barrier, now)
    return reading.state, reading.fault, reading.position


@pytest.mark.parametrize(
    ("start", "command", "now", "expected"),
    [
        (CLOSED, Command.OPEN, 0.0, (S.OPENING, F.NONE, 0)),
        (CLOSED, Command.OPEN, 0.75, (S.OPENING, F.NONE, 25)),
        (CLOSED, Command.OPEN, 1.5, (S.OPENING, F.NONE, 50)),
        (CLOSED, Command.OPEN, 2.99, (S.OPENING, F.NONE, 99)),
        (CLOSED, Command.OPEN, 3.0, (S.OPENED, F.NONE, 100)),
        (CLOSED, Command.OPEN, 60.0, (S.OPENED, F.NONE, 100)),
        (OPENED, Command.CLOSE, 0.0, (S.CLOSING, F.NONE, 100)),
        (OPENED, Command.CLOSE, 0.75, (S.CLOSING, F.NONE, 75)),
        (OPENED, Command.CLOSE, 2.99, (S.CLOSING, F.NONE, 1)),
        (OPENED, Command.CLOSE, 3.0, (S.CLOSED, F.NONE, 0)),
        (OPENED, Command.CLOSE, 60.0, (S.CLOSED, F.NONE, 0)),
    ],
)
def test_full_stroke(
    start: Barrier, command: Command, now: float, expected: tuple[BarrierState, FaultCode, int]
) -> None:
    assert seen(request(start, command, 0.0), now) == expected


@pytest.mark.parametrize(
    ("start", "command", "sequence"),
    [
        (CLOSED, Command.OPEN, [S.CLOSED, S.OPENING, S.OPENED]),
        (OPENED, Command.CLOSE, [S.OPENED, S.CLOSING, S.CLOSED]),
    ],
)
def test_a_stroke_passes_through_the_states_in_order(
    start: Barrier, command: Command, sequence: list[BarrierState]
) -> None:
    barrier = request(start, command, 1.0)
    readings = [observe(barrier if t >= 10 else start, t / 10) for t in range(50)]
    states = [r.state for r in readings]
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == sequence
    positions = [r.position for r in readings]
    assert positions == sorted(positions, reverse=command is Command.CLOSE)


@pytest.mark.parametrize(("start", "command"), [(OPENED, Command.OPEN), (CLOSED, Command.CLOSE)])
def test_a_command_for_where_the_barrier_is_does_nothing(start: Barrier, command: Command) -> None:
    assert seen(request(start, command, 1.0), 5.0) == seen(start, 5.0)


def test_travelling_towards_the_target_already_is_not_restarted() -> None:
    assert request(OPENING, Command.OPEN, 1.5) == OPENING


def test_reversal_mid_travel_takes_a_proportional_stroke() -> None:
    closing = request(OPENING, Command.CLOSE, 1.5)
    assert seen(closing, 1.5) == (S.CLOSING, F.NONE, 50)
    assert seen(closing, 2.25) == (S.CLOSING, F.NONE, 25)
    assert seen(closing, 3.0) == (S.CLOSED, F.NONE, 0)
    reopening = request(closing, Command.OPEN, 2.25)
    assert seen(reopening, 4.49) == (S.OPENING, F.NONE, 100 - 1)
    assert seen(reopening, 4.5) == (S.OPENED, F.NONE, 100)


def test_a_close_is_refused_while_occupied() -> None:
    occupied = set_occupied(OPENED, True, 1.0)
    refused = request(occupied, Command.CLOSE, 2.0)
    assert seen(refused, 2.0) == (S.OPENED, F.OBSTRUCTION, 100)
    assert seen(refused, 9.0) == (S.OPENED, F.OBSTRUCTION, 100)
    cleared = set_occupied(refused, False, 10.0)
    assert seen(cleared, 10.0) == (S.OPENED, F.NONE, 100)
    assert seen(request(cleared, Command.CLOSE, 11.0), 14.0) == (S.CLOSED, F.NONE, 0)


def test_a_close_refused_mid_opening_lets_the_barrier_open() -> None:
    refused = request(set_occupied(OPENING, True, 1.0), Command.CLOSE, 1.5)
    assert seen(refused, 1.5) == (S.OPENING, F.OBSTRUCTION, 50)
    assert seen(refused, 3.0) == (S.OPENED, F.OBSTRUCTION, 100)


def test_an_accepted_command_clears_the_obstruction_code() -> None:
    refused = request(set_occupied(OPENED, True, 0.0), Command.CLOSE, 1.0)
    assert seen(request(refused, Command.OPEN, 2.0), 2.0) == (S.OPENED, F.NONE, 100)


def test_a_vehicle_under_a_closing_barrier_sends_it_back_up() -> None:
    closing = request(OPENED, Command.CLOSE, 0.0)
    returning = set_occupied(closing, True, 1.5)
    assert seen(returning, 1.5) == (S.OPENING, F.OBSTRUCTION, 50)
    assert seen(returning, 2.25) == (S.OPENING, F.OBSTRUCTION, 75)
    assert seen(returning, 3.0) == (S.OPENED, F.OBSTRUCTION, 100)
    assert observe(returning, 3.0).occupied
    assert seen(set_occupied(returning, False, 4.0), 4.0) == (S.OPENED, F.NONE, 100)


@pytest.mark.parametrize(
    ("fault", "code", "reopens"),
    [
        (Fault.OBSTRUCTION, F.OBSTRUCTION, True),
        (Fault.MOTOR_FAULT, F.MOTOR_FAULT, False),
        (Fault.EMERGENCY_STOP, F.EMERGENCY_STOP, False),
    ],
)
def test_a_stopping_fault_halts_the_barrier(fault: Fault, code: FaultCode, reopens: bool) -> None:
    faulted = inject_fault(OPENING, fault, 1.5)
    assert seen(faulted, 1.5) == (S.FAULT, code, 50)
    assert seen(faulted, 60.0) == (S.FAULT, code, 50)
    assert seen(request(faulted, Command.CLOSE, 2.0), 60.0) == (S.FAULT, code, 50)
    opened = request(faulted, Command.OPEN, 2.0)
    if reopens:  # an OPEN clears an obstruction and opens from where the boom stopped
        assert seen(opened, 2.75) == (S.OPENING, F.NONE, 75)
        assert seen(opened, 3.5) == (S.OPENED, F.NONE, 100)
        assert opened.injected is None
    else:  # a motor fault or emergency stop ignores commands until cleared
        assert seen(opened, 60.0) == (S.FAULT, code, 50)


def test_a_stuck_barrier_reports_travel_forever() -> None:
    stuck = inject_fault(OPENING, Fault.STUCK, 1.5)
    assert seen(stuck, 1.5) == (S.OPENING, F.NONE, 50)
    assert seen(stuck, 600.0) == (S.OPENING, F.NONE, 50)
    assert seen(request(stuck, Command.CLOSE, 2.0), 600.0) == (S.CLOSING, F.NONE, 50)


@pytest.mark.parametrize(
    ("start", "command", "state", "position"),
    [(CLOSED, Command.OPEN, S.OPENING, 0), (OPENED, Command.CLOSE, S.CLOSING, 100)],
)
def test_a_stuck_barrier_at_rest_accepts_a_command_and_never_moves(
    start: Barrier, command: Command, state: BarrierState, position: int
) -> None:
    stuck = request(inject_fault(start, Fault.STUCK, 0.0), command, 1.0)
    assert seen(stuck, 600.0) == (state, F.NONE, position)


@pytest.mark.parametrize(
    ("barrier", "fault", "expected_at_clear", "expected_later"),
    [
        (CLOSED, Fault.MOTOR_FAULT, (S.CLOSED, F.NONE, 0), (S.CLOSED, F.NONE, 0)),
        (OPENED, Fault.EMERGENCY_STOP, (S.OPENED, F.NONE, 100), (S.OPENED, F.NONE, 100)),
        (OPENING, Fault.OBSTRUCTION, (S.OPENING, F.NONE, 50), (S.OPENED, F.NONE, 100)),
        (OPENING, Fault.STUCK, (S.OPENING, F.NONE, 50), (S.OPENED, F.NONE, 100)),
        (  # stopped in between, it carries on towards open whichever way it was going
            request(OPENED, Command.CLOSE, 0.0),
            Fault.STUCK,
            (S.OPENING, F.NONE, 50),
            (S.OPENED, F.NONE, 100),
        ),
    ],
)
def test_clearing_a_fault(
    barrier: Barrier,
    fault: Fault,
    expected_at_clear: tuple[BarrierState, FaultCode, int],
    expected_later: tuple[BarrierState, FaultCode, int],
) -> None:
    cleared = clear_fault(inject_fault(barrier, fault, 1.5), 2.0)
    assert cleared.injected is None
    assert seen(cleared, 2.0) == expected_at_clear
    assert seen(cleared, 3.5) == expected_later


def test_clearing_without_a_fault_changes_nothing() -> None:
    assert clear_fault(OPENING, 1.0) == OPENING


@pytest.mark.parametrize(
    ("now", "heartbeat"),
    [
        (0.0, 0),
        (0.24, 0),
        (0.25, 1),
        (65535 * 0.25, 65535),
        (65536 * 0.25, 0),
        (65537 * 0.25 + 0.1, 1),
    ],
)
def test_the_heartbeat_counts_scans_and_wraps(now: float, heartbeat: int) -> None:
    assert observe(CLOSED, now).heartbeat == heartbeat


@pytest.mark.parametrize(
    ("now", "coil", "expected"),
    [
        (0.3, True, (S.CLOSED, F.NONE, 0)),
        (0.49, True, (S.CLOSED, F.NONE, 0)),
        (0.5, False, (S.OPENING, F.NONE, 0)),  # the next scan accepts it and resets the coil
        (1.25, False, (S.OPENING, F.NONE, 25)),  # travel counts from acceptance, not the write
        (3.5, False, (S.OPENED, F.NONE, 100)),
    ],
)
def test_a_coil_request_is_accepted_at_the_next_scan(
    now: float, coil: bool, expected: tuple[BarrierState, FaultCode, int]
) -> None:
    written = write_request(CLOSED, Command.OPEN, True, 0.3)
    assert observe(written, now).open_pending is coil
    assert seen(written, now) == expected


def test_a_coil_request_waits_for_travel_that_ends_before_it() -> None:
    written = write_request(OPENING, Command.CLOSE, True, 3.1)  # opened at 3.0
    assert seen(written, 3.2) == (S.OPENED, F.NONE, 100)
    assert seen(written, 4.0) == (S.CLOSING, F.NONE, 75)  # accepted at 3.25


def test_writing_zero_withdraws_a_request_before_the_scan() -> None:
    withdrawn = write_request(
        write_request(CLOSED, Command.OPEN, True, 0.3), Command.OPEN, False, 0.4
    )
    assert not observe(withdrawn, 0.4).open_pending
    assert seen(withdrawn, 5.0) == (S.CLOSED, F.NONE, 0)


def test_writing_one_twice_is_one_request() -> None:
    once = write_request(CLOSED, Command.OPEN, True, 0.3)
    assert write_request(once, Command.OPEN, True, 0.4) == once


@pytest.mark.parametrize(
    ("first", "second", "state"),
    [(Command.OPEN, Command.CLOSE, S.CLOSED), (Command.CLOSE, Command.OPEN, S.OPENING)],
)
def test_requests_accepted_by_one_scan_apply_in_the_order_written(
    first: Command, second: Command, state: BarrierState
) -> None:
    both = write_request(write_request(CLOSED, first, True, 0.3), second, True, 0.4)
    pending = observe(both, 0.49)
    assert (pending.open_pending, pending.close_pending) == (True, True)
    assert observe(both, 0.5).state is state


def test_a_locked_out_barrier_accepts_the_coil_and_ignores_the_command() -> None:
    locked = inject_fault(CLOSED, Fault.EMERGENCY_STOP, 0.0)
    written = write_request(locked, Command.OPEN, True, 0.3)
    assert not observe(written, 0.5).open_pending
    assert seen(written, 5.0) == (S.FAULT, F.EMERGENCY_STOP, 0)


OCCUPIED_OPENED = set_occupied(OPENED, True, 0.0)
STUCK_CLOSED = inject_fault(CLOSED, Fault.STUCK, 0.0)
OPEN, CLOSE = Command.OPEN, Command.CLOSE


@pytest.mark.parametrize(
    ("start", "writes", "command", "rest"),
    [
        # Accepted at the next scan (0.5), then a full 3 s stroke.
        (CLOSED, [(OPEN, 0.3)], OPEN, Rest(S.OPENED, 3.5)),
        (OPENED, [(CLOSE, 0.3)], CLOSE, Rest(S.CLOSED, 3.5)),
        # Already resting there: at rest as of the scan that accepts the request.
        (OPENED, [(OPEN, 0.3)], OPEN, Rest(S.OPENED, 0.5)),
        (STUCK_CLOSED, [(CLOSE, 0.3)], CLOSE, Rest(S.CLOSED, 0.5)),
        (OPENING, [(OPEN, 3.1)], OPEN, Rest(S.OPENED, 3.25)),  # arrived at 3.0
        # Already on the way: the travel under way ends it.
        (OPENING, [(OPEN, 1.0)], OPEN, Rest(S.OPENED, 3.0)),
        (OPENING, [(CLOSE, 1.4)], CLOSE, Rest(S.CLOSED, 3.0)),  # reversed at 50 % at 1.5
        (inject_fault(OPENING, Fault.OBSTRUCTION, 1.0), [(OPEN, 1.1)], OPEN, Rest(S.OPENED, 3.25)),
        # Never rests there.
        (OCCUPIED_OPENED, [(CLOSE, 0.3)], CLOSE, None),
        (set_occupied(OPENING, True, 0.0), [(CLOSE, 1.0)], CLOSE, None),
        (STUCK_CLOSED, [(OPEN, 0.3)], OPEN, None),
        (inject_fault(OPENING, Fault.STUCK, 1.0), [(OPEN, 1.1)], OPEN, None),
        (inject_fault(CLOSED, Fault.MOTOR_FAULT, 0.0), [(OPEN, 0.3)], OPEN, None),
        (inject_fault(OPENED, Fault.EMERGENCY_STOP, 0.0), [(CLOSE, 0.3)], CLOSE, None),
        (inject_fault(OPENING, Fault.OBSTRUCTION, 1.0), [(CLOSE, 1.1)], CLOSE, None),
        # Two requests accepted by one scan: the later one decides.
        (CLOSED, [(OPEN, 0.3), (CLOSE, 0.4)], OPEN, None),
        (CLOSED, [(OPEN, 0.3), (CLOSE, 0.4)], CLOSE, Rest(S.CLOSED, 0.5)),
    ],
)
def test_the_rest_a_coil_request_leads_to(
    start: Barrier, writes: list[tuple[Command, float]], command: Command, rest: Rest | None
) -> None:
    barrier = start
    for written, at in writes:
        barrier = write_request(barrier, written, True, at)
    predicted = rest_after(barrier, command)
    if rest is None:
        assert predicted is None
    else:
        assert predicted is not None
        assert predicted.state is rest.state
        assert predicted.at == pytest.approx(rest.at)
        assert observe(barrier, predicted.at).state is rest.state, "the physics agree"


def test_the_rest_of_a_request_not_pending_is_an_error() -> None:
    with pytest.raises(ValueError, match="no open request is pending"):
        rest_after(write_request(CLOSED, Command.CLOSE, True, 0.3), Command.OPEN)


@pytest.mark.parametrize(
    ("position", "word"),
    [(0.0, 0), (0.3, 1), (0.6, 1), (50.4, 50), (50.6, 51), (99.6, 99), (100.0, 100)],
)
def test_the_position_word_shows_an_end_only_once_reached(position: float, word: int) -> None:
    assert reported_position(position) == word


def test_a_stopped_clock_freezes_plc_time() -> None:
    clock = PlcClock(origin=10.0)
    assert plc_time(clock, 15.0) == 5.0
    stopped = stop_scan(clock, 15.0)
    assert stop_scan(stopped, 17.0) == stopped
    assert plc_time(stopped, 20.0) == 5.0
    resumed = resume_scan(stopped, 20.0)
    assert plc_time(resumed, 21.0) == 6.0
    assert resume_scan(resumed, 22.0) == resumed
