"""The bridge against a real broker, PostgreSQL, Redis and the barrier simulator."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator

import msgspec
import psycopg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bridge.messages import derived_command_id
from bridge.partitioning import barrier_partition
from plc.quality import Quality
from plc.registers import BarrierState
from simulator import Command, Fault, LinkMode
from store.types import BarrierStatus, CommandKind, CommandState, StatusRecord
from tests.bridge_stack import BridgeStack, eventually, simulated_stack

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

OPEN, CLOSE = CommandKind.OPEN, CommandKind.CLOSE
LIFECYCLE = ["command_accepted", "command_written", "command_moving", "command_confirmed"]


@pytest_asyncio.fixture
async def stack(
    kafka_bootstrap: str, db_url: str, redis_url: str, namespace: str
) -> AsyncIterator[BridgeStack]:
    async with simulated_stack(
        kafka_bootstrap, db_url, redis_url, namespace, travel_time=0.3
    ) as built:
        yield built


def writes(stack: BridgeStack, barrier_id: int) -> int:
    """Coil writes (FC5) the barrier's PLC has received."""
    endpoint = stack.sim.register_map.barrier(barrier_id).endpoint
    return stack.sim.request_counts(endpoint).get(5, 0)


async def test_open_is_confirmed_in_postgres_redis_and_history(stack: BridgeStack) -> None:
    async with stack.bridge():
        command_id = await stack.command(2, OPEN, actor="alice")
        record = await stack.outcome(command_id)
        assert record.state is CommandState.CONFIRMED
        assert record.actor == "alice"
        assert record.consumed_to_written_ms is not None
        assert record.written_to_confirmed_ms is not None
        assert record.written_to_confirmed_ms >= 250, "the simulated travel takes 0.3 s"
        assert await stack.barrier_status(2) == "opened"
        assert await stack.command_events(command_id) == LIFECYCLE
        cached = await eventually(
            lambda: stack.cached(2),
            lambda r: r is not None and r.status is BarrierStatus.OPENED and r.pending is None,
        )
        assert cached is not None
        assert (cached.quality, cached.position) == (Quality.GOOD, 100)
        assert cached.read_at is not None
        assert time.time() - cached.read_at < 2
        # The PLC's own state changes are in the history too, attributed to the command.
        moves = [
            (e, s, c, a)
            for e, s, c, a in await stack.barrier_events(2)
            if e == "state_changed" and c == command_id
        ]
        assert [(s, a) for _, s, _, a in moves] == [("opening", "alice"), ("opened", "alice")]
    results = await asyncio.to_thread(stack.read_topic, stack.settings.results_topic, 1)
    assert results[0]["command_id"] == command_id
    assert results[0]["outcome"] == "confirmed"
    assert results[0]["barrier_id"] == "2"


async def test_a_change_reaches_the_cache_only_once_postgres_has_it(stack: BridgeStack) -> None:
    """PostgreSQL, then the Redis record: what a client is shown is never unrecorded."""
    async with stack.bridge() as bridge:
        command_id = await stack.command(4, OPEN)
        await eventually(lambda: stack.outcome_state(command_id), lambda s: s == "moving")
        blocker = await psycopg.AsyncConnection.connect(stack.db_url)
        async with blocker, blocker.transaction():
            # No history can be written until this transaction ends.
            await blocker.execute("LOCK TABLE barrier_events IN EXCLUSIVE MODE")
            stack.sim.local_command(5, Command.OPEN)  # a change nobody commanded

            def both_open(records: dict[int, StatusRecord]) -> bool:
                return all(
                    b in records and records[b].status is BarrierStatus.OPENED for b in (4, 5)
                )

            async def records() -> dict[int, StatusRecord]:
                return bridge.records

            await eventually(records, both_open)
            # The bridge knows both are open; the cache must not say so yet.
            for barrier_id in (4, 5):
                cached = await stack.cached(barrier_id)
                assert cached is not None
                assert cached.status is not BarrierStatus.OPENED, f"{barrier_id} unrecorded"
        for barrier_id in (4, 5):
            await eventually(
                functools.partial(stack.cached, barrier_id),
                lambda r: r is not None and r.status is BarrierStatus.OPENED and r.pending is None,
            )
        assert (await stack.outcome(command_id)).state is CommandState.CONFIRMED
    assert ("state_changed", "opened", None, None) in await stack.barrier_events(5)


