"""Where each barrier's points sit in the four tables of one simulated PLC, and how much it serves.

Address rule: each table answers addresses ``0 .. N-1``, where N is one past the highest address
any barrier uses in that table, rounded up to a multiple of 16 (a whole word of packed bits, which
is also the granularity pymodbus stores bits in). Addresses below N that no barrier uses read as 0;
a request reaching N or beyond is answered with ILLEGAL_ADDRESS, as is any request to a table no
barrier uses.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import msgspec

from plc.registers import MAX_ADDRESS, ROLE_TABLES, BarrierConfig, Point, PointRole, Table
from simulator.physics import Command

WORD_BITS = 16
"""Bits per register word; the served size of every table is a multiple of it."""

REQUEST_ROLES: dict[PointRole, Command] = {
    PointRole.OPEN_REQUEST: Command.OPEN,
    PointRole.CLOSE_REQUEST: Command.CLOSE,
}
"""The request coils and the command a write of 1 to each asks for."""


class TableLayout(msgspec.Struct, frozen=True):
    """One table of one PLC: how far it is served and the barrier points in it."""

    size: int
    """How many addresses, from 0, the table answers."""
    points: tuple[tuple[int, Point], ...]
    """Each point in the table with the index on the endpoint of its barrier, by address."""
    addresses: tuple[int, ...]
    """The address of each of `points`, for bisection."""

    def within(self, first: int, end: int) -> tuple[tuple[int, Point], ...]:
        """Return the points at addresses ``first .. end - 1``, with their barrier's index."""
        return self.points[bisect_left(self.addresses, first) : bisect_left(self.addresses, end)]


class EndpointLayout(msgspec.Struct, frozen=True):
    """The four tables of one PLC and its request coils."""

    tables: dict[Table, TableLayout]
    request_coils: dict[int, tuple[int, Command]]
    """Per coil address, the barrier index and the command its request coil asks for."""


def served_size(highest_address: int | None) -> int:
    """Return how many addresses a table answers whose highest used address is given."""
    if highest_address is None:
        return 0
    return -(-(highest_address + 1) // WORD_BITS) * WORD_BITS


def endpoint_layout(endpoint: str, barriers: Iterable[BarrierConfig]) -> EndpointLayout:
    """Lay out the barriers of `endpoint`; raise ValueError if their points clash or misfit."""
    owners: dict[Table, dict[int, tuple[int, BarrierConfig, PointRole]]] = {t: {} for t in Table}
    request_coils: dict[int, tuple[int, Command]] = {}
    for index, barrier in enumerate(barriers):
        for role, point in barrier.points.by_role():
            where = f"{endpoint}: barrier {barrier.id} {role.value} at {point.table.value}"
            if point.table not in ROLE_TABLES[role]:
                raise ValueError(f"{where} {point.address}: that table cannot hold a {role.value}")
            if not 0 <= point.address <= MAX_ADDRESS:
                raise ValueError(f"{where} {point.address}: outside 0..{MAX_ADDRESS}")
            clash = owners[point.table].get(point.address)
            if clash is not None:
                _, other, other_role = clash
                raise ValueError(
                    f"{where} {point.address} clashes with barrier {other.id} {other_role.value}"
                )
            owners[point.table][point.address] = (index, barrier, role)
            if role in REQUEST_ROLES:
                request_coils[point.address] = (index, REQUEST_ROLES[role])
    tables = {}
    for table, used in owners.items():
        points = tuple((used[a][0], Point(table, a)) for a in sorted(used))
        tables[table] = TableLayout(
            size=served_size(max(used, default=None)),
            points=points,
            addresses=tuple(point.address for _, point in points),
        )
    return EndpointLayout(tables=tables, request_coils=request_coils)
