"""The barrier PLC simulator over real Modbus/TCP and HTTP on loopback."""

from __future__ import annotations

import asyncio
import re
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import pytest
import pytest_asyncio
from pymodbus.client import AsyncModbusTcpClient

from plc.codec import BarrierReading, decode_reading
from plc.registers import (
    BarrierConfig,
    BarrierPoints,
    BarrierState,
    FaultCode,
    PlcEndpoint,
    Point,
    RegisterMap,
    Table,
    uniform_register_map,
)
from simulator import Command, Fault, LinkMode, PlcListenError, Simulator
from simulator.control import ControlServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

TRAVEL = 0.3
SCAN = 0.01
UNIT = 1
T = TypeVar("T")


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator.uniform(
        endpoints=2, barriers_per_endpoint=4, travel_time=TRAVEL, scan_interval=SCAN
    ) as running:
        yield running


async def connect(endpoint: PlcEndpoint) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=0.5, retries=0)
    assert await client.connect()
    return client


@pytest_asyncio.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncModbusTcpClient]:
    client = await connect(sim.register_map.endpoints[0])
    yield client
    client.close()


async def until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Probe every scan until `done` holds for the value probed; fail after 2 s."""
    async with asyncio.timeout(2.0):
        while True:
            value = await probe()
            if done(value):
                return value
            await asyncio.sleep(SCAN)


def without_heartbeat(reading: BarrierReading) -> BarrierReading:
    return msgspec.structs.replace(reading, heartbeat=0)


class RawModbus:
    """A hand-rolled Modbus/TCP master: MBAP header and PDU over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.transaction = 0

    @classmethod
    async def open(cls, endpoint: PlcEndpoint) -> RawModbus:
        return cls(*await asyncio.open_connection(endpoint.host, endpoint.port))

    async def send(self, pdu: bytes) -> None:
        self.transaction += 1
        mbap = struct.pack(">HHHB", self.transaction, 0, len(pdu) + 1, UNIT)
        self.writer.write(mbap + pdu)
        await self.writer.drain()

    async def receive(self) -> bytes:
        transaction, protocol, length, unit = struct.unpack(
            ">HHHB", await self.reader.readexactly(7)
        )
        assert (transaction, protocol, unit) == (self.transaction, 0, UNIT)
        return await self.reader.readexactly(length - 1)

    async def call(self, pdu: bytes) -> bytes:
        await self.send(pdu)
        return await self.receive()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def request(function_code: int, address: int, value: int) -> bytes:
    return struct.pack(">BHH", function_code, address, value)


async def test_the_protocol_byte_for_byte(sim: Simulator) -> None:
    raw = await RawModbus.open(sim.register_map.endpoints[0])
    try:
        # FC4: barrier 1's state, fault, heartbeat and position; then the gap up to slot 1.
        answer = await raw.call(request(4, 0, 8))
        assert answer[:2] == bytes([4, 16])
        state, fault, heartbeat, position, *gap = struct.unpack(">8H", answer[2:])
        assert (state, fault, position, gap) == (BarrierState.CLOSED, FaultCode.NONE, 0, [0] * 4)
        assert heartbeat <= sim.reading(1).heartbeat
        # FC5: write 1 to barrier 1's OPEN coil; the answer echoes the request.
        write = request(5, 0, 0xFF00)
        assert await raw.call(write) == write
        # FC1: the next scan accepts the request and resets the coil.
        await until(lambda: raw.call(request(1, 0, 2)), lambda a: a == bytes([1, 1, 0]))
        answer = await raw.call(request(4, 0, 4))
        assert struct.unpack(">4H", answer[2:])[0] in (BarrierState.OPENING, BarrierState.OPENED)
        # FC2: the loop detector.
        sim.set_occupied(2, True)
        assert await raw.call(request(2, 0, 16)) == bytes([2, 2, 0b0000_0000, 0b0000_0001])
        # Four barriers with a stride of 8 serve input registers 0..31; 32 is beyond the PLC.
        assert (await raw.call(request(4, 31, 1)))[:2] == bytes([4, 2])
        assert await raw.call(request(4, 31, 2)) == bytes([0x84, 2])  # ILLEGAL_ADDRESS
        assert await raw.call(request(3, 0, 1)) == bytes([0x83, 2])  # no holding registers
        assert await raw.call(request(6, 0, 1)) == bytes([0x86, 1])  # ILLEGAL_FUNCTION
    finally:
        await raw.close()


