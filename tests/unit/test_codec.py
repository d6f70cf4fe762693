"""Decode/encode of barrier readings against the register protocol's tables."""

import pytest

from plc.codec import (
    BarrierReading,
    DecodeError,
    RegisterImage,
    UnknownFaultError,
    UnknownStateError,
    decode_reading,
    encode_reading,
)
from plc.registers import BarrierPoints, BarrierState, FaultCode, Table, barrier_v1_points

pytestmark = pytest.mark.unit

SLOT1 = barrier_v1_points(1)  # base address 8


def image(
    state: int,
    fault: int,
    heartbeat: int,
    position: int,
    occupied: int,
    coils: tuple[int, int] = (0, 0),
) -> RegisterImage:
    return {
        Table.INPUT_REGISTER: {8: state, 9: fault, 10: heartbeat, 11: position},
        Table.DISCRETE_INPUT: {8: occupied},
        Table.COIL: {8: coils[0], 9: coils[1]},
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ((0, 0, 0, 0, 0), BarrierReading(BarrierState.CLOSED, FaultCode.NONE, 0, 0, False)),
        ((1, 0, 7, 40, 0), BarrierReading(BarrierState.OPENING, FaultCode.NONE, 7, 40, False)),
        (
            (2, 0, 65535, 100, 1),
            BarrierReading(BarrierState.OPENED, FaultCode.NONE, 65535, 100, True),
        ),
        ((3, 0, 12, 55, 0), BarrierReading(BarrierState.CLOSING, FaultCode.NONE, 12, 55, False)),
        ((4, 1, 1, 30, 1), BarrierReading(BarrierState.FAULT, FaultCode.OBSTRUCTION, 1, 30, True)),
        ((4, 2, 1, 30, 0), BarrierReading(BarrierState.FAULT, FaultCode.MOTOR_FAULT, 1, 30, False)),
        (
            (4, 3, 1, 99, 0),
            BarrierReading(BarrierState.FAULT, FaultCode.TRAVEL_TIMEOUT, 1, 99, False),
        ),
        (
            (4, 4, 1, 0, 0),
            BarrierReading(BarrierState.FAULT, FaultCode.EMERGENCY_STOP, 1, 0, False),
        ),
    ],
)
def test_decode_table(raw: tuple[int, int, int, int, int], expected: BarrierReading) -> None:
    assert decode_reading(SLOT1, image(*raw)) == expected


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        ((5, 0, 0, 0, 0), UnknownStateError, "unknown state value 5"),
        ((65535, 0, 0, 0, 0), UnknownStateError, "state at input_register 8"),
        ((0, 9, 0, 0, 0), UnknownFaultError, "unknown fault code 9"),
        ((0, 0, 0, 101, 0), DecodeError, "position 101 is outside 0..100"),
    ],
)
def test_nonsense_values_are_typed_errors(
    raw: tuple[int, int, int, int, int], error: type[DecodeError], fragment: str
) -> None:
    with pytest.raises(error, match=fragment) as caught:
        decode_reading(SLOT1, image(*raw))
    assert (
        caught.value.value
        == raw[0 if error is UnknownStateError else 1 if error is UnknownFaultError else 3]
    )


@pytest.mark.parametrize(
    ("coils", "open_pending", "close_pending"),
    [((0, 0), False, False), ((1, 0), True, False), ((0, 1), False, True)],
)
def test_request_coils_show_whether_the_plc_accepted(
    coils: tuple[int, int], open_pending: bool, close_pending: bool
) -> None:
    reading = decode_reading(SLOT1, image(2, 0, 0, 100, 0, coils))
    assert (reading.open_pending, reading.close_pending) == (open_pending, close_pending)


def test_missing_value_is_a_decode_error() -> None:
    partial = {Table.INPUT_REGISTER: {8: 0, 9: 0, 10: 0, 11: 0}, Table.COIL: {8: 0, 9: 0}}
    with pytest.raises(DecodeError, match="occupied at discrete_input 8: not in the values read"):
        decode_reading(SLOT1, partial)


def test_encode_then_decode_round_trips_on_a_custom_layout() -> None:
    from plc.registers import Point

    points = BarrierPoints(
        open_request=Point(Table.COIL, 100),
        close_request=Point(Table.COIL, 205),
        state=Point(Table.HOLDING_REGISTER, 40),
        fault=Point(Table.HOLDING_REGISTER, 41),
        heartbeat=Point(Table.INPUT_REGISTER, 3),
        position=Point(Table.HOLDING_REGISTER, 7),
        occupied=Point(Table.COIL, 300),
    )
    reading = BarrierReading(BarrierState.CLOSING, FaultCode.NONE, 65536 + 5, 42, True)
    values = encode_reading(points, reading)
    img: dict[Table, dict[int, int]] = {t: {} for t in Table}
    for point, value in values.items():
        img[point.table][point.address] = value
    img[Table.COIL] |= {100: 0, 205: 1}
    assert decode_reading(points, img) == BarrierReading(
        BarrierState.CLOSING, FaultCode.NONE, 5, 42, True, close_pending=True
    )


@pytest.mark.parametrize(
    ("slot", "stride", "coil", "register", "discrete"),
    [(0, 8, 0, 0, 0), (1, 8, 8, 8, 8), (3, 8, 24, 24, 24), (2, 16, 32, 32, 32)],
)
def test_barrier_v1_addresses(
    slot: int, stride: int, coil: int, register: int, discrete: int
) -> None:
    points = barrier_v1_points(slot, stride)
    assert (points.open_request.table, points.open_request.address) == (Table.COIL, coil)
    assert points.close_request.address == coil + 1
    assert (points.state.table, points.state.address) == (Table.INPUT_REGISTER, register)
    assert [points.fault.address, points.heartbeat.address, points.position.address] == [
        register + 1,
        register + 2,
        register + 3,
    ]
    assert (points.occupied.table, points.occupied.address) == (Table.DISCRETE_INPUT, discrete)
