"""One simulated barrier PLC per endpoint, served over Modbus/TCP by pymodbus.

Each PLC answers from the physics at the moment of the request: pymodbus calls `PlcServer`'s
action hook before it answers, and the hook fills only the addresses asked for. The PLC implements
FC1, FC2, FC3, FC4 (reads), FC5 and FC15 (coil writes); any other function is refused with
ILLEGAL_FUNCTION. The address rule is in `simulator.layout`.

Endpoint faults: a reply delay, an exception answered to every request, and the link modes of
`LinkMode`. The delay and the exception act on every request that reaches the datastore; one that
pymodbus refuses before that (an address beyond its blocks, an unknown function code, an unknown
unit id) is answered at once. A silent link drops every reply. Requests are counted as they
arrive, unless the link is silent.

pymodbus's server answers one request per connection at a time, so a master must wait for each
answer: of two requests sent together only the first is answered, and a request sent while the
previous one is still delayed makes both answers carry its transaction id. A request for another
unit id is answered with exception 4 (DEVICE_FAILURE), and pymodbus logs a traceback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum

import msgspec
from msgspec.structs import replace
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from plc.codec import BarrierReading, encode_reading
from plc.registers import BarrierConfig, PlcEndpoint, Point, Table
from simulator.layout import WORD_BITS, EndpointLayout, TableLayout, endpoint_layout
from simulator.physics import (
    Barrier,
    Command,
    Fault,
    Mechanics,
    PlcClock,
    advance,
    observe,
    plc_time,
    rest_after,
    resume_scan,
    stop_scan,
    write_request,
)

log = logging.getLogger(__name__)

BarrierEvent = Callable[[Barrier, float], Barrier]
"""Something that happens to a barrier at a PLC time, as a pure function of the model."""

_FUNCTION_TABLES: dict[int, Table] = {
    1: Table.COIL,
    2: Table.DISCRETE_INPUT,
    3: Table.HOLDING_REGISTER,
    4: Table.INPUT_REGISTER,
    5: Table.COIL,
    15: Table.COIL,
}
"""The function codes the PLC implements and the table each one reads or writes."""

_WRITE_SINGLE_COIL = 5

JOURNAL_SIZE = 100_000
"""Most coil writes each PLC remembers; the oldest are forgotten first."""


class LinkMode(StrEnum):
    """How an endpoint's network link behaves."""

    UP = "up"
    """Listening and answering."""
    SILENT = "silent"
    """Connections are accepted and stay open, but no request reaches the PLC or is answered."""
    CLOSED = "closed"
    """Open connections are closed and the port stops listening."""
    FROZEN = "frozen"
    """Answering, but the PLC's scan has stopped: no heartbeat, no motion, no coil accepted.

    Changes made meanwhile through the simulator (occupancy, faults, the push button) take
    effect as of the moment the scan stopped.
    """


class LinkFaults(msgspec.Struct, frozen=True):
    """The communication faults injected into one endpoint."""

    mode: LinkMode = LinkMode.CLOSED
    reply_delay: float = 0.0
    """Seconds each request waits before the PLC handles it."""
    exception_reply: ExcCodes | None = None
    """The Modbus exception answered to every request, if any."""


class CoilWrite(msgspec.Struct, frozen=True, gc=False):
    """A 1 written to a request coil, and when the PLC's physics says the barrier will rest.

    The rest is predicted at the write, as if nothing else happened to the barrier and its scan
    ran on: a later write, fault, vehicle or frozen scan can make it wrong.
    """

    seq: int
    """Counts coil writes across the simulator, from 1."""
    barrier_id: int
    command: Command
    written_at: float
    """Wall-clock time (`time.time()`) the write reached the PLC."""
    rests_at: float | None
    """Wall-clock time the barrier rests where the command sends it; None if it never does."""
    rest_state: str | None
    """``opened`` or ``closed``; None if the barrier never rests there."""


class PlcListenError(RuntimeError):
    """A simulated PLC could not listen on its endpoint's address."""


def _blocks(layout: EndpointLayout, table: Table) -> list[SimData]:
    """Return pymodbus's storage for one table: at least the served size, all zero."""
    count = max(layout.tables[table].size, WORD_BITS)  # the hook refuses what is not served
    if table.is_bits:
        return [SimData(0, count=count, values=False, datatype=DataType.BITS)]
    return [SimData(0, count=count, datatype=DataType.REGISTERS)]