async def test_readings_decode_to_the_physics_truth(
    sim: Simulator, client: AsyncModbusTcpClient
) -> None:
    sim.set_occupied(2, True)
    sim.inject_fault(3, Fault.MOTOR_FAULT)
    sim.local_command(4, Command.OPEN)
    sim.set_link("plc-1", LinkMode.FROZEN)  # so that no scan accepts the coil before the reads
    await client.write_coil(sim.register_map.barrier(1).points.close_request.address, True)
    registers = await client.read_input_registers(0, count=32, device_id=UNIT)
    inputs = await client.read_discrete_inputs(0, count=32, device_id=UNIT)
    coils = await client.read_coils(0, count=32, device_id=UNIT)
    image = {
        Table.INPUT_REGISTER: dict(enumerate(registers.registers)),
        Table.DISCRETE_INPUT: dict(enumerate(int(b) for b in inputs.bits)),
        Table.COIL: dict(enumerate(int(b) for b in coils.bits)),
    }
    for barrier in sim.register_map.barriers_on("plc-1"):
        read = decode_reading(barrier.points, image)
        truth = sim.reading(barrier.id)
        assert read == truth
    assert sim.reading(1).close_pending
    assert sim.reading(2).occupied
    assert sim.reading(3).fault is FaultCode.MOTOR_FAULT
    assert sim.reading(4).state is BarrierState.OPENING


