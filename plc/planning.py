"""Pure read planning: cover a set of points with the fewest Modbus read requests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import msgspec

from plc.registers import PlcEndpoint, Point, Table


class ReadRequest(msgspec.Struct, frozen=True):
    """One Modbus read: `count` items of `table` from `address`."""

    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.address + self.count


def merge_addresses(
    table: Table, addresses: Iterable[int], *, max_count: int, max_gap: int
) -> list[ReadRequest]:
    """Cover `addresses` of `table` with the fewest reads of at most `max_count` items.

    Addresses at most `max_gap` unused addresses apart share a read, since reading a few extra
    registers costs far less than a second round trip.
    """
    if max_count < 1:
        raise ValueError("max_count must be at least 1")
    requests: list[ReadRequest] = []
    start = last = -1
    for address in sorted(set(addresses)):
        if start >= 0 and address - last - 1 <= max_gap and address - start < max_count:
            last = address
            continue
        if start >= 0:
            requests.append(ReadRequest(table, start, last - start + 1))
        start = last = address
    if start >= 0:
        requests.append(ReadRequest(table, start, last - start + 1))
    return requests


def plan_reads(endpoint: PlcEndpoint, points: Iterable[Point]) -> tuple[ReadRequest, ...]:
    """Plan the reads that cover `points` on `endpoint`, within its per-request limits."""
    by_table: dict[Table, set[int]] = defaultdict(set)
    for point in points:
        by_table[point.table].add(point.address)
    plan: list[ReadRequest] = []
    for table in Table:
        if table in by_table:
            limit = endpoint.max_read_bits if table.is_bits else endpoint.max_read_registers
            plan += merge_addresses(
                table, by_table[table], max_count=limit, max_gap=endpoint.max_gap
            )
    return tuple(plan)
