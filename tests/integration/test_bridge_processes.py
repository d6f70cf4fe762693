"""The bridge as real ``python -m bridge`` processes: killed, restarted, sharing, stopped.

Where a process must die the bridge runs as a subprocess (`BridgeStack.spawn`); it is ready once
its metrics endpoint reports owned barriers. Every process started here is killed in a
``finally`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio
from confluent_kafka import Consumer, TopicPartition

from bridge.messages import Command, command_key, encode_command
from bridge.service import Bridge
from bridge.settings import BridgeSettings
from plc.config import dump_register_map
from plc.registers import BarrierState
from simulator import Simulator
from stack.services import RedisServer, free_port
from store.cache import CacheUnavailable
from store.types import BarrierStatus, CommandKind, CommandState, StatusRecord
from tests.bridge_stack import DEADLINE, BridgeStack, eventually, simulated_stack

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

OPEN = CommandKind.OPEN
LIFECYCLE = ["command_accepted", "command_written", "command_moving", "command_confirmed"]
TRAVEL_TIME = 2.0
"""Seconds a simulated barrier takes to open: long enough to kill or stop a bridge mid-travel."""
ALL_BARRIERS = set(range(1, 9))
RESULTS_WAIT = 3.0
"""Seconds to read a results topic for a second record that must not be there."""

COMMAND_DEADLINE = 15.0
"""The production command deadline: a restart (a new process plus the group's session timeout
for the dead member) fits in it."""


@pytest_asyncio.fixture
async def stack(
    kafka_bootstrap: str, db_url: str, redis_url: str, namespace: str
) -> AsyncIterator[BridgeStack]:
    async with simulated_stack(
        kafka_bootstrap,
        db_url,
        redis_url,
        namespace,
        travel_time=TRAVEL_TIME,
        command_deadline=COMMAND_DEADLINE,
    ) as built:
        yield built


def scrape(port: int, sample: str) -> float | None:
    """One sample (``name`` or ``name{labels}``) of a bridge's metrics, None if not served."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as response:
            text: str = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


CONFIRMED_SAMPLE = 'bridge_commands_total{outcome="confirmed"}'
CONFIRMED_LABELS = ("bridge_commands_total", {"outcome": "confirmed"})


class BridgeProcess:
    """A ``python -m bridge`` subprocess and its metrics endpoint."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def metric(self, sample: str) -> float | None:
        """A sample of the process's metrics; fail at once if the process has exited."""
        if self.process.returncode is not None:
            raise AssertionError(
                f"bridge exited with {self.process.returncode}; log:\n{self.log_tail()}"
            )
        return await asyncio.to_thread(scrape, self.port, sample)

    async def owned(self) -> float | None:
        return await self.metric("bridge_owned_barriers")

    async def ready(self) -> None:
        """Wait until the process polls some barriers (it has been assigned partitions)."""
        await eventually(self.owned, lambda n: n is not None and n > 0)

    async def confirmed(self) -> float:
        return await self.metric(CONFIRMED_SAMPLE) or 0.0


@contextlib.asynccontextmanager
async def bridge_process(
    stack: BridgeStack, tmp: Path, instance: str
) -> AsyncIterator[BridgeProcess]:
    """Run ``python -m bridge`` against `stack`; SIGKILL it at the end if it still runs."""
    port = free_port()
    process = await stack.spawn(tmp, instance, port)
    try:
        yield BridgeProcess(process, port, tmp / f"bridge-{instance}.log")
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()


def owned_barriers(bridge: Bridge) -> set[int]:
    return {b for b in ALL_BARRIERS if bridge.owns(b)}


async def cached_or_none(stack: BridgeStack, barrier_id: int) -> StatusRecord | None:
    """The barrier's Redis record, None while there is none or Redis is down."""
    try:
        return await stack.cached(barrier_id)
    except CacheUnavailable:
        return None


def committed_offset(settings: BridgeSettings, partition: int) -> int:
    """The offset the bridges' group has committed on `partition` of the commands topic."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.group_id,
            "enable.auto.commit": False,
        }
    )
    try:
        [committed] = consumer.committed(
            [TopicPartition(settings.commands_topic, partition)], timeout=5.0
        )
        offset: int = committed.offset
        return offset
    finally:
        consumer.close()


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``python -m bridge`` to its end; return its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def clean_env() -> dict[str, str]:
    """Our environment without any ``BRIDGE_`` setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}


# -- the command line --------------------------------------------------------------------------