async def test_a_barrier_opens_and_closes_over_modbus(
    sim: Simulator, client: AsyncModbusTcpClient
) -> None:
    barrier = sim.register_map.barrier(2)
    seen: list[tuple[int, int]] = []  # (state, position), each change once

    async def status() -> tuple[int, int]:
        answer = await client.read_input_registers(
            barrier.points.state.address, count=4, device_id=UNIT
        )
        state, _, _, position = answer.registers
        if not seen or seen[-1] != (state, position):
            seen.append((state, position))
        return state, position

    async def drive(coil: Point, target: BarrierState) -> None:
        started = time.monotonic()
        await client.write_coil(coil.address, True, device_id=UNIT)
        await until(status, lambda s: s[0] == target)
        assert time.monotonic() - started >= TRAVEL * 0.9

    await status()
    await drive(barrier.points.open_request, BarrierState.OPENED)
    await drive(barrier.points.close_request, BarrierState.CLOSED)
    states = [s for i, (s, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != s]
    assert states == [
        BarrierState.CLOSED,
        BarrierState.OPENING,
        BarrierState.OPENED,
        BarrierState.CLOSING,
        BarrierState.CLOSED,
    ]
    opening = [p for s, p in seen if s == BarrierState.OPENING]
    closing = [p for s, p in seen if s == BarrierState.CLOSING]
    assert opening == sorted(opening)
    assert closing == sorted(closing, reverse=True)
    assert min(len(opening), len(closing)) > 2, "the position moves through the stroke"
    assert seen[-1] == (BarrierState.CLOSED, 0)


async def test_coil_writes_are_journalled_with_when_the_barrier_rests(
    sim: Simulator, client: AsyncModbusTcpClient
) -> None:
    barrier = sim.register_map.barrier(2)
    before = time.time()
    await client.write_coil(barrier.points.open_request.address, True, device_id=UNIT)
    after = time.time()
    [write] = sim.coil_writes()
    opened = (1, 2, Command.OPEN, "opened")
    assert (write.seq, write.barrier_id, write.command, write.rest_state) == opened
    assert before <= write.written_at <= after
    assert write.rests_at is not None
    # Accepted at the next scan boundary, then a full stroke.
    assert TRAVEL <= write.rests_at - write.written_at <= TRAVEL + SCAN + 1e-6

    async def state() -> int:
        answer = await client.read_input_registers(
            barrier.points.state.address, count=1, device_id=UNIT
        )
        return answer.registers[0]

    await until(state, lambda s: s == BarrierState.OPENED)
    assert time.time() >= write.rests_at - 0.002, "OPENED is read no earlier than predicted"

    sim.set_occupied(2, True)
    await client.write_coil(barrier.points.close_request.address, True, device_id=UNIT)
    [refused] = sim.coil_writes(after=write.seq)
    refused_close = (2, Command.CLOSE, None, None)  # a close is refused while occupied
    assert (refused.seq, refused.command, refused.rests_at, refused.rest_state) == refused_close
    await client.write_coil(barrier.points.close_request.address, False, device_id=UNIT)
    assert sim.coil_writes(after=refused.seq) == [], "only a 1 written is journalled"


async def test_requests_are_counted_by_function_code(
    sim: Simulator, client: AsyncModbusTcpClient
) -> None:
    sim.reset_request_counts()
    for _ in range(3):
        await client.read_input_registers(0, count=4, device_id=UNIT)
    await client.read_coils(0, count=2, device_id=UNIT)
    await client.write_coil(1, True, device_id=UNIT)
    refused = await client.read_input_registers(1000, count=1, device_id=UNIT)
    assert refused.isError()
    assert sim.request_counts("plc-1") == {4: 4, 1: 1, 5: 1}
    assert sim.request_count("plc-1") == 6
    assert sim.request_count("plc-2") == 0
    sim.reset_request_counts()
    assert sim.request_counts("plc-1") == {}


async def test_a_silent_link_keeps_connections_and_answers_nothing(sim: Simulator) -> None:
    raw = await RawModbus.open(sim.register_map.endpoints[0])
    try:
        await raw.call(request(4, 0, 1))
        await sim.set_link_async("plc-1", LinkMode.SILENT)
        sim.reset_request_counts()
        await raw.send(request(5, 0, 0xFF00))  # OPEN barrier 1: lost in the silence
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(10 * SCAN):
                await raw.receive()
        assert not raw.reader.at_eof()
        assert sim.request_count("plc-1") == 0
        await sim.set_link_async("plc-1", LinkMode.UP)
        # The same connection answers again; the request sent into the silence never is.
        answer = await raw.call(request(4, 0, 1))
        assert answer[:2] == bytes([4, 2])
        assert sim.reading(1).state is BarrierState.CLOSED
        assert sim.request_counts("plc-1") == {4: 1}
    finally:
        await raw.close()


async def test_a_closed_link_drops_connections_and_refuses_new_ones(sim: Simulator) -> None:
    endpoint = sim.register_map.endpoints[0]
    raw = await RawModbus.open(endpoint)
    sim.set_link(endpoint.name, LinkMode.CLOSED)
    assert await raw.reader.read() == b""  # the PLC hung up
    await raw.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(endpoint.host, endpoint.port)
    await sim.set_link_async(endpoint.name, LinkMode.UP)
    assert sim.register_map.endpoints[0].port == endpoint.port
    client = await connect(endpoint)
    assert not (await client.read_input_registers(0, count=4, device_id=UNIT)).isError()
    client.close()
    # Without awaiting, the port listens again shortly after.
    sim.set_link(endpoint.name, LinkMode.CLOSED)
    sim.set_link(endpoint.name, LinkMode.UP)
    client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=0.5, retries=0)
    assert await until(client.connect, bool)
    client.close()