async def test_the_original_message_form_works(stack: BridgeStack) -> None:
    async with stack.bridge():
        value = msgspec.json.encode(
            {"barrier_id": "3", "command": "open", "timestamp": int(time.time())}
        )
        partition, offset = await stack.send(value, b"3")
        command_id = derived_command_id(stack.settings.commands_topic, partition, offset)
        record = await stack.outcome(command_id)
        assert (record.state, record.actor, record.kind) == (CommandState.CONFIRMED, "kafka", OPEN)
        assert stack.sim.reading(3).state is BarrierState.OPENED


async def test_a_record_on_another_partition_is_handed_to_the_barriers_owner(
    stack: BridgeStack,
) -> None:
    async with stack.bridge() as bridge:
        home = barrier_partition(5, bridge.partitions)
        elsewhere = (home + 1) % bridge.partitions
        value = msgspec.json.encode(
            {"barrier_id": "5", "command": "open", "timestamp": int(time.time())}
        )
        partition, offset = await stack.producer.send(
            stack.settings.commands_topic, value, key=b"5", partition=elsewhere
        )
        record = await stack.outcome(
            derived_command_id(stack.settings.commands_topic, partition, offset)
        )
        assert record.state is CommandState.CONFIRMED
        assert record.source is not None
        assert record.source.split("/")[1] == str(home)


async def test_a_duplicate_command_id_is_executed_once(stack: BridgeStack) -> None:
    async with stack.bridge() as bridge:
        stack.sim.reset_request_counts()
        command_id = await stack.command(1, OPEN)
        await stack.command(1, OPEN, command_id=command_id)
        assert (await stack.outcome(command_id)).state is CommandState.CONFIRMED
        # Both records are committed: the duplicate has been seen and has done nothing.
        await eventually(lambda: stack.idle(bridge), bool)
    assert await stack.command_events(command_id) == LIFECYCLE
    assert writes(stack, 1) == 1


async def test_a_duplicate_after_the_outcome_does_nothing(stack: BridgeStack) -> None:
    async with stack.bridge():
        command_id = await stack.command(3, OPEN)
        assert (await stack.outcome(command_id)).state is CommandState.CONFIRMED
        stack.sim.reset_request_counts()
        await stack.command(3, OPEN, command_id=command_id)  # redelivered, or sent again
        # Barrier 3's commands are ordered on its partition: once the next one is confirmed,
        # the duplicate before it has been handled.
        after = await stack.command(3, CLOSE)
        assert (await stack.outcome(after)).state is CommandState.CONFIRMED
    assert await stack.command_events(command_id) == LIFECYCLE
    assert writes(stack, 3) == 1, "only the close was written"


async def test_a_stuck_gate_holds_up_no_other_on_its_partition(stack: BridgeStack) -> None:
    # Barriers 1 and 7 share partition 3 of 4 (the Java client's murmur2).
    assert barrier_partition(1, 4) == barrier_partition(7, 4)
    async with stack.bridge():
        stack.sim.inject_fault(7, Fault.STUCK)
        stuck = await stack.command(7, OPEN)
        await eventually(lambda: stack.outcome_state(stuck), lambda s: s == "moving")
        other = await stack.command(1, OPEN)
        assert (await stack.outcome(other)).state is CommandState.CONFIRMED
        assert await stack.outcome_state(stuck) == "moving", "confirmed while 7 still travels"
        assert (await stack.outcome(stuck)).state is CommandState.TIMED_OUT


