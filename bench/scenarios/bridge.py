"""Scenario ``bridge``: one bridge process against the simulator with real Kafka, PostgreSQL, Redis.

1. ``commands``: the bench produces commands to ``barrier_commands`` at a fixed rate, alternating
   open/close per barrier and never two in flight for one barrier (it follows the outcomes on
   ``barrier_command_results``). Figures come from the ``commands`` table: consumed -> written,
   written -> confirmed (and that minus the simulated travel time), outcomes by state, and the
   consumer group's lag once everything is done.
2. ``polling N``: a fresh simulator and bridge with N barriers and no commands: the Modbus
   requests the simulator received (the truth about polling), missed cycles and cycle duration
   from the bridge's ``/metrics``, the bridge's CPU and memory from ``/proc``.

Each bridge gets a database, topics, group and cache namespace of its own, and is measured only
once every barrier's first state is in PostgreSQL (how long that takes is a figure too).

Every process is separate: services (Tansu, PostgreSQL, Redis), the simulator, the bridge, and
the bench as the load generator.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import msgspec
import psycopg
from confluent_kafka import Consumer, TopicPartition

from bench.bridge_process import BridgeProcess, Metrics, histogram_quantile
from bench.children import ChildError, SimulatorProcess
from bench.harness import Context, Scenario
from bench.report import ScenarioResult
from bench.services import Services
from bridge.messages import Command, command_key, encode_command
from bridge.settings import BridgeSettings
from plc.planning import ReadRequest, plan_reads
from plc.registers import RegisterMap
from stack.services import free_port
from store.kafka import AsyncProducer
from store.types import CommandKind, CommandState, EventType

BENCH_ROLE = "bench (load generator)"
BRIDGE_ROLE = "bridge"
SIM_ROLE = "simulator"

STARTUP_TIMEOUT = 180.0
"""Seconds a bridge may take to own every barrier and record every barrier's state."""


