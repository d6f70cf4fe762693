"""Pure barrier physics: travel, occupancy, faults, PLC scans and request coils, clock passed in.

A `Barrier` is the state of one barrier at the instant of its last event (`Barrier.since`); between
events it moves by the rules, so every function evaluates it lazily at the time it is given instead
of stepping it every scan. Times are PLC time: seconds the PLC has been scanning (see `PlcClock`),
so a frozen PLC is simply one whose clock has stopped.
"""

from __future__ import annotations

import math
from enum import StrEnum

import msgspec
from msgspec.structs import replace

from plc.codec import HEARTBEAT_MODULUS, POSITION_OPEN, BarrierReading
from plc.registers import BarrierState, FaultCode

POSITION_CLOSED = 0
"""Position word of a fully closed barrier."""


class Command(StrEnum):
    """What a request coil or the cabinet's push button asks the barrier to do."""

    OPEN = "open"
    CLOSE = "close"


class Fault(StrEnum):
    """A hardware fault the simulator can inject into one barrier."""

    OBSTRUCTION = "obstruction"
    """The boom hit something: it stops; an OPEN clears the fault and opens."""
    MOTOR_FAULT = "motor_fault"
    """The drive tripped: it stops and ignores commands until the fault is cleared."""
    EMERGENCY_STOP = "emergency_stop"
    """The cabinet's emergency stop is pressed: as a motor fault, with its own fault code."""
    STUCK = "stuck"
    """The boom jams without the drive noticing: it reports travel forever and never arrives."""


FAULT_CODES: dict[Fault, FaultCode] = {
    Fault.OBSTRUCTION: FaultCode.OBSTRUCTION,
    Fault.MOTOR_FAULT: FaultCode.MOTOR_FAULT,
    Fault.EMERGENCY_STOP: FaultCode.EMERGENCY_STOP,
}
"""The fault code each stopping fault reports; a stuck barrier reports none."""

LOCKOUT_FAULTS = frozenset({Fault.MOTOR_FAULT, Fault.EMERGENCY_STOP})
"""Faults during which the PLC ignores every command until the fault is cleared."""

_TRAVEL: dict[Command, BarrierState] = {
    Command.OPEN: BarrierState.OPENING,
    Command.CLOSE: BarrierState.CLOSING,
}
_REST: dict[Command, BarrierState] = {
    Command.OPEN: BarrierState.OPENED,
    Command.CLOSE: BarrierState.CLOSED,
}
_DIRECTION: dict[BarrierState, int] = {BarrierState.OPENING: 1, BarrierState.CLOSING: -1}
_ARRIVAL: dict[int, tuple[float, BarrierState]] = {
    1: (POSITION_OPEN, BarrierState.OPENED),
    -1: (POSITION_CLOSED, BarrierState.CLOSED),
}


class Mechanics(msgspec.Struct, frozen=True):
    """How fast a barrier moves and how often its PLC scans."""

    travel_time: float = 3.0
    """Seconds for a full stroke; a partial stroke takes proportionally less."""
    scan_interval: float = 0.05
    """Seconds between PLC scans: one heartbeat step, and the most a coil request waits."""


class PendingRequest(msgspec.Struct, frozen=True):
    """A request coil written over Modbus that no PLC scan has accepted yet."""

    command: Command
    scan: int
    """The scan during which the coil was written; the next scan accepts it."""


class Barrier(msgspec.Struct, frozen=True):
    """One barrier as it was at `since`, its last event; it moves on by the rules from there."""

    mechanics: Mechanics = msgspec.field(default_factory=Mechanics)
    state: BarrierState = BarrierState.CLOSED
    fault: FaultCode = FaultCode.NONE
    position: float = POSITION_CLOSED
    """Position at `since`, 0 (closed) .. 100 (open)."""
    since: float = 0.0
    """PLC time of the last event."""
    occupied: bool = False
    injected: Fault | None = None
    pending: tuple[PendingRequest, ...] = ()
    """Request coils still reading 1, in the order they were written."""


def scan_number(now: float, scan_interval: float) -> int:
    """Return the number of the PLC scan running at PLC time `now` (scan 0 starts at 0)."""
    return math.floor(now / scan_interval)


def _direction(barrier: Barrier) -> int:
    if barrier.injected is Fault.STUCK:
        return 0
    return _DIRECTION.get(barrier.state, 0)


