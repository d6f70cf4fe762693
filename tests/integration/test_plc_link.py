"""The PLC client and poller against the barrier simulator, over real Modbus/TCP on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from plc.client import PlcClient
from plc.errors import PlcConnectionError, PlcExceptionReply, PlcTimeout
from plc.poller import BarrierSample, EndpointPoller, Poller, PollSettings
from plc.quality import Quality, QualityLimits
from plc.registers import BarrierState, PlcEndpoint, Table
from simulator import Command, LinkMode, Simulator

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

TRAVEL = 0.4
FAST = PollSettings(
    interval=0.1,
    fast_interval=0.02,
    request_timeout=0.3,
    limits=QualityLimits(stale_after=1.0, frozen_after=0.5),
)


class Samples:
    """Collects every sample the poller hands out, and awaits conditions on them."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, BarrierSample]] = []
        self.changed = asyncio.Event()

    def __call__(self, endpoint: PlcEndpoint, samples: list[BarrierSample]) -> None:
        now = time.monotonic()
        self.seen += [(now, s) for s in samples]
        self.changed.set()

    def of(self, barrier_id: int) -> list[BarrierSample]:
        return [s for _, s in self.seen if s.barrier_id == barrier_id]

    async def until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    def latest(self, barrier_id: int) -> BarrierSample:
        return self.of(barrier_id)[-1]


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator.uniform(
        endpoints=2, barriers_per_endpoint=4, travel_time=TRAVEL, scan_interval=0.01
    ) as running:
        yield running


def states(samples: list[BarrierSample]) -> list[BarrierState]:
    """The distinct successive states seen."""
    out: list[BarrierState] = []
    for sample in samples:
        if sample.reading is not None and (not out or out[-1] != sample.reading.state):
            out.append(sample.reading.state)
    return out


async def test_open_then_close_round_trip(sim: Simulator) -> None:
    samples = Samples()
    barrier = sim.register_map.barrier(6)
    async with Poller(sim.register_map, FAST, samples) as poller:
        await samples.until(lambda: bool(samples.of(6)))
        assert samples.latest(6).reading is not None
        loop = poller.for_barrier(6)

        await loop.client.write_coil(barrier.points.open_request.address, True)
        loop.boost(6, 2.0)
        await samples.until(lambda: states(samples.of(6))[-1:] == [BarrierState.OPENED])
        await loop.client.write_coil(barrier.points.close_request.address, True)
        loop.boost(6, 2.0)
        await samples.until(lambda: states(samples.of(6))[-1:] == [BarrierState.CLOSED])

    assert states(samples.of(6)) == [
        BarrierState.CLOSED,
        BarrierState.OPENING,
        BarrierState.OPENED,
        BarrierState.CLOSING,
        BarrierState.CLOSED,
    ]
    positions = [s.reading.position for s in samples.of(6) if s.reading is not None]
    assert max(positions) == 100
    assert any(0 < p < 100 for p in positions), "fast polling saw the barrier mid-travel"
    assert all(s.quality is Quality.GOOD for s in samples.of(6))
    # The other barriers never moved.
    assert states(samples.of(5)) == [BarrierState.CLOSED]


async def test_a_full_cycle_takes_one_request_per_table(sim: Simulator) -> None:
    endpoint = sim.register_map.endpoints[0]
    samples = Samples()
    async with PlcClient(endpoint, timeout=0.5) as client:
        loop = EndpointPoller(
            endpoint, sim.register_map.barriers_on(endpoint.name), client, FAST, samples
        )
        sim.reset_request_counts()
        cycles = 5
        for _ in range(cycles):
            got = await loop.poll_once()
            assert [s.barrier_id for s in got] == [1, 2, 3, 4]
            assert all(s.quality is Quality.GOOD for s in got)
    # 4 barriers x (2 coils, 4 input registers, 1 discrete input): one FC1, one FC2, one FC4.
    assert sim.request_counts(endpoint.name) == {1: cycles, 2: cycles, 4: cycles}
    assert sim.request_count(sim.register_map.endpoints[1].name) == 0