async def test_help_lists_the_environment_variables() -> None:
    code, out, _ = await run_cli("--help", env=clean_env())
    assert code == 0
    for field in msgspec.structs.fields(BridgeSettings):
        assert f"BRIDGE_{field.name.upper()}" in out


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        pytest.param("[[endpoints]\nname = ", "not valid TOML", id="not-toml"),
        pytest.param(None, "barriers[1].addresses.open_request.address", id="address-out-of-range"),
    ],
)
async def test_a_bad_register_map_exits_2_naming_the_file(
    tmp_path: Path, content: str | None, complaint: str
) -> None:
    async with Simulator.uniform(endpoints=1, barriers_per_endpoint=2) as sim:
        valid = dump_register_map(sim.register_map)
    bad = tmp_path / "bad-barriers.toml"
    bad.write_text(
        valid.replace("address = 8 }", "address = 70000 }", 1) if content is None else content
    )
    env = clean_env() | {"BRIDGE_REGISTER_MAP": str(bad), "BRIDGE_METRICS_PORT": "0"}
    code, _, err = await run_cli(env=env)
    assert code == 2, err
    assert str(bad) in err
    assert complaint in err


# -- processes that die ------------------------------------------------------------------------


async def test_sigkill_after_the_coil_write_then_restart_ends_the_command_once(
    stack: BridgeStack, tmp_path: Path
) -> None:
    barrier = 3
    endpoint = stack.sim.register_map.barrier(barrier).endpoint
    async with bridge_process(stack, tmp_path, "first") as first:
        await first.ready()
        stack.sim.reset_request_counts()
        command_id = await stack.command(barrier, OPEN)
        await eventually(
            lambda: stack.outcome_state(command_id), lambda s: s in ("written", "moving")
        )
        first.process.kill()
        assert await first.process.wait() == -signal.SIGKILL
    assert stack.sim.reading(barrier).state is not BarrierState.OPENED, "killed mid-travel"
    assert await stack.outcome_state(command_id) in ("written", "moving")

    async with bridge_process(stack, tmp_path, "second") as second:
        record = await stack.outcome(command_id, within=DEADLINE + TRAVEL_TIME)
        assert record.state is CommandState.CONFIRMED, record.detail
        await eventually(second.confirmed, lambda n: n == 1)  # the restarted process did it
    # Both processes are gone: whatever they produced is on the topic, and one fetch gets it all.
    results = await asyncio.to_thread(
        stack.read_topic, stack.settings.results_topic, 2, timeout=RESULTS_WAIT
    )
    assert [(r["command_id"], r["outcome"]) for r in results] == [(command_id, "confirmed")]
    events = await stack.command_events(command_id)
    assert events.count("command_written") == 1, events
    assert events[0] == "command_accepted"
    assert events[-1] == "command_confirmed"
    assert len(events) == len(set(events)), events
    assert stack.sim.request_counts(endpoint).get(5, 0) == 1, "one coil write, not two"
    assert await stack.barrier_status(barrier) == "opened"


