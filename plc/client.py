"""One async Modbus/TCP client per PLC endpoint.

The client owns its connection and serialises requests (many PLCs handle one transaction at a
time); writes are served before queued reads, so a command never waits behind a poll backlog.
Every failure raises one typed `PlcError`. A broken link is re-dialled on demand with capped
exponential backoff and jitter; while it waits, requests fail at once instead of queueing.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

import msgspec
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from plc.errors import (
    PlcConnectionError,
    PlcExceptionReply,
    PlcOverloaded,
    PlcProtocolError,
    PlcTimeout,
)
from plc.registers import PlcEndpoint, Table


class Backoff(msgspec.Struct, frozen=True):
    """Capped exponential backoff with jitter between reconnect attempts."""

    initial: float = 0.1
    """Delay after the first failed attempt, in seconds."""
    maximum: float = 10.0
    """Cap on the delay, in seconds."""
    jitter: float = 0.2
    """Fraction of the delay drawn at random, so many bridges do not re-dial in step."""

    def delay(self, failures: int, draw: float) -> float:
        """Return the delay after `failures` consecutive failures; `draw` is uniform in [0, 1)."""
        base: float = min(self.maximum, self.initial * 2.0 ** max(failures - 1, 0))
        return base * (1 - self.jitter * draw)


class Priority:
    """Request priorities: lower is served first."""

    WRITE = 0
    READ = 1


class _PriorityLock:
    """A mutex that hands itself to the waiter with the lowest priority value, FIFO within one."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        if self._held or self._waiters:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (priority, next(self._order), waiter)
            heapq.heappush(self._waiters, entry)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # granted and cancelled at once: pass the turn on
                elif entry in self._waiters:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                raise
        self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)
                return  # the lock passes to that waiter, still held
        self._held = False


class PlcClient:
    """The one connection to one PLC endpoint; use ``async with`` or `close()`."""

    def __init__(
        self,
        endpoint: PlcEndpoint,
        *,
        timeout: float = 1.0,
        backoff: Backoff | None = None,
        max_waiting: int = 64,
        monotonic: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.max_waiting = max_waiting
        self._monotonic = monotonic
        self._draw = draw
        self._lock = _PriorityLock()
        self._modbus: AsyncModbusTcpClient | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self.requests_sent = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """Whether the TCP connection is currently up."""
        return self._modbus is not None and self._modbus.connected

    def close(self) -> None:
        """Close the connection; a later request dials again."""
        if self._modbus is not None:
            self._modbus.close()
            self._modbus = None

    async def read(self, table: Table, address: int, count: int) -> list[int]:
        """Read `count` items of `table` from `address`; bits come back as 0/1."""
        label = f"read {table.value} {address}+{count}"
        pdu = await self._execute(
            Priority.READ,
            label,
            lambda c: _read_call(c, table, address, count, self.endpoint.unit_id),
        )
        values = pdu.bits if table.is_bits else pdu.registers
        if len(values) < count:
            raise PlcProtocolError(
                self.endpoint.name, f"{label} answered {len(values)} values, expected {count}"
            )
        # read_coils pads bits to a whole byte: keep only what was asked for.
        return [int(v) for v in values[:count]]

    async def write_coil(self, address: int, value: bool) -> None:
        """Write one coil (FC5); served before any queued read."""
        label = f"write coil {address}={int(value)}"
        await self._execute(
            Priority.WRITE,
            label,
            lambda c: c.write_coil(address, value, device_id=self.endpoint.unit_id),
        )

    async def _execute(
        self,
        priority: int,
        label: str,
        call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        name = self.endpoint.name
        if self._lock.waiting >= self.max_waiting:
            raise PlcOverloaded(name, f"{label} refused: {self._lock.waiting} requests queued")
        async with self._lock.hold(priority):
            modbus = await self._connection(label)
            self.requests_sent += 1
            try:
                # pymodbus applies its own timeout; the outer one guards against a hang anywhere.
                async with asyncio.timeout(self.timeout * 2):
                    pdu = await call(modbus)
            except (TimeoutError, ModbusIOException) as exc:
                # Drop the connection so that a late answer cannot be taken for the next one.
                self._link_failed()
                raise PlcTimeout(name, f"{label}: no answer within {self.timeout:g} s") from exc
            except ConnectionException as exc:
                self._link_failed()
                raise PlcConnectionError(name, f"{label}: connection lost") from exc
            except ModbusException as exc:  # a frame pymodbus could not make sense of
                self._link_failed()
                raise PlcProtocolError(name, f"{label}: {exc}") from exc
            if pdu.isError():
                raise PlcExceptionReply(name, int(getattr(pdu, "exception_code", 0)), label)
            return pdu

    async def _connection(self, label: str) -> AsyncModbusTcpClient:
        if self._modbus is not None and self._modbus.connected:
            return self._modbus
        self.close()
        now = self._monotonic()
        if now < self._next_attempt:
            raise PlcConnectionError(
                self.endpoint.name,
                f"{label}: link down, next reconnect in {self._next_attempt - now:.2f} s",
            )
        modbus = AsyncModbusTcpClient(
            self.endpoint.host,
            port=self.endpoint.port,
            timeout=self.timeout,
            retries=0,
            reconnect_delay=0,  # reconnection is ours, with backoff, on demand
            name=self.endpoint.name,
        )
        try:
            async with asyncio.timeout(self.timeout * 2):
                ok = await modbus.connect()
        except (TimeoutError, OSError):
            ok = False
        if not ok:
            modbus.close()
            self._link_failed()
            raise PlcConnectionError(
                self.endpoint.name, f"{label}: cannot connect to {self.endpoint.address}"
            )
        self._failures = 0
        self._modbus = modbus
        return modbus

    def _link_failed(self) -> None:
        self.close()
        self._failures += 1
        self._next_attempt = self._monotonic() + self.backoff.delay(self._failures, self._draw())


def _read_call(
    client: AsyncModbusTcpClient, table: Table, address: int, count: int, unit_id: int
) -> Awaitable[ModbusPDU]:
    if table is Table.COIL:
        return client.read_coils(address, count=count, device_id=unit_id)
    if table is Table.DISCRETE_INPUT:
        return client.read_discrete_inputs(address, count=count, device_id=unit_id)
    if table is Table.INPUT_REGISTER:
        return client.read_input_registers(address, count=count, device_id=unit_id)
    return client.read_holding_registers(address, count=count, device_id=unit_id)