async def test_a_dropped_endpoint_does_not_slow_the_other(sim: Simulator) -> None:
    samples = Samples()
    dead, alive = sim.register_map.endpoints
    async with Poller(sim.register_map, FAST, samples) as poller:
        await samples.until(lambda: bool(samples.of(1)) and bool(samples.of(5)))
        await sim.set_link_async(dead.name, LinkMode.SILENT)
        await samples.until(lambda: samples.latest(1).quality is Quality.COMM_LOST)
        sim.reset_request_counts()
        started = poller.endpoints[alive.name].stats.cycles
        t0 = time.monotonic()
        await samples.until(lambda: poller.endpoints[alive.name].stats.cycles >= started + 10)
        elapsed = time.monotonic() - t0
        missed = poller.endpoints[alive.name].stats.missed_cycles
    # Ten 0.1 s cycles of the live endpoint while the dead one times out (0.3 s per try).
    assert elapsed < 10 * FAST.interval * 2
    assert missed == 0
    assert samples.latest(1).quality is Quality.COMM_LOST
    assert samples.latest(1).reading is not None, "the last good reading is kept"
    assert samples.latest(5).quality is Quality.GOOD
    # A timeout, then fast failures while the reconnect backs off.
    error = samples.latest(1).error or ""
    assert "no answer" in error or "link down" in error


async def test_reconnects_after_the_simulator_restarts() -> None:
    samples = Samples()
    async with Simulator.uniform(endpoints=1, barriers_per_endpoint=2, travel_time=TRAVEL) as sim:
        register_map = sim.register_map
        async with Poller(register_map, FAST, samples) as poller:
            await samples.until(
                lambda: samples.of(1)[-1:] != [] and samples.latest(1).quality is Quality.GOOD
            )
            await sim.__aexit__(None, None, None)  # the PLC goes away
            await samples.until(lambda: samples.latest(1).quality is Quality.COMM_LOST)
            # The same PLC comes back on the same port.
            async with Simulator(register_map, travel_time=TRAVEL):
                await samples.until(lambda: samples.latest(1).quality is Quality.GOOD)
                assert poller.endpoints[register_map.endpoints[0].name].client.connected


async def test_a_frozen_heartbeat_makes_readings_stale(sim: Simulator) -> None:
    samples = Samples()
    async with Poller(sim.register_map, FAST, samples):
        await samples.until(
            lambda: bool(samples.of(1)) and samples.latest(1).quality is Quality.GOOD
        )
        sim.set_link(sim.register_map.endpoints[0].name, LinkMode.FROZEN)
        await samples.until(lambda: samples.latest(1).quality is Quality.STALE)
        # Reads still succeed: it is the heartbeat, not the link, that says the PLC is frozen.
        assert samples.latest(1).error is None
        assert samples.latest(5).quality is Quality.GOOD
        sim.set_link(sim.register_map.endpoints[0].name, LinkMode.UP)
        await samples.until(lambda: samples.latest(1).quality is Quality.GOOD)


async def test_exception_replies_become_typed_errors(sim: Simulator) -> None:
    endpoint = sim.register_map.endpoints[0]
    async with PlcClient(endpoint, timeout=0.5) as client:
        sim.set_exception_reply(endpoint.name, 6)
        with pytest.raises(
            PlcExceptionReply, match=r"exception 6 \(server device busy\)"
        ) as caught:
            await client.read(Table.INPUT_REGISTER, 0, 4)
        assert caught.value.code == 6
        with pytest.raises(PlcExceptionReply) as caught:
            await client.write_coil(0, True)
        assert caught.value.code == 6
        sim.set_exception_reply(endpoint.name, None)
        # An address beyond the PLC's memory is refused by the PLC itself.
        with pytest.raises(PlcExceptionReply) as caught:
            await client.read(Table.INPUT_REGISTER, 60000, 2)
        assert caught.value.code == 2
        assert len(await client.read(Table.INPUT_REGISTER, 0, 4)) == 4
        assert client.connected, "an exception reply is an answer: the link stays up"


async def test_exception_replies_age_readings_without_losing_the_link(sim: Simulator) -> None:
    samples = Samples()
    async with Poller(sim.register_map, FAST, samples):
        await samples.until(lambda: bool(samples.of(1)))
        sim.set_exception_reply(sim.register_map.endpoints[0].name, 4)
        await samples.until(lambda: samples.latest(1).quality is Quality.STALE)
        assert "exception 4" in (samples.latest(1).error or "")