class Params(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes of the ``bridge`` scenario; the defaults are the full size."""

    endpoints: int = 10
    """Simulated PLC endpoints, in both phases."""
    command_barriers: int = 200
    """Barriers of the commands phase, spread evenly over the endpoints."""
    travel_time: float = 0.5
    """Seconds of a full stroke in the commands phase's simulator."""
    rate: float = 50.0
    """Commands produced per second."""
    warmup_seconds: float = 2.0
    """Seconds of commands at the same rate before the measured ones (outcomes still checked)."""
    command_seconds: float = 20.0
    """Seconds of producing the measured commands."""
    poll_barriers: list[int] = msgspec.field(default_factory=lambda: [1000])
    """Barrier counts of the polling phases, one fresh simulator and bridge each."""
    poll_seconds: float = 15.0
    """Seconds each polling phase is measured for."""
    partitions: int = 12
    """Partitions of the commands topic."""
    drain_timeout: float = 30.0
    """Seconds to wait, after the last command, for every outcome and for the lag to reach 0."""


QUICK = Params(
    endpoints=2,
    command_barriers=20,
    rate=10.0,
    warmup_seconds=1.0,
    command_seconds=3.0,
    poll_barriers=[100],
    poll_seconds=3.0,
)


def bridge_settings(
    services: Services, partitions: int, tag: str, database_url: str
) -> BridgeSettings:
    """Settings of one bridge with topics, group and cache namespace of its own."""
    return BridgeSettings(
        kafka_bootstrap=services.kafka_bootstrap,
        database_url=database_url,
        redis_url=services.redis_url,
        cache_namespace=f"bench-{tag}",
        group_id=f"bench-{tag}",
        instance_id=f"bench-{tag}",
        commands_topic=f"commands-{tag}",
        results_topic=f"results-{tag}",
        dead_letter_topic=f"dlq-{tag}",
        partitions=partitions,
        # Tansu assigns partitions half a session timeout after a member joins.
        session_timeout_ms=2000,
        shutdown_grace=5.0,
        metrics_port=free_port(),
        log_level="INFO",
    )


async def recorded_barriers(database_url: str) -> int:
    """How many barriers have had their state recorded in ``barrier_events`` so far."""
    sql = "SELECT count(DISTINCT barrier_id) FROM barrier_events WHERE event_type = %s"
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(sql, (EventType.STATE_CHANGED.value,))
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def start_bridge(
    stack: ExitStack,
    services: Services,
    partitions: int,
    name: str,
    register_map: RegisterMap,
    context: Context,
    result: ScenarioResult,
    phase: str,
) -> BridgeProcess:
    """Start a bridge on a database of its own; wait until it knows every barrier's state.

    Two start-up figures: until it owns every barrier and has polled every endpoint once, and
    until every barrier's first state is recorded in PostgreSQL (until then, tracking is
    behind the polls).
    """
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    database_url = await asyncio.to_thread(services.new_database, f"bench_{tag}".replace("-", "_"))
    settings = bridge_settings(services, partitions, tag, database_url)
    began = time.monotonic()
    bridge = stack.enter_context(BridgeProcess(context.work_dir, register_map, settings))
    await bridge.ready(within=STARTUP_TIMEOUT)
    ready = time.monotonic() - began
    barriers = len(register_map.barriers)
    while (recorded := await recorded_barriers(database_url)) < barriers:
        bridge.check()
        if time.monotonic() - began > STARTUP_TIMEOUT:
            raise ChildError(
                f"{bridge.name}: only {recorded} of {barriers} barriers recorded after "
                f"{STARTUP_TIMEOUT:g} s"
            )
        await asyncio.sleep(0.2)
    pictured = time.monotonic() - began
    load = f"{barriers} barriers on {len(register_map.endpoints)} endpoints, fresh database"
    result.add(
        phase,
        "start-up: owns all, first polls",
        "s",
        ready,
        load=load,
        note="process start -> every barrier owned and every endpoint polled once",
    )
    result.add(
        phase,
        "start-up: every state in PostgreSQL",
        "s",
        pictured,
        load=load,
        note="process start -> a state_changed event recorded for every barrier",
    )
    return bridge


class OutcomeListener:
    """Follows ``barrier_command_results`` in a thread: which command ids have ended."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.finished: set[str] = set()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-results-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        # Assigned, not subscribed: no group join, no wait for an assignment.
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bench-results", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            value = msg.value()
            if value:
                outcome = msgspec.json.decode(value)
                self.finished.add(str(outcome["command_id"]))

    def __enter__(self) -> OutcomeListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Records of `topic` not yet committed by consumer group `group` (blocking)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        committed = consumer.committed(wanted, timeout=5)
        lag = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            position = tp.offset if tp.offset >= 0 else low
            lag += max(high - position, 0)
        return lag
    finally:
        consumer.close()


async def _metric_lag(bridge: BridgeProcess, within: float = 10.0) -> tuple[float, float]:
    """Wait (up to `within` s) for the bridge's own lag metric to reach 0: (lag, seconds)."""
    began = time.monotonic()
    while True:
        lag = (await bridge.scrape()).total("bridge_consumer_lag")
        waited = time.monotonic() - began
        if lag == 0 or waited > within:
            return lag, waited
        await asyncio.sleep(0.2)


class CommandRow(msgspec.Struct, frozen=True):
    """The figures of one command from the ``commands`` table (times in unix seconds)."""

    command_id: str
    state: CommandState
    consumed_to_written_ms: float | None
    written_to_confirmed_ms: float | None
    requested_at: float
    accepted_at: float
    finished_at: float | None


async def command_rows(database_url: str, ids: list[str]) -> list[CommandRow]:
    """Read the bench's commands back from PostgreSQL."""
    sql = """
        SELECT command_id::text, state, consumed_to_written_ms, written_to_confirmed_ms,
               extract(epoch FROM requested_at)::float8, extract(epoch FROM accepted_at)::float8,
               extract(epoch FROM finished_at)::float8
        FROM commands WHERE command_id = ANY(%s::uuid[])
    """
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(sql, (ids,))
        rows = await cursor.fetchall()
    return [
        CommandRow(
            command_id=r[0],
            state=CommandState(r[1]),
            consumed_to_written_ms=r[2],
            written_to_confirmed_ms=r[3],
            requested_at=r[4],
            accepted_at=r[5],
            finished_at=r[6],
        )
        for r in rows
    ]


def write_rows(path: Path, rows: list[CommandRow]) -> None:
    """Write the commands' rows as CSV, oldest request first, for a look at the outliers."""
    fields = [f.name for f in msgspec.structs.fields(CommandRow)]
    lines = [",".join(fields)]
    for row in sorted(rows, key=lambda r: r.requested_at):
        lines.append(",".join("" if v is None else str(v) for v in msgspec.structs.astuple(row)))
    path.write_text("\n".join(lines) + "\n")


class Production(msgspec.Struct, frozen=True):
    """What the load generator did."""

    warmup_ids: list[str]
    """Commands of the warm-up: executed and checked, left out of the figures."""
    command_ids: list[str]
    """The measured commands."""
    seconds: float
    """Seconds from the first measured command's schedule to the last one's."""
    deferred: int
    """Ticks skipped because every barrier still had a command in flight."""
    slips_ms: list[float]
    """How late the generator produced each command against its schedule."""


async def produce_commands(
    bridge: BridgeProcess,
    params: Params,
    listener: OutcomeListener,
    measuring: Callable[[], object],
) -> Production:
    """Produce `rate` commands/s, round robin, one in flight per barrier.

    First `warmup_seconds` of them, then (after calling `measuring`) `command_seconds` of them.
    """
    settings = bridge.settings
    barriers = [b.id for b in bridge.register_map.barriers]
    next_kind = dict.fromkeys(barriers, CommandKind.OPEN)
    in_flight: dict[int, str] = {}
    warmup: list[str] = []
    ids: list[str] = []
    sends: list[asyncio.Task[tuple[int, int]]] = []
    producer = AsyncProducer(settings.kafka_bootstrap)
    deferred, turn = 0, 0
    slips: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        warmup_ticks = round(params.rate * params.warmup_seconds)
        ticks = warmup_ticks + round(params.rate * params.command_seconds)
        measured_from = began + warmup_ticks / params.rate
        for tick in range(ticks):
            due = began + tick / params.rate
            await asyncio.sleep(max(due - loop.time(), 0.0))
            if tick == warmup_ticks:
                measuring()
            if tick >= warmup_ticks:
                slips.append((loop.time() - due) * 1000)
            for _ in barriers:
                barrier = barriers[turn % len(barriers)]
                turn += 1
                running = in_flight.get(barrier)
                if running is None or running in listener.finished:
                    break
            else:
                deferred += 1
                continue
            command = Command(
                command_id=str(uuid.uuid4()),
                barrier_id=barrier,
                kind=next_kind[barrier],
                actor="bench",
                requested_at=time.time(),
                source="bench",
            )
            next_kind[barrier] = (
                CommandKind.CLOSE if command.kind is CommandKind.OPEN else CommandKind.OPEN
            )
            in_flight[barrier] = command.command_id
            (ids if tick >= warmup_ticks else warmup).append(command.command_id)
            sends.append(
                asyncio.create_task(
                    producer.send(
                        settings.commands_topic, encode_command(command), key=command_key(barrier)
                    )
                )
            )
        seconds = loop.time() - measured_from
        await asyncio.gather(*sends)
    finally:
        await asyncio.to_thread(producer.close)
    return Production(warmup, ids, seconds, deferred, slips)


async def _drained(
    bridge: BridgeProcess, ids: list[str], listener: OutcomeListener, within: float
) -> tuple[int, float]:
    """Wait for every outcome, then for the lag to reach 0; return (lag, seconds waited)."""
    settings = bridge.settings
    deadline = time.monotonic() + within
    began = time.monotonic()
    while time.monotonic() < deadline and not listener.finished.issuperset(ids):
        bridge.check()
        await asyncio.sleep(0.05)
    lag = -1
    while time.monotonic() < deadline:
        lag = await asyncio.to_thread(
            group_lag,
            settings.kafka_bootstrap,
            settings.group_id,
            settings.commands_topic,
            settings.partitions,
        )
        if lag == 0:
            break
        await asyncio.sleep(0.2)
    return lag, time.monotonic() - began


async def commands_phase(
    services: Services, params: Params, context: Context, result: ScenarioResult
) -> None:
    """Phase 1: commands at a fixed rate through one bridge; latencies from PostgreSQL."""
    phase = "commands"
    monitor = context.monitor
    per_endpoint = max(params.command_barriers // params.endpoints, 1)
    barriers = per_endpoint * params.endpoints
    with ExitStack() as stack:
        sim = stack.enter_context(
            SimulatorProcess(
                context.work_dir / "simulator-commands.log",
                endpoints=params.endpoints,
                barriers_per_endpoint=per_endpoint,
                travel_time=params.travel_time,
                control=True,
            )
        )
        register_map = await sim.ready()
        bridge = await start_bridge(
            stack, services, params.partitions, "commands", register_map, context, result, phase
        )
        settings = bridge.settings
        stack.enter_context(monitor.watching(SIM_ROLE, sim.pid))
        stack.enter_context(monitor.watching(BRIDGE_ROLE, bridge.pid))
        listener = stack.enter_context(
            OutcomeListener(settings.kafka_bootstrap, settings.results_topic, settings.partitions)
        )
        requests_before, began = await sim.request_count(), time.monotonic()
        with ExitStack() as window:
            production = await produce_commands(
                bridge, params, listener, lambda: window.enter_context(monitor.window(phase))
            )
            everything = production.warmup_ids + production.command_ids
            lag, drain_seconds = await _drained(bridge, everything, listener, params.drain_timeout)
        requests = await sim.request_count() - requests_before
        span = time.monotonic() - began
        metric_lag, metric_wait = await _metric_lag(bridge)
        all_rows = await command_rows(settings.database_url, everything)
        write_rows(context.work_dir / "commands.csv", all_rows)
        bridge.check()
        sim.check()
    note_stop(result, phase, bridge)
    full_polls = sum(len(full_plan(register_map, e.name)) for e in register_map.endpoints) * (
        span / settings.poll_interval
    )
    load_all = f"{len(everything)} commands (warm-up included) in {span:.0f} s"
    result.add(
        phase,
        "Modbus requests/s (simulator count)",
        "req/s",
        requests / span,
        load=load_all,
        note=f"full polls alone: {full_polls / span:.0f} req/s",
    )
    result.add(
        phase,
        "requests beyond full polls per command",
        "req",
        (requests - full_polls) / len(everything),
        load=load_all,
        note="fast polls and the coil write: what one command costs on the PLC link",
    )
    load = (
        f"{params.rate:g} cmd/s for {params.command_seconds:g} s over {barriers} barriers on "
        f"{params.endpoints} endpoints, travel {params.travel_time:g} s"
    )
    measured = set(production.command_ids)
    rows = [r for r in all_rows if r.command_id in measured]
    _command_figures(result, phase, load, params, production, rows)
    _check_outcomes(result, phase, everything, all_rows)
    result.add(
        phase,
        "consumer lag after drain",
        "records",
        lag,
        load=load,
        note=f"committed vs high watermark, {drain_seconds:.1f} s after the last command",
    )
    result.add(
        phase,
        "consumer lag (bridge metric)",
        "records",
        metric_lag,
        load=load,
        note=f"bridge_consumer_lag summed, read until 0 for {metric_wait:.1f} s after the drain",
    )
    if lag != 0:
        result.problems.append(f"commands: consumer lag is {lag}, not 0, after the drain")


def note_stop(result: ScenarioResult, phase: str, bridge: BridgeProcess) -> None:
    """Record how the bridge took its SIGTERM."""
    grace = bridge.stop_timeout
    if bridge.killed:
        result.problems.append(
            f"{phase}: the bridge did not exit within {grace:g} s of SIGTERM and was killed"
        )
    elif bridge.exit_status:
        result.notes.append(f"{phase}: the bridge exited with status {bridge.exit_status}")


def _command_figures(
    result: ScenarioResult,
    phase: str,
    load: str,
    params: Params,
    production: Production,
    rows: list[CommandRow],
) -> None:
    sent = len(production.command_ids)
    result.add(phase, "commands produced", "commands", sent, load=load)
    result.add(
        phase,
        "offered rate",
        "cmd/s",
        sent / production.seconds,
        load=load,
        limit=params.rate,
        ratio=sent / production.seconds / params.rate,
    )
    states: dict[str, int] = {}
    for row in rows:
        states[row.state.value] = states.get(row.state.value, 0) + 1
    for state, count in sorted(states.items()):
        result.add(phase, f"outcome {state}", "commands", count, load=load)
    confirmed = [r for r in rows if r.state is CommandState.CONFIRMED]
    finished = [r.finished_at for r in rows if r.finished_at is not None]
    if confirmed and finished:
        span = max(finished) - min(r.requested_at for r in rows)
        result.add(
            phase,
            "confirmed rate",
            "cmd/s",
            len(confirmed) / span,
            load=load,
            note="confirmed / (last finished - first requested)",
        )
    result.add_stats(
        phase,
        "requested -> consumed",
        "ms",
        ((r.accepted_at - r.requested_at) * 1000 for r in rows),
        load=load,
        note="produce, broker and consumer hand-off (accepted_at - requested_at)",
    )
    result.add_stats(
        phase,
        "consumed -> written",
        "ms",
        (r.consumed_to_written_ms for r in rows if r.consumed_to_written_ms is not None),
        load=load,
    )
    w2c = [r.written_to_confirmed_ms for r in confirmed if r.written_to_confirmed_ms is not None]
    result.add_stats(phase, "written -> confirmed", "ms", w2c, load=load)
    travel_ms = params.travel_time * 1000
    result.add_stats(
        phase,
        "written -> confirmed - travel",
        "ms",
        (x - travel_ms for x in w2c),
        load=load,
        note="PLC scan wait + fast-poll interval + confirmation path",
    )
    result.add_stats(
        phase,
        "requested -> confirmed",
        "ms",
        ((r.finished_at - r.requested_at) * 1000 for r in confirmed if r.finished_at is not None),
        load=load,
    )
    result.add(phase, "ticks deferred (barrier busy)", "ticks", production.deferred, load=load)
    result.add_stats(
        phase,
        "generator lateness",
        "ms",
        production.slips_ms,
        load=load,
        note="how late the bench produced each command against its schedule",
    )


def _check_outcomes(
    result: ScenarioResult, phase: str, ids: list[str], rows: list[CommandRow]
) -> None:
    """Every command produced (warm-up included) must have ended confirmed."""
    sent = len(ids)
    if len(rows) < sent:
        result.problems.append(
            f"{phase}: {sent - len(rows)} of {sent} commands have no row in PostgreSQL"
        )
    bad = [r for r in rows if r.state is not CommandState.CONFIRMED]
    if bad:
        states: dict[str, int] = {}
        for row in bad:
            states[row.state.value] = states.get(row.state.value, 0) + 1
        result.problems.append(f"{phase}: {len(bad)} of {sent} commands not confirmed: {states}")


async def polling_phase(
    services: Services,
    params: Params,
    barriers: int,
    context: Context,
    result: ScenarioResult,
) -> None:
    """Phase 2: one bridge polling `barriers` barriers at its default 1 Hz, no commands."""
    phase = f"polling {barriers}"
    monitor = context.monitor
    per_endpoint = max(barriers // params.endpoints, 1)
    barriers = per_endpoint * params.endpoints
    with ExitStack() as stack:
        sim = stack.enter_context(
            SimulatorProcess(
                context.work_dir / f"simulator-poll-{barriers}.log",
                endpoints=params.endpoints,
                barriers_per_endpoint=per_endpoint,
                control=True,
            )
        )
        register_map = await sim.ready()
        bridge = await start_bridge(
            stack,
            services,
            params.partitions,
            f"poll{barriers}",
            register_map,
            context,
            result,
            phase,
        )
        settings = bridge.settings
        await asyncio.sleep(2 * settings.poll_interval)  # let tracking settle after start-up
        stack.enter_context(monitor.watching(SIM_ROLE, sim.pid))
        stack.enter_context(monitor.watching(BRIDGE_ROLE, bridge.pid))
        before = await bridge.scrape()
        requests_before = await sim.request_count()
        with monitor.window(phase):
            await asyncio.sleep(params.poll_seconds)
            after = await bridge.scrape()
            requests = await sim.request_count() - requests_before
        bridge.check()
        sim.check()
    note_stop(result, phase, bridge)
    _poll_figures(result, phase, register_map, settings, before, after, requests)


def full_plan(register_map: RegisterMap, endpoint: str) -> tuple[ReadRequest, ...]:
    """The requests of one full poll cycle of `endpoint`, as the poller plans them."""
    barriers = register_map.barriers_on(endpoint)
    points = (point for barrier in barriers for _, point in barrier.points.by_role())
    return plan_reads(register_map.endpoint(endpoint), points)


def _poll_figures(
    result: ScenarioResult,
    phase: str,
    register_map: RegisterMap,
    settings: BridgeSettings,
    before: Metrics,
    after: Metrics,
    requests: int,
) -> None:
    """Polling figures: the simulator's request count is the truth, the metrics the bridge's view.

    The bridge observes `bridge_poll_cycle_seconds` and `bridge_poll_missed_cycles` when its
    tracker takes a cycle's samples, not when the cycle ran: a tracker running behind shows
    fewer cycles, and one catching up more, than were polled.
    """
    seconds = after.at - before.at
    barriers, endpoints = len(register_map.barriers), len(register_map.endpoints)
    load = (
        f"{barriers} barriers on {endpoints} endpoints every "
        f"{settings.poll_interval:g} s, no commands, {seconds:.0f} s"
    )
    per_round = sum(len(full_plan(register_map, e.name)) for e in register_map.endpoints)
    rounds_per_s = requests / per_round / seconds
    wanted = 1 / settings.poll_interval
    result.add(phase, "barriers owned", "barriers", after.total("bridge_owned_barriers"), load=load)
    result.add(
        phase,
        "Modbus requests/s (simulator count)",
        "req/s",
        requests / seconds,
        load=load,
        limit=per_round * wanted,
        ratio=rounds_per_s / wanted,
        note=f"{per_round} requests read every barrier once",
    )
    result.add(
        phase,
        "barrier reads/s (from requests)",
        "reads/s",
        rounds_per_s * barriers,
        load=load,
        limit=barriers * wanted,
        ratio=rounds_per_s / wanted,
    )
    missed = after.total("bridge_poll_missed_cycles") - before.total("bridge_poll_missed_cycles")
    result.add(phase, "missed cycles (bridge metric)", "cycles", missed, load=load)
    tracked = after.total("bridge_poll_cycle_seconds_count") - before.total(
        "bridge_poll_cycle_seconds_count"
    )
    expected = endpoints * seconds * wanted
    result.add(
        phase,
        "cycles tracked (bridge metric)",
        "cycles",
        tracked,
        load=load,
        limit=expected,
        ratio=tracked / expected if expected else None,
        note="cycles whose samples the tracker took in the window",
    )
    old = before.buckets("bridge_poll_cycle_seconds")
    new = after.buckets("bridge_poll_cycle_seconds")
    for q, label in ((0.5, "median"), (0.99, "p99")):
        bound = histogram_quantile(old, new, q)
        result.add(
            phase,
            f"cycle duration {label} (bucket bound)",
            "ms",
            None if bound is None else bound * 1000,
            load=load,
            note="upper bound of the Prometheus bucket holding it",
        )
    link = after.by_label("bridge_plc_link_up", "endpoint")
    down = [e for e, up in link.items() if up != 1]
    if down:
        result.problems.append(f"{phase}: links down at the end: {sorted(down)}")


async def run(params: Params, context: Context, result: ScenarioResult) -> None:
    """Start the services, then run the commands phase and each polling phase."""
    monitor = context.monitor
    monitor.watch(BENCH_ROLE, os.getpid(), ours=False)
    with Services(context.work_dir / "services", monitor) as services:
        await commands_phase(services, params, context, result)
        for barriers in params.poll_barriers:
            await polling_phase(services, params, barriers, context, result)
    result.notes += [
        "the bridge, the simulator, Tansu, PostgreSQL and Redis each run in their own process; "
        "the bench produces commands and reads results as the load generator",
        "latencies come from the commands table (consumed_to_written_ms, "
        "written_to_confirmed_ms, requested_at/accepted_at/finished_at): bridge wall-clock, "
        "same machine as the producer",
        "the bridge runs with its default poll settings (1 s full poll, 0.1 s fast poll, "
        "1 s request timeout); the simulator scans every 0.05 s",
        f"logs and service data: {Path(context.work_dir)}",
    ]


SCENARIO = Scenario(
    name="bridge",
    description="one bridge process: commands through Kafka -> Modbus -> PostgreSQL, and polling",
    params=Params,
    quick=QUICK,
    run=run,
)
