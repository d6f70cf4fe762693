"""Scenario ``plc``: our PLC client and poller against the simulator in a process of its own.

1. ``client loop``: one `PlcClient` reads one barrier-v1 block (FC4, 4 input registers) in a loop,
   one request at a time: requests/s, latency, and the client process's CPU per request.
2. ``bare loop``: the same reads with a bare pymodbus `AsyncModbusTcpClient`, the natural limit;
   the ours/bare ratios are printed.
3. ``poller``: a `Poller` over many barriers on several endpoints at 1 Hz: barrier reads/s,
   Modbus requests/s, missed cycles, cycle duration, CPU of the poller's process.

The client, bare loop and poller run in the bench process (nothing else runs in it meanwhile);
the simulator runs in its own process, and its CPU is reported beside ours.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import ExitStack

import msgspec
from pymodbus.client import AsyncModbusTcpClient

from bench.children import SimulatorProcess
from bench.harness import Context, Scenario
from bench.proc import ProcessMonitor
from bench.report import ProcessUsage, ScenarioResult, summarize
from plc.client import PlcClient
from plc.poller import BarrierSample, Poller, PollSettings
from plc.quality import Quality
from plc.registers import PlcEndpoint, RegisterMap, Table

BENCH_ROLE = "bench (client under test)"
SIM_ROLE = "simulator"


class Params(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes of the ``plc`` scenario; the defaults are the full size."""

    loop_seconds: float = 10.0
    """Seconds of each request loop (ours, then bare)."""
    warmup_seconds: float = 1.0
    """Seconds of requests before each loop's measurement starts."""
    endpoints: int = 10
    """Simulated PLC endpoints."""
    barriers: int = 1000
    """Simulated barriers, spread evenly over the endpoints."""
    poll_seconds: float = 20.0
    """Seconds the poller is measured for."""
    poll_interval: float = 1.0
    """Seconds between full polls of each endpoint."""
    request_timeout: float = 1.0
    """Seconds to wait for one Modbus answer."""


QUICK = Params(loop_seconds=1.0, warmup_seconds=0.2, endpoints=2, barriers=100, poll_seconds=3.0)


class LoopRun(msgspec.Struct, frozen=True):
    """One request loop: each request's latency (seconds) and what it cost."""

    latencies: list[float]
    seconds: float
    errors: int
    usage: list[ProcessUsage]


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled but an await swallowed the cancel.

    pymodbus 3.16 waits for each answer with ``asyncio.wait_for``, which on Python 3.11 returns
    the answer instead of raising when the cancel lands just after the answer arrived.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _client_cpu(usage: list[ProcessUsage]) -> float:
    return sum(u.cpu_seconds for u in usage if u.role == BENCH_ROLE)


async def ours_loop(
    endpoint: PlcEndpoint, address: int, count: int, params: Params, monitor: ProcessMonitor
) -> LoopRun:
    """Read `count` input registers from `address` with one `PlcClient`, one after another."""
    latencies: list[float] = []
    errors = 0
    async with PlcClient(endpoint, timeout=params.request_timeout) as client:
        warm_until = time.perf_counter() + params.warmup_seconds
        while time.perf_counter() < warm_until:
            await client.read(Table.INPUT_REGISTER, address, count)
            raise_if_cancelled()
        with monitor.window("client loop") as window:
            began = time.perf_counter()
            end = began + params.loop_seconds
            while (t0 := time.perf_counter()) < end:
                values = await client.read(Table.INPUT_REGISTER, address, count)
                latencies.append(time.perf_counter() - t0)
                raise_if_cancelled()
                errors += len(values) != count
            seconds = time.perf_counter() - began
    return LoopRun(latencies, seconds, errors, window.usage)