class PlcServer:
    """One simulated PLC: the barriers of one endpoint, its scan clock and its Modbus/TCP server."""

    def __init__(
        self,
        endpoint: PlcEndpoint,
        barriers: Sequence[BarrierConfig],
        mechanics: Mechanics,
        *,
        write_seq: Iterator[int] | None = None,
    ) -> None:
        """Simulate `barriers` on `endpoint`; `write_seq` numbers coil writes (shared to merge)."""
        self._endpoint = endpoint
        self._configs = tuple(barriers)
        self._layout: EndpointLayout = endpoint_layout(endpoint.name, self._configs)
        self._barriers = [Barrier(mechanics=mechanics) for _ in self._configs]
        self._clock = PlcClock(origin=time.monotonic())
        self._faults = LinkFaults()
        self._counts: Counter[int] = Counter()
        self._write_seq = itertools.count(1) if write_seq is None else write_seq
        self._journal: deque[CoilWrite] = deque(maxlen=JOURNAL_SIZE)
        self._device = SimDevice(
            id=endpoint.unit_id,
            simdata=(
                _blocks(self._layout, Table.COIL),
                _blocks(self._layout, Table.DISCRETE_INPUT),
                _blocks(self._layout, Table.HOLDING_REGISTER),
                _blocks(self._layout, Table.INPUT_REGISTER),
            ),
            action=self._on_request,
        )
        self._server: ModbusTcpServer | None = None
        self._listen_task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> PlcEndpoint:
        """The endpoint served, with the port actually bound once it has listened."""
        return self._endpoint

    @property
    def faults(self) -> LinkFaults:
        """The communication faults currently injected."""
        return self._faults

    def _now(self) -> float:
        return plc_time(self._clock, time.monotonic())

    # Barriers.

    def reading(self, index: int) -> BarrierReading:
        """Return what the PLC reports now about its barrier number `index`."""
        return observe(self._barriers[index], self._now())

    def injected_fault(self, index: int) -> Fault | None:
        """Return the fault injected into barrier number `index`, if any."""
        return self._barriers[index].injected

    def change(self, index: int, event: BarrierEvent) -> None:
        """Let `event` happen now to barrier number `index`."""
        self._barriers[index] = event(self._barriers[index], self._now())

    # Link faults.

    def set_link(self, mode: LinkMode) -> None:
        """Switch the link to `mode`; leaving CLOSED starts listening in the background."""
        now = time.monotonic()
        if mode is LinkMode.FROZEN:
            self._clock = stop_scan(self._clock, now)
        else:
            self._clock = resume_scan(self._clock, now)
        self._faults = replace(self._faults, mode=mode)
        if mode is LinkMode.CLOSED:
            self._stop_listening()
        elif self._server is None and (self._listen_task is None or self._listen_task.done()):
            self._listen_task = asyncio.create_task(
                self._listen(), name=f"listen {self._endpoint.name}"
            )
            self._listen_task.add_done_callback(self._log_listen_failure)

    async def listening(self) -> None:
        """Wait until listening started by `set_link` is done; raise PlcListenError if it failed."""
        task = self._listen_task
        if task is None:
            return
        await asyncio.wait({task})
        if not task.cancelled():
            task.result()

    def set_reply_delay(self, seconds: float) -> None:
        """Make every request wait `seconds` before the PLC handles it (0 for none)."""
        if seconds < 0:
            raise ValueError(f"a reply delay cannot be negative, got {seconds}")
        self._faults = replace(self._faults, reply_delay=seconds)

    def set_exception_reply(self, code: ExcCodes | None) -> None:
        """Answer every request with the Modbus exception `code`, or normally again with None."""
        self._faults = replace(self._faults, exception_reply=code)

    def request_counts(self) -> dict[int, int]:
        """Return the requests received, by function code, since the last reset."""
        return dict(self._counts)

    def reset_request_counts(self) -> None:
        """Start counting requests from zero."""
        self._counts.clear()

    def coil_writes(self, after: int = 0) -> list[CoilWrite]:
        """Return the request-coil writes journalled with a `seq` above `after`, oldest first."""
        newer = itertools.takewhile(lambda w: w.seq > after, reversed(self._journal))
        return list(newer)[::-1]

    async def start(self) -> None:
        """Bring the link up and wait until the PLC listens."""
        self.set_link(LinkMode.UP)
        await self.listening()

    async def close(self) -> None:
        """Close the link and every connection."""
        task = self._listen_task
        self.set_link(LinkMode.CLOSED)
        if task is not None:
            await asyncio.wait({task})  # a cancelled listen closes what it opened

    def _stop_listening(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            self._listen_task = None
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _listen(self) -> None:
        host, port = self._endpoint.host, self._endpoint.port
        server = ModbusTcpServer(
            self._device,
            address=(host, port),
            trace_pdu=self._on_pdu,
            trace_packet=self._on_packet,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus logs the OSError and raises this instead
            raise PlcListenError(
                f"PLC {self._endpoint.name} cannot listen on {host}:{port}; is the port taken?"
            ) from exc
        except asyncio.CancelledError:
            server.close()
            raise
        # pymodbus keeps the asyncio.Server as its listener's transport.
        listener = server.transport
        assert isinstance(listener, asyncio.Server)
        bound_port: int = listener.sockets[0].getsockname()[1]
        self._endpoint = replace(self._endpoint, port=bound_port)
        self._server = server

    def _log_listen_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s", exc)

    # pymodbus hooks.

    def _on_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """Count each request as it arrives (pymodbus's trace_pdu hook)."""
        if not sending and self._faults.mode is not LinkMode.SILENT:
            self._counts[pdu.function_code] += 1
        return pdu

    def _on_packet(self, sending: bool, packet: bytes) -> bytes:
        """Drop every reply while the link is silent (pymodbus's trace_packet hook)."""
        return b"" if sending and self._faults.mode is LinkMode.SILENT else packet

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Answer one datastore access from the physics (pymodbus's SimDevice action hook).

        `start_address` is the address of ``registers[0]``; for bit tables, `address` is a bit
        address while `start_address` and `count` are in 16-bit words.
        """
        if function_code == _WRITE_SINGLE_COIL and set_values is None:
            return None  # pymodbus re-reads a single-coil write to echo it: echo what was written
        if self._faults.reply_delay:
            await asyncio.sleep(self._faults.reply_delay)
        if self._faults.mode in (LinkMode.SILENT, LinkMode.CLOSED):
            return ExcCodes.GATEWAY_NO_RESPONSE  # dropped: the request never reached the PLC
        if self._faults.exception_reply is not None:
            return self._faults.exception_reply
        table = _FUNCTION_TABLES.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        layout = self._layout.tables[table]
        if table.is_bits:
            first = address // WORD_BITS * WORD_BITS
            end = first + count * WORD_BITS
        else:
            first, end = address, address + count
        if end > layout.size:
            return ExcCodes.ILLEGAL_ADDRESS
        now = self._now()
        if set_values is not None:
            self._write_coils(address, set_values, now)
            return None
        values = self._point_values(layout, first, end, now)
        if table.is_bits:  # pymodbus keeps bits packed 16 to a register, bit 0 the lowest
            words = [0] * count
            for at, value in values:
                words[(at - first) // WORD_BITS] |= value << (at % WORD_BITS)
            start = first // WORD_BITS - start_address
            registers[start : start + count] = words
        else:
            registers[first - start_address : end - start_address] = [0] * count
            for at, value in values:
                registers[at - start_address] = value
        return None

    def _write_coils(self, address: int, bits: list[int] | list[bool], now: float) -> None:
        """Write request coils at PLC time `now`, journalling each 1 written."""
        wall = time.time()
        for offset, bit in enumerate(bits):
            target = self._layout.request_coils.get(address + offset)
            if target is not None:
                index, command = target
                barrier = self._barriers[index] = write_request(
                    self._barriers[index], command, bool(bit), now
                )
                if bit:
                    self._journal.append(self._journal_entry(index, command, barrier, now, wall))

    def _journal_entry(
        self, index: int, command: Command, barrier: Barrier, now: float, wall: float
    ) -> CoilWrite:
        """Return the journal entry for `command` just written to barrier `index` at `now`."""
        rest = rest_after(barrier, command)
        return CoilWrite(
            seq=next(self._write_seq),
            barrier_id=self._configs[index].id,
            command=command,
            written_at=wall,
            rests_at=None if rest is None else wall + (rest.at - now),
            rest_state=None if rest is None else rest.state.name.lower(),
        )

    def _point_values(
        self, layout: TableLayout, first: int, end: int, now: float
    ) -> Iterator[tuple[int, int]]:
        """Yield the address and value at `now` of each barrier point in ``first .. end - 1``."""
        images: dict[int, dict[Point, int]] = {}
        for owner, point in layout.within(first, end):
            image = images.get(owner)
            if image is None:
                image = images[owner] = self._image(owner, now)
            yield point.address, image[point]

    def _image(self, index: int, now: float) -> dict[Point, int]:
        """Return the value of every point of barrier number `index` at `now`."""
        barrier = self._barriers[index] = advance(self._barriers[index], now)
        points = self._configs[index].points
        reading = observe(barrier, now)
        image = encode_reading(points, reading)
        image[points.open_request] = int(reading.open_pending)
        image[points.close_request] = int(reading.close_pending)
        return image
