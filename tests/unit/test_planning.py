"""Read planning: the fewest requests within the protocol's limits."""

import pytest

from plc.planning import ReadRequest, merge_addresses, plan_reads
from plc.registers import PlcEndpoint, Point, Table, uniform_register_map

pytestmark = pytest.mark.unit

IR = Table.INPUT_REGISTER


@pytest.mark.parametrize(
    ("addresses", "max_count", "max_gap", "expected"),
    [
        ([], 125, 8, []),
        ([5], 125, 8, [(5, 1)]),
        ([0, 1, 2, 3], 125, 0, [(0, 4)]),
        ([3, 1, 2, 0, 2], 125, 0, [(0, 4)]),
        ([0, 1, 2, 3, 8, 9, 10, 11], 125, 4, [(0, 12)]),
        ([0, 1, 2, 3, 8, 9, 10, 11], 125, 3, [(0, 4), (8, 4)]),
        ([0, 1, 2, 3, 8, 9, 10, 11], 6, 8, [(0, 4), (8, 4)]),
        (list(range(300)), 125, 0, [(0, 125), (125, 125), (250, 50)]),
        ([0, 124, 125], 125, 200, [(0, 125), (125, 1)]),
        ([10, 500], 125, 8, [(10, 1), (500, 1)]),
    ],
)
def test_merge_addresses(
    addresses: list[int], max_count: int, max_gap: int, expected: list[tuple[int, int]]
) -> None:
    plan = merge_addresses(IR, addresses, max_count=max_count, max_gap=max_gap)
    assert [(r.address, r.count) for r in plan] == expected
    covered = {a for r in plan for a in range(r.address, r.end)}
    assert set(addresses) <= covered
    assert all(r.count <= max_count for r in plan)


def test_a_whole_barrier_v1_endpoint_takes_one_read_per_table() -> None:
    register_map = uniform_register_map([("127.0.0.1", 502)], 15)
    endpoint = register_map.endpoints[0]
    points = [p for b in register_map.barriers for _, p in b.points.by_role()]
    plan = plan_reads(endpoint, points)
    # 15 barriers x stride 8: input registers 0..115, coils 0..113, discrete inputs 0..112.
    assert plan == (
        ReadRequest(Table.COIL, 0, 114),
        ReadRequest(Table.DISCRETE_INPUT, 0, 113),
        ReadRequest(Table.INPUT_REGISTER, 0, 116),
    )


def test_plans_respect_the_register_limit_and_the_endpoint_override() -> None:
    register_map = uniform_register_map([("127.0.0.1", 502)], 100)
    points = [p for b in register_map.barriers for _, p in b.points.by_role()]
    registers = [r for r in plan_reads(register_map.endpoints[0], points) if r.table is IR]
    # Each read stops at the last used address that fits: 16 whole barriers (0..123), and so on.
    assert [(r.address, r.count) for r in registers] == [(a, 124) for a in range(0, 768, 128)] + [
        (768, 28)
    ]
    small = PlcEndpoint(name="old-plc", host="h", max_read_registers=16, max_gap=8)
    assert [
        (r.address, r.count) for r in plan_reads(small, [Point(IR, a) for a in range(0, 40)])
    ] == [(0, 16), (16, 16), (32, 8)]


def test_rejects_an_empty_limit() -> None:
    with pytest.raises(ValueError, match="max_count"):
        merge_addresses(IR, [1], max_count=0, max_gap=0)