async def bare_loop(
    endpoint: PlcEndpoint, address: int, count: int, params: Params, monitor: ProcessMonitor
) -> LoopRun:
    """The same reads with a bare pymodbus client: the cost of the library alone."""
    latencies: list[float] = []
    errors = 0
    client = AsyncModbusTcpClient(
        endpoint.host,
        port=endpoint.port,
        timeout=params.request_timeout,
        retries=0,
        reconnect_delay=0,
    )
    try:
        if not await client.connect():
            raise ConnectionError(f"bare pymodbus client cannot connect to {endpoint.address}")
        unit = endpoint.unit_id
        warm_until = time.perf_counter() + params.warmup_seconds
        while time.perf_counter() < warm_until:
            await client.read_input_registers(address, count=count, device_id=unit)
            raise_if_cancelled()
        with monitor.window("bare loop") as window:
            began = time.perf_counter()
            end = began + params.loop_seconds
            while (t0 := time.perf_counter()) < end:
                reply = await client.read_input_registers(address, count=count, device_id=unit)
                latencies.append(time.perf_counter() - t0)
                raise_if_cancelled()
                errors += reply.isError() or len(reply.registers) != count
            seconds = time.perf_counter() - began
    finally:
        client.close()
    return LoopRun(latencies, seconds, errors, window.usage)


def _add_loop(result: ScenarioResult, phase: str, run: LoopRun, load: str) -> None:
    requests = len(run.latencies)
    result.add(phase, "requests/s", "req/s", requests / run.seconds, load=load)
    result.add_stats(phase, "latency", "ms", (x * 1000 for x in run.latencies), load=load)
    cpu = _client_cpu(run.usage)
    result.add(phase, "client CPU per request", "us", cpu / requests * 1e6, load=load)
    if run.errors:
        result.problems.append(f"{phase}: {run.errors} replies were errors or short")


async def measure_loops(
    register_map: RegisterMap, params: Params, monitor: ProcessMonitor, result: ScenarioResult
) -> None:
    """Phases 1 and 2: our client against a bare pymodbus client, same registers, same server."""
    barrier = register_map.barriers[0]
    endpoint = register_map.endpoint(barrier.endpoint)
    state = barrier.points.state
    load = (
        f"1 client, sequential FC4 {state.address}+4 on {endpoint.name}, "
        f"{params.loop_seconds:g} s; simulator serves {len(register_map.barriers)} barriers"
    )
    ours = await ours_loop(endpoint, state.address, 4, params, monitor)
    bare = await bare_loop(endpoint, state.address, 4, params, monitor)
    _add_loop(result, "client loop", ours, load)
    _add_loop(result, "bare loop", bare, load.replace("1 client", "bare pymodbus"))
    ours_rate, bare_rate = len(ours.latencies) / ours.seconds, len(bare.latencies) / bare.seconds
    ours_lat, bare_lat = summarize(ours.latencies), summarize(bare.latencies)
    ours_cpu = _client_cpu(ours.usage) / len(ours.latencies)
    bare_cpu = _client_cpu(bare.usage) / len(bare.latencies)
    assert ours_lat is not None
    assert bare_lat is not None
    ratio = "ours / bare"
    result.add(
        ratio,
        "requests/s",
        "req/s",
        ours_rate,
        limit=bare_rate,
        ratio=ours_rate / bare_rate,
        note="throughput: below 1 means slower than bare pymodbus",
    )
    result.add(
        ratio,
        "latency median",
        "ms",
        ours_lat.median * 1000,
        limit=bare_lat.median * 1000,
        ratio=ours_lat.median / bare_lat.median,
    )
    result.add(
        ratio,
        "latency p99",
        "ms",
        ours_lat.p99 * 1000,
        limit=bare_lat.p99 * 1000,
        ratio=ours_lat.p99 / bare_lat.p99,
    )
    result.add(
        ratio,
        "client CPU per request",
        "us",
        ours_cpu * 1e6,
        limit=bare_cpu * 1e6,
        ratio=ours_cpu / bare_cpu,
        note="cost per read in the client process: issue 6 target 6 is <= 1.3x",
    )