async def test_a_frozen_plc_answers_but_its_scan_has_stopped(
    sim: Simulator, client: AsyncModbusTcpClient
) -> None:
    sim.local_command(2, Command.OPEN)
    sim.set_link("plc-1", LinkMode.FROZEN)

    async def barrier_1_and_2() -> list[int]:
        return list((await client.read_input_registers(0, count=12, device_id=UNIT)).registers)

    before = await barrier_1_and_2()
    await client.write_coil(0, True, device_id=UNIT)  # OPEN barrier 1
    await asyncio.sleep(10 * SCAN)  # ten scans' time, in which nothing may change
    assert await barrier_1_and_2() == before
    assert (await client.read_coils(0, count=1, device_id=UNIT)).bits[0], "not accepted"
    assert sim.reading(1).state is BarrierState.CLOSED
    sim.set_link("plc-1", LinkMode.UP)
    # Barrier 1 accepts its coil on the first scan; barrier 2 moves on (travel resumes where
    # it stopped, so right after the first scan it may not have moved a whole percent yet).
    after = await until(
        barrier_1_and_2, lambda r: r[0] != BarrierState.CLOSED and r[8 + 3] > before[8 + 3]
    )
    assert after[0] in (BarrierState.OPENING, BarrierState.OPENED)
    assert after[2] > before[2], "the heartbeat runs again"


async def test_exception_replies(sim: Simulator, client: AsyncModbusTcpClient) -> None:
    sim.set_link("plc-1", LinkMode.FROZEN)  # a write that got through would stay pending
    sim.set_exception_reply("plc-1", 4)
    read = await client.read_input_registers(0, count=4, device_id=UNIT)
    write = await client.write_coil(0, True, device_id=UNIT)
    assert (read.exception_code, write.exception_code) == (4, 4)
    sim.set_exception_reply("plc-1", None)
    assert not (await client.read_coils(0, count=1, device_id=UNIT)).bits[0], "never written"
    assert not sim.reading(1).open_pending
    assert not (await client.read_input_registers(0, count=4, device_id=UNIT)).isError()
    with pytest.raises(ValueError, match="99"):
        sim.set_exception_reply("plc-1", 99)


async def test_reply_delay(sim: Simulator, client: AsyncModbusTcpClient) -> None:
    sim.set_reply_delay("plc-1", 0.2)
    started = time.monotonic()
    await client.read_input_registers(0, count=4, device_id=UNIT)
    assert time.monotonic() - started >= 0.2
    sim.set_reply_delay("plc-1", 0)
    started = time.monotonic()
    await client.read_input_registers(0, count=4, device_id=UNIT)
    assert time.monotonic() - started < 0.1
    with pytest.raises(ValueError, match="negative"):
        sim.set_reply_delay("plc-1", -1)


def points(base: int) -> BarrierPoints:
    """Return a layout unlike barrier-v1: status in holding registers, occupancy in a coil."""
    return BarrierPoints(
        open_request=Point(Table.COIL, 10),
        close_request=Point(Table.COIL, 11),
        state=Point(Table.HOLDING_REGISTER, base),
        fault=Point(Table.HOLDING_REGISTER, base + 1),
        heartbeat=Point(Table.HOLDING_REGISTER, base + 2),
        position=Point(Table.HOLDING_REGISTER, base + 3),
        occupied=Point(Table.COIL, 40),
    )


