"""Test helper: a simulator, real services and the clients to drive and inspect a bridge."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psycopg
from confluent_kafka import Consumer

from bridge.messages import Command, command_key, encode_command
from bridge.service import Bridge
from bridge.settings import BridgeSettings
from plc.config import dump_register_map
from simulator import Simulator
from store import BarrierStore, CommandRecord, StatusCache
from store.kafka import AsyncProducer
from store.types import CommandKind, StatusRecord
from tests.services import KAFKA_ENV

T = TypeVar("T")

DEADLINE = 15.0
"""Seconds any wait below gives up after."""


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], within: float = DEADLINE
) -> T:
    """Await `probe` until `accept` says yes, or fail with the last value at the deadline."""
    give_up = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"condition not met within {within} s; last value: {value!r}")
        await asyncio.sleep(0.02)


class BridgeStack:
    """Everything a bridge test needs around the bridge: topics, database, cache, simulator."""

    def __init__(
        self, sim: Simulator, kafka: str, db_url: str, redis_url: str, namespace: str
    ) -> None:
        self.sim = sim
        self.kafka = kafka
        self.db_url = db_url
        self.redis_url = redis_url
        tag = uuid.uuid4().hex[:10]
        self.settings = BridgeSettings(
            kafka_bootstrap=kafka,
            database_url=db_url,
            redis_url=redis_url,
            cache_namespace=namespace,
            group_id=f"bridge-{tag}",
            commands_topic=f"commands-{tag}",
            results_topic=f"results-{tag}",
            dead_letter_topic=f"dlq-{tag}",
            partitions=4,
            # Tansu assigns partitions after half the session timeout; Apache Kafka refuses
            # anything under 6 s by default.
            session_timeout_ms=6000 if os.environ.get(KAFKA_ENV) else 2000,
            command_ttl=30.0,
            command_deadline=3.0,
            write_retry=0.1,
            poll_interval=0.1,
            fast_poll_interval=0.02,
            request_timeout=0.3,
            stale_after=1.0,
            shutdown_grace=5.0,
            metrics_port=0,
        )
        self.producer = AsyncProducer(kafka)
        self.cache = StatusCache(redis_url, namespace=namespace)
        self.store: BarrierStore | None = None

    async def close(self) -> None:
        """Close the stack's own clients."""
        self.producer.close()
        await self.cache.close()
        if self.store is not None:
            await self.store.close()

    @asynccontextmanager
    async def bridge(self, **overrides: Any) -> AsyncIterator[Bridge]:
        """Run a bridge in this process until the block ends (a clean SIGTERM-like stop)."""
        settings = msgspec.structs.replace(self.settings, **overrides)
        store = await BarrierStore.open(self.db_url)
        cache = StatusCache(self.redis_url, namespace=settings.cache_namespace)
        producer = AsyncProducer(self.kafka)
        bridge = Bridge(settings, self.sim.register_map, store, cache, producer)
        try:
            await bridge.start()
            async with asyncio.timeout(DEADLINE):
                await bridge.ready.wait()
            if self.store is None:
                self.store = await BarrierStore.open(self.db_url)
            yield bridge
        finally:
            await bridge.stop()
            producer.close()
            await cache.close()
            await store.close()

    def process_env(self, tmp: Path, instance: str, metrics_port: int) -> dict[str, str]:
        """Environment for ``python -m bridge`` running against this stack."""
        map_file = tmp / f"barriers-{instance}.toml"
        map_file.write_text(dump_register_map(self.sim.register_map))
        env = dict(os.environ)
        for field in msgspec.structs.fields(BridgeSettings):
            env[f"BRIDGE_{field.name.upper()}"] = str(getattr(self.settings, field.name))
        env.update(
            BRIDGE_REGISTER_MAP=str(map_file),
            BRIDGE_INSTANCE_ID=instance,
            BRIDGE_METRICS_PORT=str(metrics_port),
            BRIDGE_LOG_LEVEL="INFO",
        )
        return env

    async def spawn(
        self, tmp: Path, instance: str, metrics_port: int
    ) -> asyncio.subprocess.Process:
        """Start ``python -m bridge`` as a separate process; its log goes to a file in `tmp`."""
        # The child writes to its own copy of the descriptor: ours is closed at once.
        with (tmp / f"bridge-{instance}.log").open("ab") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                env=self.process_env(tmp, instance, metrics_port),
                stdout=log,
                stderr=log,
            )

    async def send(self, value: bytes, key: bytes | None) -> tuple[int, int]:
        """Produce a raw record to the commands topic; return its (partition, offset)."""
        return await self.producer.send(self.settings.commands_topic, value, key=key)

    async def command(
        self,
        barrier_id: int,
        kind: CommandKind,
        *,
        requested_at: float | None = None,
        command_id: str | None = None,
        actor: str = "tester",
    ) -> str:
        """Send one command in our rich form; return its command id."""
        command = Command(
            command_id=command_id or str(uuid.uuid4()),
            barrier_id=barrier_id,
            kind=kind,
            actor=actor,
            requested_at=time.time() if requested_at is None else requested_at,
            source="test",
        )
        await self.send(encode_command(command), command_key(barrier_id))
        return command.command_id

    async def _store(self) -> BarrierStore:
        if self.store is None:
            self.store = await BarrierStore.open(self.db_url)
        return self.store

    async def outcome(self, command_id: str, within: float = DEADLINE) -> CommandRecord:
        """Await the command's terminal state."""
        store = await self._store()
        record = await eventually(
            lambda: store.get_command(command_id),
            lambda r: r is not None and r.state.terminal,
            within,
        )
        assert record is not None
        return record

    async def outcome_state(self, command_id: str) -> str | None:
        """The command's current state, or None before it is recorded."""
        store = await self._store()
        record = await store.get_command(command_id)
        return None if record is None else record.state.value

    @staticmethod
    async def idle(bridge: Bridge) -> bool:
        """Whether the bridge has no command running and every record it consumed committed."""
        return not bridge.runs and not bridge.offsets.committable() and bridge.offsets.all_done()

    async def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Run one read-only query against the bridge's database."""
        async with await psycopg.AsyncConnection.connect(self.db_url) as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def command_events(self, command_id: str) -> list[str]:
        """The command's lifecycle events, oldest first."""
        rows = await self.query(
            "SELECT event_type FROM barrier_events WHERE command_id = %s AND event_type LIKE 'command_%%' ORDER BY id",
            command_id,
        )
        return [row[0] for row in rows]

    async def barrier_events(
        self, barrier_id: int
    ) -> list[tuple[str, str | None, str | None, str | None]]:
        """(event_type, status, command_id, actor) of the barrier's events, oldest first."""
        rows = await self.query(
            "SELECT event_type, status, command_id::text, actor FROM barrier_events WHERE barrier_id = %s ORDER BY id",
            barrier_id,
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def barrier_status(self, barrier_id: int) -> str | None:
        """The confirmed status in PostgreSQL's ``barriers`` table."""
        rows = await self.query("SELECT status FROM barriers WHERE id = %s", barrier_id)
        return rows[0][0] if rows else None

    async def cached(self, barrier_id: int) -> StatusRecord | None:
        """The barrier's record in Redis."""
        return await self.cache.get(barrier_id)

    def read_topic(self, topic: str, count: int, timeout: float = DEADLINE) -> list[Any]:
        """Read `count` JSON records from the start of `topic` (blocking; run in a thread)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.kafka,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "session.timeout.ms": self.settings.session_timeout_ms,
            }
        )
        consumer.subscribe([topic])
        out: list[Any] = []
        give_up = time.monotonic() + timeout
        try:
            while len(out) < count and time.monotonic() < give_up:
                msg = consumer.poll(0.1)
                value = None if msg is None or msg.error() is not None else msg.value()
                if value is not None:
                    out.append(msgspec.json.decode(value))
        finally:
            consumer.close()
        return out


@asynccontextmanager
async def simulated_stack(
    kafka: str, db_url: str, redis_url: str, namespace: str, *, travel_time: float, **overrides: Any
) -> AsyncIterator[BridgeStack]:
    """A `BridgeStack` over a fresh 8-barrier simulator (2 PLCs), settings overridden."""
    async with Simulator.uniform(
        endpoints=2, barriers_per_endpoint=4, travel_time=travel_time, scan_interval=0.01
    ) as sim:
        built = BridgeStack(sim, kafka, db_url, redis_url, namespace)
        built.settings = msgspec.structs.replace(built.settings, **overrides)
        try:
            yield built
        finally:
            await built.close()