async def measure_poller(
    register_map: RegisterMap, params: Params, monitor: ProcessMonitor, result: ScenarioResult
) -> None:
    """Phase 3: a `Poller` over every barrier of the map at `poll_interval`."""
    phase = "poller"
    counting = False
    fresh = good = 0
    cycle_seconds: list[float] = []
    polled: set[str] = set()
    all_polled = asyncio.Event()

    def sink(endpoint: PlcEndpoint, samples: list[BarrierSample]) -> None:
        nonlocal fresh, good
        polled.add(endpoint.name)
        if len(polled) == len(register_map.endpoints):
            all_polled.set()
        if not counting:
            return
        cycle_seconds.append(poller.endpoints[endpoint.name].stats.last_cycle_seconds)
        fresh += sum(1 for s in samples if s.error is None and s.reading is not None)
        good += sum(1 for s in samples if s.quality is Quality.GOOD)

    settings = PollSettings(interval=params.poll_interval, request_timeout=params.request_timeout)
    poller = Poller(register_map, settings, sink)
    loops = list(poller.endpoints.values())
    async with poller:
        async with asyncio.timeout(10 + params.poll_interval):
            await all_polled.wait()
        # Past the connects, and half an interval off the cycles so none straddles an edge.
        await asyncio.sleep(max(2 * params.poll_interval, 1.0) + params.poll_interval / 2)
        cycles0 = sum(loop.stats.cycles for loop in loops)
        missed0 = sum(loop.stats.missed_cycles for loop in loops)
        failed0 = sum(loop.stats.failed_cycles for loop in loops)
        requests0 = sum(loop.client.requests_sent for loop in loops)
        counting = True
        with monitor.window(phase) as window:
            await asyncio.sleep(params.poll_seconds)
            counting = False
            seconds = window.seconds
        cycles = sum(loop.stats.cycles for loop in loops) - cycles0
        missed = sum(loop.stats.missed_cycles for loop in loops) - missed0
        failed = sum(loop.stats.failed_cycles for loop in loops) - failed0
        requests = sum(loop.client.requests_sent for loop in loops) - requests0
    barriers, endpoints = len(register_map.barriers), len(register_map.endpoints)
    load = (
        f"{barriers} barriers on {endpoints} endpoints every {params.poll_interval:g} s, "
        f"{params.poll_seconds:g} s"
    )
    wanted = barriers / params.poll_interval
    result.add(
        phase,
        "barrier reads/s",
        "reads/s",
        fresh / seconds,
        load=load,
        limit=wanted,
        ratio=fresh / seconds / wanted,
        note="limit: every barrier once per interval",
    )
    result.add(phase, "Modbus requests/s", "req/s", requests / seconds, load=load)
    result.add(phase, "requests per endpoint cycle", "req", requests / max(cycles, 1), load=load)
    result.add(
        phase,
        "cycles",
        "cycles",
        cycles,
        load=load,
        limit=endpoints * params.poll_seconds / params.poll_interval,
    )
    result.add(phase, "missed cycles", "cycles", missed, load=load)
    result.add(phase, "failed cycles", "cycles", failed, load=load)
    result.add(phase, "samples of good quality", "%", 100 * good / max(fresh, 1), load=load)
    result.add_stats(phase, "cycle duration", "ms", (x * 1000 for x in cycle_seconds), load=load)
    cpu = sum(u.cpu_seconds for u in window.usage if u.role == BENCH_ROLE)
    if fresh:
        result.add(phase, "poller CPU per barrier read", "us", cpu / fresh * 1e6, load=load)
    if failed:
        result.problems.append(f"poller: {failed} poll cycles failed")


async def run(params: Params, context: Context, result: ScenarioResult) -> None:
    """Run the three phases against one simulator process."""
    per_endpoint = max(params.barriers // params.endpoints, 1)
    monitor = context.monitor
    with ExitStack() as stack:
        sim = stack.enter_context(
            SimulatorProcess(
                context.work_dir / "simulator.log",
                endpoints=params.endpoints,
                barriers_per_endpoint=per_endpoint,
            )
        )
        register_map = await sim.ready()
        monitor.watch(SIM_ROLE, sim.pid)
        monitor.watch(BENCH_ROLE, os.getpid())
        await measure_loops(register_map, params, monitor, result)
        await measure_poller(register_map, params, monitor, result)
        sim.check()
    result.notes += [
        "client loop, bare loop and poller run one after another in the bench process; "
        "the simulator (pymodbus server) runs in its own process",
        "latency is the time of one request as seen by the client: our client's queue and "
        "lock, pymodbus, loopback TCP and the simulator's answer",
        "client CPU per request = CPU of the bench process in the loop / requests",
    ]


SCENARIO = Scenario(
    name="plc",
    description="PLC client and poller against the simulator (issue 2's figures)",
    params=Params,
    quick=QUICK,
    run=run,
)