async def test_points_live_where_the_map_says() -> None:
    barrier = BarrierConfig(id=7, name="Gate", endpoint="odd", slot=0, points=points(100))
    odd = RegisterMap(
        endpoints=(PlcEndpoint(name="odd", host="127.0.0.1", port=0, unit_id=3),),
        barriers=(barrier,),
    )
    async with Simulator(odd, travel_time=TRAVEL, scan_interval=SCAN) as sim:
        client = await connect(sim.register_map.endpoints[0])
        try:
            sim.set_occupied(7, True)
            registers = await client.read_holding_registers(100, count=12, device_id=3)
            assert registers.registers[4:] == [0] * 8, "up to 111 is served, unused reads 0"
            coils = await client.read_coils(0, count=48, device_id=3)
            image = {
                Table.HOLDING_REGISTER: dict(enumerate(registers.registers, start=100)),
                Table.COIL: dict(enumerate(int(b) for b in coils.bits)),
            }
            assert without_heartbeat(decode_reading(barrier.points, image)) == without_heartbeat(
                sim.reading(7)
            )
            assert sim.reading(7).occupied
            beyond = (
                client.read_holding_registers(112, count=1, device_id=3),
                client.read_coils(48, count=1, device_id=3),
                client.read_input_registers(0, count=1, device_id=3),  # tables it does not use
                client.read_discrete_inputs(0, count=1, device_id=3),
            )
            for read in beyond:
                assert (await read).exception_code == 2
            await client.write_coil(10, True, device_id=3)

            async def state() -> int:
                answer = await client.read_holding_registers(100, count=1, device_id=3)
                return int(answer.registers[0])

            await until(state, lambda s: s == BarrierState.OPENING)
        finally:
            client.close()


async def test_clashing_points_are_refused() -> None:
    a = BarrierConfig(id=1, name="A", endpoint="plc", slot=0, points=points(100))
    b = BarrierConfig(id=2, name="B", endpoint="plc", slot=1, points=points(102))
    clash = RegisterMap(
        endpoints=(PlcEndpoint(name="plc", host="127.0.0.1", port=0),), barriers=(a, b)
    )
    with pytest.raises(
        ValueError, match="barrier 2 open_request at coil 10 clashes with barrier 1"
    ):
        Simulator(clash)


async def test_a_taken_port_is_a_clear_error(sim: Simulator) -> None:
    taken = sim.register_map.endpoints[1].port
    clash = Simulator(uniform_register_map([("127.0.0.1", 0), ("127.0.0.1", taken)], 1))
    with pytest.raises(PlcListenError, match=f"PLC plc-2 cannot listen on 127.0.0.1:{taken}"):
        await clash.start()
    with pytest.raises(ConnectionRefusedError):  # plc-1 listened, and was closed again
        await asyncio.open_connection("127.0.0.1", clash.register_map.endpoints[0].port)


async def http(
    control: ControlServer, method: str, path: str, body: bytes = b""
) -> tuple[int, Any]:
    """Send one HTTP/1.1 request and return the status and the decoded JSON answer."""
    port = int(control.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, payload = answer.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), msgspec.json.decode(payload)


async def test_the_control_interface(sim: Simulator) -> None:
    async with ControlServer(sim, port=0) as control:
        status, barriers = await http(control, "GET", "/barriers")
        assert status == 200
        assert [(b["id"], b["state"]) for b in barriers] == [(i, "closed") for i in range(1, 9)]

        status, barrier = await http(control, "POST", "/barriers/1/local", b'{"command": "open"}')
        assert (status, barrier["state"]) == (200, "opening")
        status, barrier = await http(control, "POST", "/barriers/2/fault", b'{"fault": "stuck"}')
        assert (status, barrier["injected_fault"]) == (200, "stuck")
        assert sim.injected_fault(2) is Fault.STUCK
        await http(control, "POST", "/barriers/2/fault", b'{"fault": null}')
        assert sim.injected_fault(2) is None
        status, barrier = await http(control, "POST", "/barriers/3/occupied", b'{"occupied": true}')
        assert (status, barrier["occupied"], sim.reading(3).occupied) == (200, True, True)

        status, endpoint = await http(
            control, "POST", "/endpoints/plc-2/link", b'{"mode": "closed"}'
        )
        assert (status, endpoint["link"]) == (200, "closed")
        status, endpoint = await http(control, "POST", "/endpoints/plc-2/link", b'{"mode": "up"}')
        assert (status, endpoint["link"]) == (200, "up")
        (await connect(sim.register_map.endpoint("plc-2"))).close()  # listening again
        await http(control, "POST", "/endpoints/plc-2/delay", b'{"seconds": 0.25}')
        await http(control, "POST", "/endpoints/plc-2/exception", b'{"code": 6}')
        faults = sim.link_faults("plc-2")
        assert (faults.reply_delay, faults.exception_reply) == (0.25, 6)
        status, endpoints = await http(control, "GET", "/endpoints")
        assert (status, endpoints[1]["exception_reply"]) == (200, 6)

        for method, path, body, expected_status, error in (
            ("POST", "/barriers/1/local", b'{"command":', 400, "invalid_json"),
            ("POST", "/barriers/1/local", b'{"command": "wiggle"}', 400, "invalid_body"),
            ("POST", "/barriers/1/local", b"{}", 400, "invalid_body"),
            ("POST", "/barriers/99/local", b'{"command": "open"}', 404, "unknown_barrier"),
            ("POST", "/barriers/x/local", b'{"command": "open"}', 404, "unknown_barrier"),
            ("POST", "/endpoints/nope/delay", b'{"seconds": 1}', 404, "unknown_endpoint"),
            ("POST", "/endpoints/plc-1/delay", b'{"seconds": -1}', 400, "invalid_body"),
            ("GET", "/barriers/1/local", b"", 405, "method_not_allowed"),
            ("GET", "/nowhere", b"", 404, "not_found"),
        ):
            status, answer = await http(control, method, path, body)
            assert (status, answer["error"]) == (expected_status, error), path
            assert answer["message"]

        status, answer = await http(control, "BREW", "/barriers/1/local", b"")
        assert (status, answer["error"]) == (405, "method_not_allowed")
        port = int(control.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"nonsense\r\n\r\n")
        assert b"400 Bad Request" in await reader.read()
        writer.close()
        assert (await http(control, "GET", "/barriers"))[0] == 200, "still serving"


