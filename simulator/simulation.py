"""The in-process simulator: every endpoint of a register map as a barrier PLC on Modbus/TCP."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from types import TracebackType
from typing import Self

from pymodbus.constants import ExcCodes

import simulator.physics as physics
from plc.codec import BarrierReading
from plc.registers import BarrierConfig, RegisterMap, uniform_register_map
from simulator.physics import Command, Fault, Mechanics
from simulator.server import CoilWrite, LinkFaults, LinkMode, PlcServer


class UnknownBarrierError(KeyError):
    """No barrier of the simulated register map has this id."""


class UnknownEndpointError(KeyError):
    """No endpoint of the simulated register map has this name."""


class Simulator:
    """Barrier PLCs for every endpoint of a register map; use as ``async with``.

    Port 0 in the map means "any free port": `register_map` gives the ports actually bound.
    """

    def __init__(
        self, register_map: RegisterMap, *, travel_time: float = 3.0, scan_interval: float = 0.05
    ) -> None:
        if travel_time <= 0 or scan_interval <= 0:
            raise ValueError("travel_time and scan_interval must be positive")
        mechanics = Mechanics(travel_time=travel_time, scan_interval=scan_interval)
        _check_map(register_map)
        on_endpoint: dict[str, list[BarrierConfig]] = defaultdict(list)
        for barrier in register_map.barriers:
            on_endpoint[barrier.endpoint].append(barrier)
        unknown = on_endpoint.keys() - {e.name for e in register_map.endpoints}
        if unknown:
            raise ValueError(f"barriers refer to endpoints not in the map: {sorted(unknown)}")
        self._barrier_configs = register_map.barriers
        write_seq = itertools.count(1)  # one numbering for every PLC's coil writes
        self._plcs = {
            e.name: PlcServer(e, on_endpoint[e.name], mechanics, write_seq=write_seq)
            for e in register_map.endpoints
        }
        self._barriers = {
            barrier.id: (self._plcs[name], index)
            for name, barriers in on_endpoint.items()
            for index, barrier in enumerate(barriers)
        }

    @classmethod
    def uniform(
        cls,
        endpoints: int = 2,
        barriers_per_endpoint: int = 4,
        host: str = "127.0.0.1",
        *,
        port: int = 0,
        unit_id: int = 1,
        travel_time: float = 3.0,
        scan_interval: float = 0.05,
    ) -> Simulator:
        """Simulate a ``barrier-v1`` map; endpoint ``i`` listens on ``port + i`` (any port if 0)."""
        ports = [port + i if port else 0 for i in range(endpoints)]
        register_map = uniform_register_map(
            [(host, p) for p in ports], barriers_per_endpoint, unit_id=unit_id
        )
        return cls(register_map, travel_time=travel_time, scan_interval=scan_interval)

    @property
    def register_map(self) -> RegisterMap:
        """The simulated map, with the ports actually bound."""
        return RegisterMap(
            endpoints=tuple(plc.endpoint for plc in self._plcs.values()),
            barriers=self._barrier_configs,
        )

    async def start(self) -> None:
        """Start every PLC listening; if any cannot, close them all and raise its error."""
        results = await asyncio.gather(
            *(plc.start() for plc in self._plcs.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                await self.close()
                raise result

    async def close(self) -> None:
        """Close every PLC's port and connections."""
        await asyncio.gather(*(plc.close() for plc in self._plcs.values()))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _barrier(self, barrier_id: int) -> tuple[PlcServer, int]:
        try:
            return self._barriers[barrier_id]
        except KeyError:
            raise UnknownBarrierError(barrier_id) from None

    def _plc(self, endpoint_name: str) -> PlcServer:
        try:
            return self._plcs[endpoint_name]
        except KeyError:
            raise UnknownEndpointError(endpoint_name) from None

    # Barriers: the physical world around each PLC.

    def reading(self, barrier_id: int) -> BarrierReading:
        """Return what the barrier's PLC reports about it now."""
        plc, index = self._barrier(barrier_id)
        return plc.reading(index)

    def injected_fault(self, barrier_id: int) -> Fault | None:
        """Return the fault injected into the barrier, if any."""
        plc, index = self._barrier(barrier_id)
        return plc.injected_fault(index)

    def set_occupied(self, barrier_id: int, occupied: bool) -> None:
        """Put a vehicle in the barrier's path, or take it away."""
        plc, index = self._barrier(barrier_id)
        plc.change(index, lambda barrier, now: physics.set_occupied(barrier, occupied, now))

    def inject_fault(self, barrier_id: int, fault: Fault) -> None:
        """Make `fault` strike the barrier now."""
        plc, index = self._barrier(barrier_id)
        plc.change(index, lambda barrier, now: physics.inject_fault(barrier, fault, now))

    def clear_fault(self, barrier_id: int) -> None:
        """Clear the fault injected into the barrier."""
        plc, index = self._barrier(barrier_id)
        plc.change(index, physics.clear_fault)

    def local_command(self, barrier_id: int, command: Command) -> None:
        """Press the barrier's push button on the PLC cabinet."""
        plc, index = self._barrier(barrier_id)
        plc.change(index, lambda barrier, now: physics.request(barrier, command, now))

    # Endpoints: the network and the PLC's communication.

    def link_faults(self, endpoint_name: str) -> LinkFaults:
        """Return the communication faults injected into the endpoint."""
        return self._plc(endpoint_name).faults

    def set_link(self, endpoint_name: str, mode: LinkMode) -> None:
        """Switch the endpoint's link; leaving CLOSED listens again in the background.

        Use `set_link_async` to wait until the port listens again.
        """
        self._plc(endpoint_name).set_link(mode)

    async def set_link_async(self, endpoint_name: str, mode: LinkMode) -> None:
        """Switch the endpoint's link and wait until its port listens, if it should."""
        plc = self._plc(endpoint_name)
        plc.set_link(mode)
        await plc.listening()

    def set_reply_delay(self, endpoint_name: str, seconds: float) -> None:
        """Make the endpoint wait `seconds` before handling each request (0 for none)."""
        self._plc(endpoint_name).set_reply_delay(seconds)

    def set_exception_reply(self, endpoint_name: str, code: int | None) -> None:
        """Answer every request to the endpoint with Modbus exception `code`; None to stop."""
        self._plc(endpoint_name).set_exception_reply(None if code is None else ExcCodes(code))

    def request_count(self, endpoint_name: str) -> int:
        """Return how many requests the endpoint has received since the last reset."""
        return sum(self._plc(endpoint_name).request_counts().values())

    def request_counts(self, endpoint_name: str) -> dict[int, int]:
        """Return the requests the endpoint has received since the last reset, by function code."""
        return self._plc(endpoint_name).request_counts()

    def reset_request_counts(self) -> None:
        """Start counting every endpoint's requests from zero."""
        for plc in self._plcs.values():
            plc.reset_request_counts()

    def coil_writes(self, after: int = 0) -> list[CoilWrite]:
        """Return every endpoint's request-coil writes with a `seq` above `after`, oldest first."""
        writes = [w for plc in self._plcs.values() for w in plc.coil_writes(after)]
        return sorted(writes, key=lambda w: (w.written_at, w.seq))


def _check_map(register_map: RegisterMap) -> None:
    """Raise ValueError unless ids, names and fixed ports are each used once."""
    ids = [b.id for b in register_map.barriers]
    if len(set(ids)) < len(ids):
        raise ValueError(
            f"barrier ids are used twice: {sorted({i for i in ids if ids.count(i) > 1})}"
        )
    names: set[str] = set()
    ports: dict[tuple[str, int], str] = {}
    for endpoint in register_map.endpoints:
        if endpoint.name in names:
            raise ValueError(f"two endpoints are called {endpoint.name!r}")
        names.add(endpoint.name)
        if endpoint.port == 0:
            continue  # each picks a free port of its own
        other = ports.setdefault((endpoint.host, endpoint.port), endpoint.name)
        if other != endpoint.name:
            raise ValueError(
                f"endpoints {other} and {endpoint.name} share {endpoint.host}:{endpoint.port}; "
                "the simulator serves one endpoint per port, so give each its own"
            )
