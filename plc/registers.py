"""The barrier register map as data: where every point of every barrier lives on its PLC.

One declaration serves the Modbus client and the simulator, so the two cannot drift. The default
layout is profile ``barrier-v1`` (see DESIGN.md): barrier slot ``k`` on an endpoint owns the block
of addresses starting at ``k * stride``; every address, the stride and the tables of the status
words can be overridden per barrier so that PLCs with other layouts are wired without code.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum, StrEnum

import msgspec

MAX_ADDRESS = 0xFFFF
"""Highest 0-based Modbus protocol address."""

MAX_READ_REGISTERS = 125
"""Modbus limit on registers in one FC3/FC4 read."""

MAX_READ_BITS = 2000
"""Modbus limit on bits in one FC1/FC2 read."""


class Table(StrEnum):
    """A Modbus data table."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bits(self) -> bool:
        """Whether the table holds single bits rather than 16-bit registers."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def max_read(self) -> int:
        """The protocol's limit on items in one read of this table."""
        return MAX_READ_BITS if self.is_bits else MAX_READ_REGISTERS


class BarrierState(IntEnum):
    """The PLC's state word for one barrier."""

    CLOSED = 0
    OPENING = 1
    OPENED = 2
    CLOSING = 3
    FAULT = 4


class FaultCode(IntEnum):
    """The PLC's fault code word for one barrier."""

    NONE = 0
    OBSTRUCTION = 1
    MOTOR_FAULT = 2
    TRAVEL_TIMEOUT = 3
    EMERGENCY_STOP = 4


class PointRole(StrEnum):
    """What a point of a barrier means; the field names of `BarrierPoints`."""

    OPEN_REQUEST = "open_request"
    CLOSE_REQUEST = "close_request"
    STATE = "state"
    FAULT = "fault"
    HEARTBEAT = "heartbeat"
    POSITION = "position"
    OCCUPIED = "occupied"


ROLE_TABLES: dict[PointRole, frozenset[Table]] = {
    # Requests are coils the bridge writes (FC5) and the PLC resets when it accepts them.
    PointRole.OPEN_REQUEST: frozenset({Table.COIL}),
    PointRole.CLOSE_REQUEST: frozenset({Table.COIL}),
    PointRole.STATE: frozenset({Table.INPUT_REGISTER, Table.HOLDING_REGISTER}),
    PointRole.FAULT: frozenset({Table.INPUT_REGISTER, Table.HOLDING_REGISTER}),
    PointRole.HEARTBEAT: frozenset({Table.INPUT_REGISTER, Table.HOLDING_REGISTER}),
    PointRole.POSITION: frozenset({Table.INPUT_REGISTER, Table.HOLDING_REGISTER}),
    PointRole.OCCUPIED: frozenset({Table.DISCRETE_INPUT, Table.COIL}),
}
"""The tables each role may live in."""


class Point(msgspec.Struct, frozen=True):
    """One address in one table of a PLC."""

    table: Table
    address: int


class BarrierPoints(msgspec.Struct, frozen=True):
    """Every point of one barrier on its PLC endpoint."""

    open_request: Point
    close_request: Point
    state: Point
    fault: Point
    heartbeat: Point
    position: Point
    occupied: Point

    def by_role(self) -> Iterator[tuple[PointRole, Point]]:
        """Yield each point with its role, in declaration order."""
        for role in PointRole:
            yield role, getattr(self, role.value)

    def point(self, role: PointRole) -> Point:
        """Return the point that plays `role`."""
        point: Point = getattr(self, role.value)
        return point