def position_at(barrier: Barrier, now: float) -> float:
    """Return where `barrier` is at `now`, if nothing has happened to it since `since`."""
    travelled = POSITION_OPEN * (now - barrier.since) / barrier.mechanics.travel_time
    position = barrier.position + _direction(barrier) * travelled
    return min(max(position, POSITION_CLOSED), POSITION_OPEN)


def _settle(barrier: Barrier, now: float) -> Barrier:
    """Finish the travel that has reached its end by `now`."""
    direction = _direction(barrier)
    if direction == 0:
        return barrier
    end, state = _ARRIVAL[direction]
    stroke = abs(end - barrier.position) / POSITION_OPEN
    arrival = barrier.since + stroke * barrier.mechanics.travel_time
    if arrival > now:
        return barrier
    return replace(barrier, state=state, position=end, since=arrival)


def _start(barrier: Barrier, state: BarrierState, now: float) -> Barrier:
    """Set off in the direction of `state` from where the barrier is at `now`."""
    moving = replace(barrier, state=state, position=position_at(barrier, now), since=now)
    return _settle(moving, now)


def _apply(barrier: Barrier, command: Command, now: float) -> Barrier:
    """Apply `command` to a barrier already advanced to `now`."""
    if barrier.injected in LOCKOUT_FAULTS:
        return barrier
    if barrier.state is BarrierState.FAULT and command is Command.CLOSE:
        return barrier  # an obstructed barrier only reopens
    if barrier.state in (_TRAVEL[command], _REST[command]):
        accepted = barrier
    elif command is Command.CLOSE and barrier.occupied:
        # A close is refused while the loop detector sees a vehicle in the barrier's path.
        return replace(barrier, fault=FaultCode.OBSTRUCTION)
    else:
        accepted = _start(barrier, _TRAVEL[command], now)
    # An accepted command clears an obstruction, whether reported by the loop or injected.
    injected = None if barrier.injected is Fault.OBSTRUCTION else barrier.injected
    return replace(accepted, fault=FaultCode.NONE, injected=injected)


def advance(barrier: Barrier, now: float) -> Barrier:
    """Bring `barrier` up to `now`: accept the coil requests due and finish travel, in order."""
    interval = barrier.mechanics.scan_interval
    current = scan_number(now, interval)
    while barrier.pending and barrier.pending[0].scan < current:
        first, rest = barrier.pending[0], barrier.pending[1:]
        accepted_at = (first.scan + 1) * interval
        barrier = replace(_settle(barrier, accepted_at), pending=rest)
        barrier = _apply(barrier, first.command, accepted_at)
    return _settle(barrier, now)


def request(barrier: Barrier, command: Command, now: float) -> Barrier:
    """Return `barrier` after `command` takes effect at `now` (accepted coil or push button)."""
    return _apply(advance(barrier, now), command, now)


def write_request(barrier: Barrier, command: Command, value: bool, now: float) -> Barrier:
    """Return `barrier` after a Modbus write of `value` to the request coil for `command`.

    A 1 waits for the next scan, which accepts it and resets the coil; a 0 withdraws a request
    that no scan has seen yet.
    """
    barrier = advance(barrier, now)
    others = tuple(p for p in barrier.pending if p.command is not command)
    if not value:
        return replace(barrier, pending=others)
    if len(others) < len(barrier.pending):
        return barrier  # already requested: the coil reads 1 until the next scan
    written = PendingRequest(command, scan_number(now, barrier.mechanics.scan_interval))
    return replace(barrier, pending=(*barrier.pending, written))


class Rest(msgspec.Struct, frozen=True):
    """Where a barrier comes to rest, and when."""

    state: BarrierState
    """OPENED or CLOSED."""
    at: float
    """PLC time."""


def rest_after(barrier: Barrier, command: Command) -> Rest | None:
    """Return when `barrier` rests where its pending `command` sends it, if nothing else happens.

    The time is the later of the scan that accepts the request and the end of the travel it
    starts, so a barrier already resting there rests as of the acceptance. None if it never gets
    there: a stuck boom, a lockout fault, a close refused (occupied or obstructed), or a request
    pending after it that sends the barrier elsewhere. Raise ValueError if no `command` is pending.
    """
    written = next((p for p in barrier.pending if p.command is command), None)
    if written is None:
        raise ValueError(f"no {command} request is pending")
    interval = barrier.mechanics.scan_interval
    # Half a scan past the boundary that accepts the last request, clear of rounding.
    accepted = advance(barrier, (barrier.pending[-1].scan + 1.5) * interval)
    rested = _settle(accepted, math.inf)
    if rested.state is not _REST[command]:
        return None
    return Rest(state=rested.state, at=max(rested.since, (written.scan + 1) * interval))