async def test_metrics_count_outcomes_latencies_polls_links_and_lag(stack: BridgeStack) -> None:
    async with stack.bridge() as bridge:
        registry = bridge.metrics.registry
        command_id = await stack.command(2, OPEN)
        assert (await stack.outcome(command_id)).state is CommandState.CONFIRMED
        endpoint = {"endpoint": stack.sim.register_map.barrier(2).endpoint}
        partition = {"partition": str(barrier_partition(2, 4))}

        async def value(name: str, labels: dict[str, str] | None = None) -> float | None:
            return registry.get_sample_value(name, labels or {})

        await eventually(
            lambda: value("bridge_commands_total", {"outcome": "confirmed"}), lambda v: v == 1
        )
        for histogram in ("consumed_to_written", "written_to_confirmed"):
            count = await value(f"bridge_command_{histogram}_seconds_count")
            assert count == 1, histogram
        assert (await value("bridge_poll_cycle_seconds_count", endpoint) or 0) > 0
        assert await value("bridge_plc_link_up", endpoint) == 1
        assert await value("bridge_owned_barriers") == 8
        # The consumer measures its lag now and then: once it has, nothing is left behind.
        await eventually(lambda: value("bridge_consumer_lag", partition), lambda v: v == 0)
        stack.sim.set_link(endpoint["endpoint"], LinkMode.SILENT)
        await eventually(lambda: value("bridge_plc_link_up", endpoint), lambda v: v == 0)


async def test_an_expired_command_is_never_written(stack: BridgeStack) -> None:
    async with stack.bridge():
        stack.sim.reset_request_counts()
        command_id = await stack.command(4, OPEN, requested_at=time.time() - 60)
        record = await stack.outcome(command_id)
        assert record.state is CommandState.EXPIRED
        assert "TTL" in (record.detail or "")
        assert record.written_at is None
        assert await stack.command_events(command_id) == ["command_expired"]
        assert writes(stack, 4) == 0
        assert stack.sim.reading(4).state is BarrierState.CLOSED


async def test_poison_records_go_to_the_dead_letter_topic_and_the_next_runs(
    stack: BridgeStack,
) -> None:
    async with stack.bridge():
        await stack.send(b"{not json", b"6")
        await stack.send(msgspec.json.encode({"barrier_id": "999", "command": "open"}), b"999")
        await stack.send(msgspec.json.encode({"barrier_id": "6", "command": "dance"}), b"6")
        # Once enough to stop a consumer for good: int() of thousands of digits, a float of
        # hundreds, a time PostgreSQL cannot hold, a NUL it cannot store.
        await stack.send(b'{"barrier_id": "' + b"6" * 5000 + b'", "command": "open"}', b"6")
        huge = b'{"barrier_id": "6", "command": "open", "timestamp": 1' + b"0" * 400 + b"}"
        await stack.send(huge, b"6")
        micros = {"barrier_id": "6", "command": "open", "timestamp": 1_733_230_000_000_000}
        await stack.send(msgspec.json.encode(micros), b"6")
        nul = {"barrier_id": "6", "command": "open", "actor": "eve\x00"}
        await stack.send(msgspec.json.encode(nul), b"6")
        command_id = await stack.command(6, OPEN)
        assert (await stack.outcome(command_id)).state is CommandState.CONFIRMED
    letters = await asyncio.to_thread(stack.read_topic, stack.settings.dead_letter_topic, 7)
    assert sorted(letter["reason"] for letter in letters) == [
        "bad_actor",
        "bad_barrier_id",
        "bad_timestamp",
        "bad_timestamp",
        "not_json",
        "unknown_barrier",
        "unknown_command",
    ]
    poison = next(letter for letter in letters if letter["reason"] == "not_json")
    assert (poison["value"], poison["key"]) == ("{not json", "6")


