"""Pure encode/decode between a barrier's PLC points and a `BarrierReading`."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from plc.registers import BarrierPoints, BarrierState, FaultCode, Point, PointRole, Table

RegisterImage = Mapping[Table, Mapping[int, int]]
"""Values read from one PLC: per table, address -> value (bits as 0/1)."""

POSITION_OPEN = 100
"""Position word of a fully open barrier; 0 is fully closed."""

HEARTBEAT_MODULUS = 0x10000
"""The heartbeat word wraps from 65535 to 0."""


class BarrierReading(msgspec.Struct, frozen=True):
    """What the PLC reports about one barrier at one read."""

    state: BarrierState
    fault: FaultCode
    heartbeat: int
    position: int
    occupied: bool
    open_pending: bool = False
    """The OPEN request coil still reads 1: the PLC has not accepted the request yet."""
    close_pending: bool = False
    """The CLOSE request coil still reads 1."""


class DecodeError(ValueError):
    """A PLC value that does not mean anything in the register protocol."""

    def __init__(self, role: PointRole, point: Point, value: int | None, reason: str) -> None:
        super().__init__(f"{role.value} at {point.table.value} {point.address}: {reason}")
        self.role = role
        self.point = point
        self.value = value


class UnknownStateError(DecodeError):
    """The state word holds a value that is not a `BarrierState`."""


class UnknownFaultError(DecodeError):
    """The fault word holds a value that is not a `FaultCode`."""


def _value(points: BarrierPoints, role: PointRole, image: RegisterImage) -> int:
    point = points.point(role)
    try:
        return image[point.table][point.address]
    except KeyError:
        raise DecodeError(role, point, None, "not in the values read") from None


def decode_reading(points: BarrierPoints, image: RegisterImage) -> BarrierReading:
    """Decode one barrier's reading from `image`; raise a `DecodeError` for nonsense values."""
    raw_state = _value(points, PointRole.STATE, image)
    try:
        state = BarrierState(raw_state)
    except ValueError:
        raise UnknownStateError(
            PointRole.STATE, points.state, raw_state, f"unknown state value {raw_state}"
        ) from None
    raw_fault = _value(points, PointRole.FAULT, image)
    try:
        fault = FaultCode(raw_fault)
    except ValueError:
        raise UnknownFaultError(
            PointRole.FAULT, points.fault, raw_fault, f"unknown fault code {raw_fault}"
        ) from None
    position = _value(points, PointRole.POSITION, image)
    if not 0 <= position <= POSITION_OPEN:
        raise DecodeError(
            PointRole.POSITION,
            points.position,
            position,
            f"position {position} is outside 0..{POSITION_OPEN}",
        )
    heartbeat = _value(points, PointRole.HEARTBEAT, image)
    return BarrierReading(
        state=state,
        fault=fault,
        heartbeat=heartbeat,
        position=position,
        occupied=bool(_value(points, PointRole.OCCUPIED, image)),
        open_pending=bool(_value(points, PointRole.OPEN_REQUEST, image)),
        close_pending=bool(_value(points, PointRole.CLOSE_REQUEST, image)),
    )


def encode_reading(points: BarrierPoints, reading: BarrierReading) -> dict[Point, int]:
    """Return the value of every status point that reports `reading` (the simulator's side).

    The request coils are not status points: the PLC's master writes them and the PLC resets them.
    """
    return {
        points.state: int(reading.state),
        points.fault: int(reading.fault),
        points.heartbeat: reading.heartbeat % HEARTBEAT_MODULUS,
        points.position: reading.position,
        points.occupied: int(reading.occupied),
    }