async def test_two_bridges_share_the_barriers_and_one_takes_over(
    kafka_bootstrap: str, db_url: str, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    async with (
        simulated_stack(
            kafka_bootstrap,
            db_url,
            redis_url,
            namespace,
            travel_time=0.3,
            command_deadline=COMMAND_DEADLINE,
        ) as stack,
        stack.bridge() as a,
        bridge_process(stack, tmp_path, "b") as b,
    ):
        partitions = set(range(a.partitions))

        async def shares() -> tuple[set[int], float | None]:
            return set(a.owned_partitions), await b.owned()

        await eventually(
            shares,
            lambda s: (
                bool(s[0])
                and s[0] != partitions
                and s[1] is not None
                and s[1] > 0
                and len(owned_barriers(a)) + s[1] == len(ALL_BARRIERS)
            ),
        )
        mine = min(owned_barriers(a))
        theirs = min(ALL_BARRIERS - owned_barriers(a))
        ids = [await stack.command(mine, OPEN), await stack.command(theirs, OPEN)]
        for command_id in ids:
            assert (await stack.outcome(command_id)).state is CommandState.CONFIRMED

        # Each bridge drove its own barrier (a count moves just after the outcome is durable).
        async def a_confirmed() -> float | None:
            return a.metrics.registry.get_sample_value(*CONFIRMED_LABELS)

        await eventually(a_confirmed, lambda n: n == 1)
        await eventually(b.confirmed, lambda n: n == 1)

        b.process.kill()
        assert await b.process.wait() == -signal.SIGKILL
        killed = time.monotonic()
        session = stack.settings.session_timeout_ms / 1000

        async def owned_by_a() -> set[int]:
            return set(a.owned_partitions)

        await eventually(owned_by_a, lambda owned: owned == partitions, within=session + DEADLINE)
        took_over = time.monotonic() - killed
        assert owned_barriers(a) == ALL_BARRIERS
        command_id = await stack.command(theirs, CommandKind.CLOSE)
        assert (await stack.outcome(command_id)).state is CommandState.CONFIRMED
        await eventually(a_confirmed, lambda n: n == 2)
        assert await stack.barrier_status(theirs) == "closed"
    print(f"takeover {took_over:.1f} s after SIGKILL (session timeout {session:g} s)")


async def test_sigterm_finishes_the_command_in_flight_and_exits_0(
    stack: BridgeStack, tmp_path: Path
) -> None:
    barrier = 5
    grace = stack.settings.shutdown_grace
    async with bridge_process(stack, tmp_path, "only") as only:
        await only.ready()
        command = Command(
            command_id=str(uuid.uuid4()),
            barrier_id=barrier,
            kind=OPEN,
            actor="tester",
            requested_at=time.time(),
            source="test",
        )
        partition, offset = await stack.send(encode_command(command), command_key(barrier))
        await eventually(
            lambda: stack.outcome_state(command.command_id), lambda s: s in ("written", "moving")
        )
        assert stack.sim.reading(barrier).state is not BarrierState.OPENED, "still moving"
        only.process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = await asyncio.wait_for(only.process.wait(), grace + DEADLINE)
        stopped_after = time.monotonic() - stopping
    assert code == 0, only.log_tail()
    assert stopped_after < grace, f"took {stopped_after:.1f} s"
    # Nobody else runs: the outcome was recorded before the process exited.
    record = await stack.outcome(command.command_id, within=0.1)
    assert record.state is CommandState.CONFIRMED
    assert await stack.command_events(command.command_id) == LIFECYCLE
    assert stack.sim.reading(barrier).state is BarrierState.OPENED
    committed = await asyncio.to_thread(committed_offset, stack.settings, partition)
    assert committed == offset + 1, "the finished command's offset was committed"
    results = await asyncio.to_thread(stack.read_topic, stack.settings.results_topic, 1)
    assert [(r["command_id"], r["outcome"]) for r in results] == [(command.command_id, "confirmed")]
    print(f"SIGTERM to exit {stopped_after:.1f} s (grace {grace:g} s)")


# -- Redis down --------------------------------------------------------------------------------


async def test_commands_run_while_redis_is_down_and_the_cache_catches_up(
    kafka_bootstrap: str, db_url: str, namespace: str, tmp_path: Path
) -> None:
    redis_dir = tmp_path / "redis"
    server = RedisServer(redis_dir, port=free_port())
    await asyncio.to_thread(server.start)
    try:
        async with (
            simulated_stack(
                kafka_bootstrap,
                db_url,
                server.url,
                namespace,
                travel_time=0.3,
                command_deadline=COMMAND_DEADLINE,
            ) as stack,
            stack.bridge(),
        ):
            barrier = 2
            await eventually(
                lambda: cached_or_none(stack, barrier),
                lambda r: r is not None and r.status is BarrierStatus.CLOSED,
            )
            await asyncio.to_thread(server.stop)
            with pytest.raises(CacheUnavailable):
                await stack.cached(barrier)

            command_id = await stack.command(barrier, OPEN)
            record = await stack.outcome(command_id)
            assert record.state is CommandState.CONFIRMED
            assert await stack.barrier_status(barrier) == "opened"
            assert await stack.command_events(command_id) == LIFECYCLE
            with pytest.raises(CacheUnavailable):
                await stack.cached(barrier)  # it all happened without Redis

            server = RedisServer(redis_dir, port=server.port)
            await asyncio.to_thread(server.start)
            cached = await eventually(
                lambda: cached_or_none(stack, barrier),
                lambda r: r is not None and r.status is BarrierStatus.OPENED,
            )
            assert cached is not None
            assert cached.pending is None
            assert cached.position == 100
            every = await eventually(stack.cache.get_all, lambda rs: len(rs) == len(ALL_BARRIERS))
            assert {r.barrier_id for r in every} == ALL_BARRIERS
    finally:
        await asyncio.to_thread(server.stop)