async def test_a_stuck_barrier_times_out_to_error(stack: BridgeStack) -> None:
    async with stack.bridge():
        stack.sim.inject_fault(7, Fault.STUCK)
        command_id = await stack.command(7, OPEN)
        record = await stack.outcome(command_id)
        assert record.state is CommandState.TIMED_OUT
        assert "did not reach its end position within 3 s" in (record.detail or "")
        assert await stack.barrier_status(7) == "error"
        cached = await eventually(
            lambda: stack.cached(7), lambda r: r is not None and r.pending is None
        )
        assert cached is not None
        assert cached.status is BarrierStatus.ERROR, "not 'opening', whatever the stuck PLC says"
        assert stack.sim.reading(7).state is BarrierState.OPENING


async def test_a_plc_fault_fails_the_command_with_its_code(stack: BridgeStack) -> None:
    async with stack.bridge():
        stack.sim.inject_fault(8, Fault.EMERGENCY_STOP)
        record = await stack.outcome(await stack.command(8, OPEN))
        assert (record.state, record.fault) == (CommandState.FAILED, "emergency_stop")
        assert await stack.barrier_status(8) == "error"


async def test_a_close_is_refused_while_a_vehicle_is_in_the_path(stack: BridgeStack) -> None:
    async with stack.bridge():
        assert (await stack.outcome(await stack.command(2, OPEN))).state is CommandState.CONFIRMED
        stack.sim.set_occupied(2, True)
        record = await stack.outcome(await stack.command(2, CLOSE))
        assert record.state is CommandState.REJECTED
        assert "vehicle" in (record.detail or "")
        assert await stack.barrier_status(2) == "opened"
        assert stack.sim.reading(2).state is BarrierState.OPENED


async def test_a_newer_command_supersedes_one_still_moving(stack: BridgeStack) -> None:
    async with stack.bridge():
        first = await stack.command(3, OPEN)
        await eventually(lambda: stack.outcome_state(first), lambda s: s in ("moving", "confirmed"))
        second = await stack.command(3, CLOSE)
        first_record = await stack.outcome(first)
        second_record = await stack.outcome(second)
    if first_record.state is CommandState.CONFIRMED:
        pytest.fail("the open finished before the close arrived: travel too short for this test")
    assert first_record.state is CommandState.SUPERSEDED
    assert second in (first_record.detail or "")
    assert second_record.state is CommandState.CONFIRMED
    assert stack.sim.reading(3).state is BarrierState.CLOSED


async def test_commands_superseded_while_queued_are_never_written(stack: BridgeStack) -> None:
    # Queued before the bridge starts: it takes all three at once, and each of the first two
    # already has its successor waiting when its turn comes.
    queued = [
        await stack.command(4, OPEN),
        await stack.command(4, CLOSE),
        await stack.command(4, OPEN),
    ]
    async with stack.bridge():
        records = [await stack.outcome(command_id) for command_id in queued]
    assert [r.state for r in records] == [
        CommandState.SUPERSEDED,
        CommandState.SUPERSEDED,
        CommandState.CONFIRMED,
    ]
    assert [r.written_at is None for r in records] == [True, True, False]
    writes = [w for w in stack.sim.coil_writes() if w.barrier_id == 4]
    assert [w.command for w in writes] == [Command.OPEN], "only the newest reached the PLC"
    assert stack.sim.reading(4).state is BarrierState.OPENED


async def test_a_barrier_opened_locally_is_noticed(stack: BridgeStack) -> None:
    async with stack.bridge():
        await eventually(
            lambda: stack.cached(5), lambda r: r is not None and r.status is BarrierStatus.CLOSED
        )
        stack.sim.local_command(5, Command.OPEN)
        await eventually(lambda: stack.barrier_status(5), lambda s: s == "opened")
        cached = await eventually(
            lambda: stack.cached(5), lambda r: r is not None and r.status is BarrierStatus.OPENED
        )
        assert cached is not None
        assert cached.pending is None
    changes = [(s, c) for e, s, c, _ in await stack.barrier_events(5) if e == "state_changed"]
    assert changes[-2:] == [("opening", None), ("opened", None)]