async def test_the_control_interface_lists_coil_writes(
    sim: Simulator, client: AsyncModbusTcpClient
) -> None:
    other = await connect(sim.register_map.endpoint("plc-2"))
    try:
        open_1 = sim.register_map.barrier(1).points.open_request
        close_5 = sim.register_map.barrier(5).points.close_request
        await client.write_coil(open_1.address, True, device_id=UNIT)
        await other.write_coil(close_5.address, True, device_id=UNIT)
    finally:
        other.close()
    async with ControlServer(sim, port=0) as control:
        status, answer = await http(control, "GET", "/writes")
        assert status == 200
        assert [(w["seq"], w["barrier_id"], w["command"]) for w in answer["writes"]] == [
            (1, 1, "open"),
            (2, 5, "close"),
        ]
        first, second = answer["writes"]
        assert first["rest_state"] == "opened"
        assert first["rests_at"] == pytest.approx(first["written_at"] + TRAVEL, abs=2 * SCAN)
        assert second["rest_state"] == "closed"  # already closed: at rest once accepted
        assert second["written_at"] <= second["rests_at"] <= second["written_at"] + 2 * SCAN
        assert await http(control, "GET", "/writes?after=1") == (200, {"writes": [second]})
        assert await http(control, "GET", "/writes?after=2") == (200, {"writes": []})

        for path in (
            "/writes?after=x",
            "/writes?after=-1",
            "/writes?after=",
            "/writes?after=1&after=2",
        ):
            status, answer = await http(control, "GET", path)
            assert (status, answer["error"]) == (400, "invalid_query"), path
            assert answer["message"]
        status, answer = await http(control, "POST", "/writes")
        assert (status, answer["error"]) == (405, "method_not_allowed")


async def test_the_command_line_serves_until_interrupted() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--endpoints=1",
        "--barriers-per-endpoint=2",
        "--port=0",
        "--control-port=0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        match = re.fullmatch(r"plc-1 modbus://127\.0\.0\.1:(\d+)/1 barriers \[1, 2\]\n", line)
        assert match, line
        endpoint = PlcEndpoint(name="plc-1", host="127.0.0.1", port=int(match[1]))
        client = await connect(endpoint)
        assert (await client.read_input_registers(0, count=16, device_id=UNIT)).registers[3] == 0
        client.close()
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