BARRIER_V1_OFFSETS: dict[PointRole, Point] = {
    PointRole.OPEN_REQUEST: Point(Table.COIL, 0),
    PointRole.CLOSE_REQUEST: Point(Table.COIL, 1),
    PointRole.STATE: Point(Table.INPUT_REGISTER, 0),
    PointRole.FAULT: Point(Table.INPUT_REGISTER, 1),
    PointRole.HEARTBEAT: Point(Table.INPUT_REGISTER, 2),
    PointRole.POSITION: Point(Table.INPUT_REGISTER, 3),
    PointRole.OCCUPIED: Point(Table.DISCRETE_INPUT, 0),
}
"""Profile ``barrier-v1``: each point's table and its offset from the barrier's base address."""

BARRIER_V1_STRIDE = 8
"""Addresses between consecutive barrier slots in profile ``barrier-v1``."""


def barrier_v1_points(slot: int, stride: int = BARRIER_V1_STRIDE) -> BarrierPoints:
    """Return the ``barrier-v1`` points of barrier slot `slot` (0-based) on its endpoint."""
    base = slot * stride
    return BarrierPoints(
        **{
            role.value: Point(offset.table, base + offset.address)
            for role, offset in BARRIER_V1_OFFSETS.items()
        }
    )


class PlcEndpoint(msgspec.Struct, frozen=True):
    """One Modbus/TCP server and unit id; it may drive several barriers."""

    name: str
    host: str
    port: int = 502
    unit_id: int = 1
    max_read_registers: int = MAX_READ_REGISTERS
    """Most registers this PLC accepts in one read (some take fewer than 125)."""
    max_read_bits: int = MAX_READ_BITS
    """Most bits this PLC accepts in one read."""
    max_gap: int = 8
    """Unused addresses a merged read may span to save a request."""

    @property
    def address(self) -> str:
        """``host:port/unit`` for logs and messages."""
        return f"{self.host}:{self.port}/{self.unit_id}"


class BarrierConfig(msgspec.Struct, frozen=True):
    """One barrier: its id, name, the endpoint that drives it and its points there."""

    id: int
    name: str
    endpoint: str
    slot: int
    points: BarrierPoints


class RegisterMap(msgspec.Struct, frozen=True):
    """Every endpoint and barrier the system drives."""

    endpoints: tuple[PlcEndpoint, ...]
    barriers: tuple[BarrierConfig, ...]

    def endpoint(self, name: str) -> PlcEndpoint:
        """Return the endpoint called `name`; raise KeyError if there is none."""
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        raise KeyError(name)

    def barrier(self, barrier_id: int) -> BarrierConfig:
        """Return the barrier with id `barrier_id`; raise KeyError if there is none."""
        for barrier in self.barriers:
            if barrier.id == barrier_id:
                return barrier
        raise KeyError(barrier_id)

    def barriers_on(self, endpoint_name: str) -> tuple[BarrierConfig, ...]:
        """Return the barriers driven by the endpoint called `endpoint_name`, in file order."""
        return tuple(b for b in self.barriers if b.endpoint == endpoint_name)


def uniform_register_map(
    endpoints: list[tuple[str, int]],
    barriers_per_endpoint: int,
    *,
    unit_id: int = 1,
    stride: int = BARRIER_V1_STRIDE,
) -> RegisterMap:
    """Build a ``barrier-v1`` map: barriers numbered from 1, `barriers_per_endpoint` on each.

    `endpoints` are ``(host, port)`` pairs; endpoint ``i`` is named ``plc-{i + 1}``.
    """
    plcs = tuple(
        PlcEndpoint(name=f"plc-{i + 1}", host=host, port=port, unit_id=unit_id)
        for i, (host, port) in enumerate(endpoints)
    )
    barriers = tuple(
        BarrierConfig(
            id=e * barriers_per_endpoint + slot + 1,
            name=f"Barrier {e * barriers_per_endpoint + slot + 1}",
            endpoint=plc.name,
            slot=slot,
            points=barrier_v1_points(slot, stride),
        )
        for e, plc in enumerate(plcs)
        for slot in range(barriers_per_endpoint)
    )
    return RegisterMap(endpoints=plcs, barriers=barriers)