async def test_a_link_drop_shows_comm_lost_and_recovers(stack: BridgeStack) -> None:
    endpoint = stack.sim.register_map.barrier(1).endpoint
    async with stack.bridge():
        await eventually(
            lambda: stack.cached(1), lambda r: r is not None and r.quality is Quality.GOOD
        )
        await stack.sim.set_link_async(endpoint, LinkMode.SILENT)
        lost = await eventually(
            lambda: stack.cached(1), lambda r: r is not None and r.quality is Quality.COMM_LOST
        )
        assert lost is not None
        assert lost.status is BarrierStatus.CLOSED, "the last known status stays, flagged"
        other = await stack.cached(5)
        assert other is not None
        assert other.quality is Quality.GOOD, "the other PLC is unaffected"
        await stack.sim.set_link_async(endpoint, LinkMode.UP)
        await eventually(
            lambda: stack.cached(1), lambda r: r is not None and r.quality is Quality.GOOD
        )
    kinds = [e for e, *_ in await stack.barrier_events(1)]
    assert kinds.index("link_lost") < kinds.index("link_restored")


async def test_a_command_during_a_link_drop_is_retried_then_runs(stack: BridgeStack) -> None:
    endpoint = stack.sim.register_map.barrier(2).endpoint
    async with stack.bridge():
        await stack.sim.set_link_async(endpoint, LinkMode.CLOSED)
        command_id = await stack.command(2, OPEN)
        await eventually(
            lambda: stack.cached(2), lambda r: r is not None and r.quality is Quality.COMM_LOST
        )
        await stack.sim.set_link_async(endpoint, LinkMode.UP)
        assert (await stack.outcome(command_id)).state is CommandState.CONFIRMED


async def test_redis_flushed_is_rebuilt(stack: BridgeStack, redis_url: str) -> None:
    async with stack.bridge():
        await eventually(lambda: stack.cache.get_all(), lambda records: len(records) == 8)
        redis = Redis.from_url(redis_url)
        try:
            keys = [
                key async for key in redis.scan_iter(match=f"{stack.settings.cache_namespace}*")
            ]
            await redis.delete(*keys)
            assert await stack.cache.get_all() == []
            rebuilt = await eventually(
                lambda: stack.cache.get_all(), lambda records: len(records) == 8
            )
            # Rebuilt as a whole (with the sentinel that tells a flushed Redis), not only
            # refreshed record by record as the barriers are polled.
            assert await eventually(
                lambda: stack.cache.has_sentinel(stack.settings.instance_id), bool
            )
        finally:
            await redis.aclose()
    assert {r.barrier_id for r in rebuilt} == set(range(1, 9))
    assert all(r.status is BarrierStatus.CLOSED for r in rebuilt)


async def test_sigterm_finishes_the_commands_in_flight(stack: BridgeStack) -> None:
    async with stack.bridge():
        command_id = await stack.command(6, OPEN)
        await eventually(
            lambda: stack.outcome_state(command_id), lambda s: s in ("written", "moving")
        )
    # Leaving the block stops the bridge as SIGTERM does: the command was finished, not dropped.
    record = await stack.outcome(command_id, within=0.1)
    assert record.state is CommandState.CONFIRMED


async def test_a_written_command_is_followed_at_the_fast_rate(stack: BridgeStack) -> None:
    # Full polls every 5 s: only fast polling after the write can confirm within a second or so.
    async with stack.bridge(poll_interval=5.0, fast_poll_interval=0.02):
        await eventually(lambda: stack.cached(4), lambda r: r is not None)
        record = await stack.outcome(await stack.command(4, OPEN))
    assert record.state is CommandState.CONFIRMED
    assert record.written_to_confirmed_ms is not None
    assert record.written_to_confirmed_ms < 2500, "confirmed by fast polls, not the 5 s full poll"