def set_occupied(barrier: Barrier, occupied: bool, now: float) -> Barrier:
    """Return `barrier` after the loop detector starts or stops seeing a vehicle at `now`."""
    barrier = replace(advance(barrier, now), occupied=occupied)
    if occupied and barrier.state is BarrierState.CLOSING:
        # Safety: a vehicle entering the path of a closing boom sends it back up.
        return replace(_start(barrier, BarrierState.OPENING, now), fault=FaultCode.OBSTRUCTION)
    if (
        not occupied
        and barrier.fault is FaultCode.OBSTRUCTION
        and barrier.injected is not Fault.OBSTRUCTION
    ):
        return replace(barrier, fault=FaultCode.NONE)
    return barrier


def inject_fault(barrier: Barrier, fault: Fault, now: float) -> Barrier:
    """Return `barrier` after `fault` strikes at `now`, replacing any fault injected before."""
    barrier = advance(barrier, now)
    halted = replace(barrier, injected=fault, position=position_at(barrier, now), since=now)
    if fault is Fault.STUCK:
        return halted  # the drive keeps reporting travel; only the position freezes
    return replace(halted, state=BarrierState.FAULT, fault=FAULT_CODES[fault])


def clear_fault(barrier: Barrier, now: float) -> Barrier:
    """Return `barrier` after its injected fault is cleared at `now`.

    A barrier at either end rests there; one stopped in between carries on towards open.
    """
    if barrier.injected is None:
        return barrier
    barrier = advance(barrier, now)
    here = position_at(barrier, now)
    if here <= POSITION_CLOSED:
        state = BarrierState.CLOSED
    elif here >= POSITION_OPEN:
        state = BarrierState.OPENED
    else:
        state = BarrierState.OPENING
    return replace(
        barrier, state=state, fault=FaultCode.NONE, injected=None, position=here, since=now
    )


def reported_position(position: float) -> int:
    """Return the position word for `position`: the nearest percent, an end only once reached."""
    if POSITION_CLOSED < position < POSITION_OPEN:
        return min(max(round(position), POSITION_CLOSED + 1), POSITION_OPEN - 1)
    return round(position)


def heartbeat(now: float, scan_interval: float) -> int:
    """Return the heartbeat word at `now`: one step per scan, wrapping at 65535."""
    return scan_number(now, scan_interval) % HEARTBEAT_MODULUS


def observe(barrier: Barrier, now: float) -> BarrierReading:
    """Return what the PLC reports about `barrier` at `now`, request coils included."""
    barrier = advance(barrier, now)
    pending = {p.command for p in barrier.pending} if barrier.pending else set()
    return BarrierReading(
        state=barrier.state,
        fault=barrier.fault,
        heartbeat=heartbeat(now, barrier.mechanics.scan_interval),
        position=reported_position(position_at(barrier, now)),
        occupied=barrier.occupied,
        open_pending=Command.OPEN in pending,
        close_pending=Command.CLOSE in pending,
    )


class PlcClock(msgspec.Struct, frozen=True):
    """Turns host time into PLC time: the seconds the PLC has spent scanning."""

    origin: float
    """Host time at which PLC time was 0, moved on by every stretch spent frozen."""
    stopped_at: float | None = None
    """Host time at which the scan stopped, while it is stopped."""


def plc_time(clock: PlcClock, now: float) -> float:
    """Return the PLC time at host time `now`."""
    return (now if clock.stopped_at is None else clock.stopped_at) - clock.origin


def stop_scan(clock: PlcClock, now: float) -> PlcClock:
    """Return `clock` with the scan stopped at host time `now` (no change if already stopped)."""
    return clock if clock.stopped_at is not None else replace(clock, stopped_at=now)


def resume_scan(clock: PlcClock, now: float) -> PlcClock:
    """Return `clock` scanning again from host time `now` (no change if it is running)."""
    if clock.stopped_at is None:
        return clock
    return PlcClock(origin=clock.origin + now - clock.stopped_at)