async def test_timeouts_and_refused_connections_are_typed(sim: Simulator) -> None:
    endpoint = sim.register_map.endpoints[0]
    async with PlcClient(endpoint, timeout=0.2) as client:
        await client.read(Table.INPUT_REGISTER, 0, 4)
        await sim.set_link_async(endpoint.name, LinkMode.SILENT)
        with pytest.raises(PlcTimeout, match=r"no answer within 0\.2 s"):
            await client.read(Table.INPUT_REGISTER, 0, 4)
        # Until the backoff delay has passed, requests fail at once instead of queueing.
        t0 = time.monotonic()
        with pytest.raises(PlcConnectionError, match="link down, next reconnect in"):
            await client.read(Table.INPUT_REGISTER, 0, 4)
        assert time.monotonic() - t0 < 0.05
        await sim.set_link_async(endpoint.name, LinkMode.CLOSED)
    unreachable = PlcEndpoint(name="gone", host="127.0.0.1", port=endpoint.port)
    async with PlcClient(unreachable, timeout=0.2) as client:
        with pytest.raises(PlcConnectionError, match=r"cannot connect to 127\.0\.0\.1"):
            await client.read(Table.INPUT_REGISTER, 0, 4)


async def test_a_write_overtakes_queued_reads(sim: Simulator) -> None:
    endpoint = sim.register_map.endpoints[0]
    sim.set_reply_delay(endpoint.name, 0.05)
    finished: list[str] = []

    async def read(i: int) -> None:
        await client.read(Table.INPUT_REGISTER, 0, 4)
        finished.append(f"read-{i}")

    async def write() -> None:
        await client.write_coil(sim.register_map.barrier(1).points.open_request.address, True)
        finished.append("write")

    async with PlcClient(endpoint, timeout=1.0) as client:
        reads = [asyncio.create_task(read(i)) for i in range(4)]
        await asyncio.sleep(0)  # the reads start: the first takes the link, three queue
        await asyncio.gather(write(), *reads)
    assert finished[:2] == ["read-0", "write"]
    assert sorted(finished[2:]) == ["read-1", "read-2", "read-3"]


async def test_a_moving_barrier_is_polled_at_the_fast_rate_the_others_at_the_full_rate() -> None:
    slow_full = PollSettings(interval=1.0, fast_interval=0.05, request_timeout=0.3)
    samples = Samples()
    async with (
        Simulator.uniform(endpoints=1, barriers_per_endpoint=2, travel_time=2.5) as sim,
        Poller(sim.register_map, slow_full, samples),
    ):
        await samples.until(lambda: bool(samples.of(1)) and bool(samples.of(2)))
        sim.local_command(1, Command.OPEN)  # the cabinet's button: nobody boosted the poll
        await samples.until(lambda: BarrierState.OPENED in states(samples.of(1)), within=6.0)
    moving = [s for s in samples.of(1) if s.reading and s.reading.state is BarrierState.OPENING]
    # The next full poll (within 1 s) sees it opening; from then on it is read every 0.05 s
    # until it is open (1.5 s or more): dozens of reads, where full polls would make one or two.
    # Its idle neighbour on the same PLC is read only by the full polls.
    assert len(moving) >= 10
    assert len(samples.of(2)) <= 5


async def test_a_sink_that_fails_does_not_end_the_poll_loop(sim: Simulator) -> None:
    samples = Samples()
    failures = 0

    def flaky(endpoint: PlcEndpoint, got: list[BarrierSample]) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise RuntimeError("a bug in whoever takes the samples")
        samples(endpoint, got)

    endpoint = sim.register_map.endpoints[0]
    async with PlcClient(endpoint, timeout=0.5) as client:
        loop = EndpointPoller(
            endpoint, sim.register_map.barriers_on(endpoint.name), client, FAST, flaky
        )
        task = asyncio.create_task(loop.run())
        try:
            await samples.until(lambda: len(samples.of(1)) >= 3)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert failures == 2
    assert loop.stats.failed_cycles >= 2
