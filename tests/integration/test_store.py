"""The PostgreSQL store and the Redis status cache against the session's real servers.

Each PostgreSQL test gets a schema of its own (via ``search_path``), each Redis test a key
namespace of its own, so tests share the servers without seeing each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psycopg
import pytest
import pytest_asyncio
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from plc.quality import Quality
from plc.registers import BarrierConfig, BarrierPoints, uniform_register_map
from stack.services import free_port
from store import (
    MIGRATIONS,
    BarrierStore,
    CacheUnavailable,
    EventFilter,
    IdempotentAnswer,
    KeyClaim,
    NewCommand,
    StatusCache,
    StoreUnavailable,
    migrate,
)
from store.postgres import EVENTS_PREPARE, events_query
from store.types import (
    BarrierStatus,
    CommandKind,
    CommandState,
    EventType,
    PendingCommand,
    StatusRecord,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

DEADLINE = 5.0  # seconds; every wait below gives up after this
T0 = 1_733_230_000.0  # unix seconds; the tests' clock starts here
BARRIERS = uniform_register_map([("127.0.0.1", 5020)], barriers_per_endpoint=3).barriers
VERSIONS = [version for version, _, _ in MIGRATIONS]


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[BarrierStore]:
    """Yield a migrated store whose barriers are ``BARRIERS``."""
    async with await BarrierStore.open(db_url) as opened:
        await opened.migrate()
        await opened.sync_barriers(BARRIERS)
        yield opened


@pytest_asyncio.fixture
async def cache(redis_url: str, namespace: str) -> AsyncIterator[StatusCache]:
    """Yield a status cache in the test's namespace; delete its keys afterwards."""
    async with StatusCache(redis_url, namespace=namespace) as opened:
        yield opened
    async with Redis.from_url(redis_url) as client:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)


async def fetch(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    """Run `query` on a connection of its own; return its rows, if it returns any."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(query.encode(), params or None)
        return await cursor.fetchall() if cursor.description else []


def command(barrier_id: int = 1, **changes: Any) -> NewCommand:
    """Return a fresh open command for `barrier_id`, accepted at T0."""
    fields: dict[str, Any] = {
        "command_id": str(uuid.uuid4()),
        "barrier_id": barrier_id,
        "kind": CommandKind.OPEN,
        "actor": "operator-7",
        "requested_at": T0 - 0.2,
        "accepted_at": T0,
        "source": "barrier_commands/0/42",
    } | changes
    return NewCommand(**fields)


async def events_of(url: str, command_id: str) -> list[tuple[Any, ...]]:
    """Return a command's events, oldest first: (type, barrier, actor, status, detail, time)."""
    return await fetch(
        url,
        "SELECT event_type, barrier_id, actor, status, detail,"
        " extract(epoch FROM created_at)::float8"
        " FROM barrier_events WHERE command_id = %s ORDER BY id",
        command_id,
    )


# PostgreSQL: migrations


async def test_migrate_twice_applies_each_version_once(db_url: str) -> None:
    async with await BarrierStore.open(db_url) as store:
        assert await store.migrate() == VERSIONS
        assert await store.migrate() == []
    rows = await fetch(db_url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(version, name) for version, name, _ in MIGRATIONS]


async def test_migrate_from_two_connections_at_once(db_url: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as first,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as second,
    ):
        applied = await asyncio.gather(migrate(first), migrate(second))
    assert sorted(applied[0] + applied[1]) == VERSIONS  # each version applied by exactly one
    assert await fetch(db_url, "SELECT version FROM schema_migrations ORDER BY version") == [
        (version,) for version in VERSIONS
    ]


async def test_barriers_table_keeps_the_original_shape(store: BarrierStore, db_url: str) -> None:
    columns = await fetch(
        db_url,
        "SELECT column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'barriers'",
    )
    shape = {name: (data_type, nullable) for name, data_type, nullable, _ in columns}
    assert shape["id"] == ("integer", "NO")
    assert shape["name"] == ("text", "NO")
    assert shape["status"] == ("text", "YES")
    assert shape["last_updated"] == ("timestamp without time zone", "YES")
    defaults = {name: default for name, _, _, default in columns}
    assert defaults["id"].startswith("nextval(")  # SERIAL

    await fetch(db_url, "UPDATE barriers SET status = 'opened' WHERE id = 1")
    with pytest.raises(psycopg.errors.CheckViolation):
        await fetch(db_url, "UPDATE barriers SET status = 'opening' WHERE id = 1")
    with pytest.raises(psycopg.errors.CheckViolation):
        await fetch(db_url, "INSERT INTO barriers (name, status) VALUES ('x', 'opening')")


# PostgreSQL: barriers


async def test_sync_barriers_upserts_deactivates_and_advances_the_sequence(
    store: BarrierStore, db_url: str
) -> None:
    rows = await store.barrier_rows()
    assert [(row.id, row.name, row.status, row.active) for row in rows] == [
        (1, "Barrier 1", None, True),
        (2, "Barrier 2", None, True),
        (3, "Barrier 3", None, True),
    ]
    stored = await fetch(db_url, "SELECT id, endpoint, slot, points FROM barriers ORDER BY id")
    assert [
        BarrierConfig(
            id=id_,
            name=f"Barrier {id_}",
            endpoint=endpoint,
            slot=slot,
            points=msgspec.convert(points, BarrierPoints),
        )
        for id_, endpoint, slot, points in stored
    ] == list(BARRIERS)

    renamed = msgspec.structs.replace(BARRIERS[1], name="Gate B", slot=5)
    await store.sync_barriers([BARRIERS[0], renamed])
    rows = await store.barrier_rows()
    assert [(row.id, row.name, row.active) for row in rows] == [
        (1, "Barrier 1", True),
        (2, "Gate B", True),
        (3, "Barrier 3", False),  # left the map: kept for its history, marked inactive
    ]
    assert await fetch(db_url, "SELECT slot FROM barriers WHERE id = 2") == [(5,)]

    await store.sync_barriers(BARRIERS)  # back in the map: active again
    assert all(row.active for row in await store.barrier_rows())
    # The SERIAL sequence hands out ids past the ones the map chose.
    assert await fetch(db_url, "INSERT INTO barriers (name) VALUES ('new') RETURNING id") == [(4,)]


# PostgreSQL: commands and events


async def test_start_command_records_once(store: BarrierStore, db_url: str) -> None:
    cmd = command(detail="from the gatehouse")
    record, created = await store.start_command(cmd)
    assert created
    assert record.command_id == cmd.command_id
    assert (record.kind, record.state, record.actor) == (
        CommandKind.OPEN,
        CommandState.ACCEPTED,
        "operator-7",
    )
    assert record.requested_at == pytest.approx(T0 - 0.2)
    assert record.accepted_at == pytest.approx(T0)
    assert (record.written_at, record.finished_at) == (None, None)
    assert record.source == "barrier_commands/0/42"
    assert record.detail == "from the gatehouse"

    again, created_again = await store.start_command(
        msgspec.structs.replace(cmd, accepted_at=T0 + 9, actor="someone else")
    )
    assert not created_again
    assert again == record  # the record as it stands, untouched
    assert await store.get_command(cmd.command_id) == record

    events = await events_of(db_url, cmd.command_id)
    assert len(events) == 1
    event_type, barrier_id, actor, status, detail, at = events[0]
    assert (event_type, barrier_id, actor, status) == ("command_accepted", 1, "operator-7", None)
    assert detail == {"kind": "open", "source": "barrier_commands/0/42", "detail": cmd.detail}
    assert at == pytest.approx(T0)


async def test_start_command_redelivered_concurrently_records_once(
    store: BarrierStore, db_url: str
) -> None:
    cmd = command()
    results = await asyncio.gather(*(store.start_command(cmd) for _ in range(4)))
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert len({record for record, _ in results}) == 1
    assert len(await events_of(db_url, cmd.command_id)) == 1


async def test_every_command_state_and_kind_fits_the_schema(store: BarrierStore) -> None:
    for kind in CommandKind:
        for state in CommandState:
            record, created = await store.start_command(command(kind=kind, state=state))
            assert created
            assert (record.kind, record.state) == (kind, state)
            # A command recorded already ended (e.g. expired on arrival) is finished at once.
            assert record.finished_at == (pytest.approx(T0) if state.terminal else None)


async def test_get_command_unknown_is_none(store: BarrierStore) -> None:
    assert await store.get_command(str(uuid.uuid4())) is None


async def test_advance_command_through_its_lifecycle(store: BarrierStore, db_url: str) -> None:
    cmd = command(barrier_id=2)
    await store.start_command(cmd)

    assert await store.advance_command(cmd.command_id, CommandState.WRITTEN, at=T0 + 0.05)
    written = await store.get_command(cmd.command_id)
    assert written is not None
    assert written.state is CommandState.WRITTEN
    assert written.written_at == pytest.approx(T0 + 0.05)
    assert written.consumed_to_written_ms == pytest.approx(50.0, abs=0.01)
    assert written.finished_at is None

    # A transitional status goes into the history, never into barriers.status.
    assert await store.advance_command(
        cmd.command_id, CommandState.MOVING, at=T0 + 0.3, barrier_status=BarrierStatus.OPENING
    )
    assert (await store.barrier_rows())[1].status is None

    assert await store.advance_command(
        cmd.command_id,
        CommandState.CONFIRMED,
        at=T0 + 1.25,
        barrier_status=BarrierStatus.OPENED,
        event_detail={"position": 100},
    )
    done = await store.get_command(cmd.command_id)
    assert done is not None
    assert done.state is CommandState.CONFIRMED
    assert done.finished_at == pytest.approx(T0 + 1.25)
    assert done.consumed_to_written_ms == pytest.approx(50.0, abs=0.01)
    assert done.written_to_confirmed_ms == pytest.approx(1200.0, abs=0.01)
    barrier = (await store.barrier_rows())[1]
    assert (barrier.id, barrier.status, barrier.fault) == (2, BarrierStatus.OPENED, None)
    assert barrier.last_updated == pytest.approx(T0 + 1.25)
    # last_updated is a TIMESTAMP holding UTC.
    assert await fetch(
        db_url,
        "SELECT last_updated = to_timestamp(%s) AT TIME ZONE 'UTC' FROM barriers WHERE id = 2",
        T0 + 1.25,
    ) == [(True,)]

    assert [(e[0], e[2], e[3], e[4]) for e in await events_of(db_url, cmd.command_id)] == [
        ("command_accepted", "operator-7", None, {"kind": "open", "source": cmd.source}),
        ("command_written", "operator-7", None, {}),
        ("command_moving", "operator-7", "opening", {}),
        ("command_confirmed", "operator-7", "opened", {"position": 100}),
    ]

    # Terminal: refused, and nothing at all is written.
    assert not await store.advance_command(
        cmd.command_id,
        CommandState.FAILED,
        at=T0 + 2,
        fault="motor_fault",
        barrier_status=BarrierStatus.ERROR,
    )
    assert await store.get_command(cmd.command_id) == done
    assert (await store.barrier_rows())[1] == barrier
    assert len(await events_of(db_url, cmd.command_id)) == 4

    assert not await store.advance_command(str(uuid.uuid4()), CommandState.WRITTEN, at=T0)


async def test_advance_command_racing_to_an_end_ends_once(store: BarrierStore, db_url: str) -> None:
    cmd = command()
    await store.start_command(cmd)
    results = await asyncio.gather(
        store.advance_command(cmd.command_id, CommandState.CONFIRMED, at=T0 + 1),
        store.advance_command(cmd.command_id, CommandState.TIMED_OUT, at=T0 + 1),
        store.advance_command(cmd.command_id, CommandState.SUPERSEDED, at=T0 + 1),
    )
    assert sorted(results) == [False, False, True]
    assert len(await events_of(db_url, cmd.command_id)) == 2  # accepted + the one ending


async def test_advance_command_failure_records_fault_and_error(
    store: BarrierStore, db_url: str
) -> None:
    never_written = command(barrier_id=3, kind=CommandKind.CLOSE)
    await store.start_command(never_written)
    assert await store.advance_command(
        never_written.command_id,
        CommandState.FAILED,
        at=T0 + 0.5,
        detail="PLC reported a fault",
        fault="obstruction",
        barrier_status=BarrierStatus.ERROR,
    )
    failed = await store.get_command(never_written.command_id)
    assert failed is not None
    assert (failed.state, failed.detail, failed.fault) == (
        CommandState.FAILED,
        "PLC reported a fault",
        "obstruction",
    )
    assert (failed.written_at, failed.consumed_to_written_ms) == (None, None)
    assert failed.written_to_confirmed_ms is None  # never written
    barrier = (await store.barrier_rows())[2]
    assert (barrier.status, barrier.fault) == (BarrierStatus.ERROR, "obstruction")
    last_event = (await events_of(db_url, never_written.command_id))[-1]
    assert last_event[0] == "command_failed"
    assert last_event[3:5] == ("error", {"fault": "obstruction"})


async def test_advance_command_is_all_or_nothing(store: BarrierStore, db_url: str) -> None:
    cmd = command()
    await store.start_command(cmd)
    # The event's detail cannot be encoded: the command's update before it is rolled back too.
    with pytest.raises(TypeError):
        await store.advance_command(
            cmd.command_id,
            CommandState.CONFIRMED,
            at=T0 + 1,
            barrier_status=BarrierStatus.OPENED,
            event_detail={"unencodable": object()},
        )
    record = await store.get_command(cmd.command_id)
    assert record is not None
    assert record.state is CommandState.ACCEPTED
    assert (await store.barrier_rows())[0].status is None
    assert len(await events_of(db_url, cmd.command_id)) == 1


async def test_record_event_updates_barriers_only_for_confirmed_states(
    store: BarrierStore, db_url: str
) -> None:
    await store.record_event(
        1,
        EventType.STATE_CHANGED,
        at=T0,
        status=BarrierStatus.OPENING,
        position=40,
        detail={"cause": "push button"},
    )
    barrier = (await store.barrier_rows())[0]
    assert (barrier.status, barrier.position) == (None, None)

    await store.record_event(1, EventType.STATE_CHANGED, at=T0 + 2, status=BarrierStatus.OPENED)
    await store.record_event(
        1,
        EventType.FAULT_RAISED,
        at=T0 + 3,
        status=BarrierStatus.ERROR,
        fault="emergency_stop",
        position=60,
    )
    barrier = (await store.barrier_rows())[0]
    assert (barrier.status, barrier.fault, barrier.position) == (
        BarrierStatus.ERROR,
        "emergency_stop",
        60,
    )
    assert barrier.last_updated == pytest.approx(T0 + 3)

    await store.record_event(1, EventType.LINK_LOST, at=T0 + 4, detail={"endpoint": "plc-1"})
    assert (await store.barrier_rows())[0] == barrier  # no status: the barrier row stays

    await store.record_event(
        1, EventType.FAULT_CLEARED, at=T0 + 5, status=BarrierStatus.CLOSED, position=0
    )
    barrier = (await store.barrier_rows())[0]
    assert (barrier.status, barrier.fault, barrier.position) == (BarrierStatus.CLOSED, None, 0)

    events = await fetch(
        db_url,
        "SELECT event_type, status, detail, command_id, actor FROM barrier_events"
        " WHERE barrier_id = 1 ORDER BY created_at, id",
    )
    assert events == [
        ("state_changed", "opening", {"cause": "push button"}, None, None),
        ("state_changed", "opened", {}, None, None),
        ("fault_raised", "error", {"fault": "emergency_stop"}, None, None),
        ("link_lost", None, {"endpoint": "plc-1"}, None, None),
        ("fault_cleared", "closed", {}, None, None),
    ]


# PostgreSQL: the event history at scale

HISTORY_ROWS = 200_000
HISTORY_BARRIERS = uniform_register_map([("127.0.0.1", 5020)], barriers_per_endpoint=50).barriers
A_COMMAND = str(uuid.UUID(hashlib.md5(b"3001").hexdigest()))

# Groups of three rows: the three events of one command (accepted, written, confirmed) in three
# groups of five, state changes in the others, now and then a lost link; two rows a second.
_FILL_HISTORY = """
INSERT INTO barrier_events (barrier_id, event_type, command_id, actor, detail, created_at)
SELECT 1 + (i / 15) %% 50,
       CASE WHEN (i / 3) %% 5 < 3
            THEN (ARRAY['command_accepted', 'command_written', 'command_confirmed'])[1 + i %% 3]
            WHEN (i / 3) %% 97 = 0 THEN 'link_lost'
            ELSE 'state_changed' END,
       CASE WHEN (i / 3) %% 5 < 3 THEN md5((i / 3)::text)::uuid END,
       'operator',
       '{}',
       timestamptz '2025-01-01 00:00:00+00' + (i / 2) * interval '1 second'
FROM generate_series(0, %s - 1) AS i
"""

HISTORY_FILTERS: list[tuple[EventFilter, set[str]]] = [
    (EventFilter(), {"barrier_events_newest"}),
    (EventFilter(barrier_id=7), {"barrier_events_barrier_newest"}),
    # Two rows in five: reading the newest and skipping the others costs as little.
    (
        EventFilter(event_type="state_changed"),
        {"barrier_events_type_newest", "barrier_events_newest"},
    ),
    (EventFilter(event_type="link_lost"), {"barrier_events_type_newest"}),
    (EventFilter(command_id=A_COMMAND), {"barrier_events_command_newest"}),
    (
        EventFilter(barrier_id=7, event_type="command_confirmed"),
        {"barrier_events_barrier_type_newest"},
    ),
    (
        EventFilter(
            barrier_id=7,
            since=datetime(2025, 1, 1, 3, tzinfo=UTC),
            until=datetime(2025, 1, 1, 20, tzinfo=UTC),
        ),
        {"barrier_events_barrier_newest"},
    ),
]
"""Each filter of the history, and the indexes whose range serves it."""


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def explain(
    conn: psycopg.AsyncConnection[Any], where: EventFilter, limit: int
) -> dict[str, Any]:
    """The plan of the store's history query for `where`, run as the store runs it."""
    query, params = events_query(where, limit)
    text = query.as_string(conn)
    explained = await conn.execute(
        f"EXPLAIN (ANALYZE, FORMAT JSON) {text}".encode(), params, prepare=EVENTS_PREPARE
    )
    row = await explained.fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def check_history_plan(plan: dict[str, Any], indexes: set[str], limit: int) -> None:
    """Assert that `plan` reads one of `indexes` from the cursor on, and little more than a page.

    No sequential scan; a sort only of the few rows a range gave (never of the table); at most
    three pages' worth of rows read, however deep the page.
    """
    nodes = list(plan_nodes(plan))
    shown = [(n["Node Type"], n.get("Index Name")) for n in nodes]
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}, shown
    used = {n["Index Name"] for n in nodes if "Index Name" in n}
    assert used, shown
    assert used <= indexes, shown
    for node in nodes:
        if node["Node Type"] in ("Sort", "Incremental Sort"):
            assert all(child["Actual Rows"] <= 3 * limit for child in node["Plans"]), (shown, node)
        if node["Node Type"] in SCANS:
            read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            assert read <= 3 * limit, (shown, node)


async def test_every_page_of_every_history_filter_is_one_index_range(
    store: BarrierStore, db_url: str
) -> None:
    """First and deep pages: an index range from the cursor on, no scan or sort of the rest."""
    await store.sync_barriers(HISTORY_BARRIERS)
    await fetch(db_url, _FILL_HISTORY, HISTORY_ROWS)
    await fetch(db_url, "ANALYZE barrier_events")
    limit = 101  # a page of 100 and one more, as the API asks
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        for where, indexes in HISTORY_FILTERS:
            matching = len(await store.events(where, HISTORY_ROWS))
            deep = (await store.events(where, matching * 9 // 10 + 1))[-1]
            for after in (None, (deep.created_at, deep.id)):
                page = msgspec.structs.replace(where, after=after)
                try:
                    check_history_plan(await explain(conn, page, limit), indexes, limit)
                except AssertionError as failure:
                    raise AssertionError(f"plan of {page}: {failure}") from None


async def test_an_idempotency_key_is_held_answered_taken_over_and_forgotten(
    store: BarrierStore,
) -> None:
    claim = await store.claim_idempotency_key("op", "k1", "open 1", lease=60, retention=3600)
    assert isinstance(claim, KeyClaim)
    # Held and unanswered: a retry is told so, whatever request it carries.
    held = await store.claim_idempotency_key("op", "k1", "open 1", lease=60, retention=3600)
    assert held == IdempotentAnswer(request="open 1", status_code=None, response=None)
    other = await store.claim_idempotency_key("ops", "k1", "open 2", lease=60, retention=3600)
    assert isinstance(other, KeyClaim), "keys are per actor"

    # The holder died: once its lease is over, a retry takes the key over, and the dead
    # request's late answer or release no longer touches it.
    taken = await store.claim_idempotency_key("op", "k1", "open 1", lease=0, retention=3600)
    assert isinstance(taken, KeyClaim)
    assert taken.claimed_at > claim.claimed_at
    await store.complete_idempotency_key(claim, 202, {"by": "the dead request"})
    await store.release_idempotency_key(claim)
    await store.complete_idempotency_key(taken, 202, {"by": "the retry"})
    answered = await store.claim_idempotency_key("op", "k1", "open 1", lease=0, retention=3600)
    assert answered == IdempotentAnswer("open 1", 202, {"by": "the retry"}), (
        "an answered key is never taken over within its retention"
    )

    # Past its retention a key is new again, and housekeeping deletes it.
    reused = await store.claim_idempotency_key("op", "k1", "close 1", lease=60, retention=0)
    assert isinstance(reused, KeyClaim)
    await store.release_idempotency_key(reused)
    assert isinstance(
        await store.claim_idempotency_key("op", "k1", "close 1", lease=60, retention=3600),
        KeyClaim,
    ), "a released key is free at once"
    assert await store.forget_idempotency_keys(3600) == 0
    assert await store.forget_idempotency_keys(0) == 2


async def test_store_unavailable_when_nothing_listens() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/barriers"
    began = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await BarrierStore.open(url, acquire_timeout=0.5)
    assert time.monotonic() - began < 2.0


# Redis: the status cache


def status(barrier_id: int, status: BarrierStatus | None = BarrierStatus.CLOSED) -> StatusRecord:
    """Return a status record for `barrier_id` as the bridge would write it."""
    return StatusRecord(
        barrier_id=barrier_id,
        name=f"Barrier {barrier_id}",
        status=status,
        quality=Quality.GOOD,
        position=0,
        occupied=False,
        read_at=T0,
        updated_at=T0,
    )


async def test_cache_put_get_and_get_all(
    cache: StatusCache, namespace: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert await cache.get(1) is None
    assert await cache.get_all() == []
    opening = StatusRecord(
        barrier_id=1,
        name="Barrier 1",
        status=BarrierStatus.OPENING,
        quality=Quality.GOOD,
        position=30,
        read_at=T0,
        updated_at=T0 + 0.01,
        pending=PendingCommand(
            str(uuid.uuid4()), CommandKind.OPEN, "operator-7", CommandState.MOVING
        ),
    )
    await cache.put(opening)
    for barrier_id in (3, 2, 12):
        await cache.put(status(barrier_id))
    await cache.put(msgspec.structs.replace(opening, quality=Quality.STALE))

    assert await cache.get(1) == msgspec.structs.replace(opening, quality=Quality.STALE)
    assert [r.barrier_id for r in await cache.get_all()] == [1, 2, 3, 12]
    assert [r.barrier_id for r in await cache.get_many([12, 5, 2])] == [12, 2]

    # A corrupt key is skipped with a warning, never a crash.
    async with Redis.from_url(redis_url) as client:
        await client.set(f"{namespace}:7", b'{"barrier_id": "not json')
        await client.set(f"{namespace}:8", b'{"barrier_id": 8}')  # valid JSON, not a record
    with caplog.at_level(logging.WARNING, logger="store.cache"):
        assert await cache.get(7) is None
        assert [r.barrier_id for r in await cache.get_all()] == [1, 2, 3, 12]
    assert sum("malformed status record" in m for m in caplog.messages) == 3


async def test_cache_subscriber_receives_each_put(cache: StatusCache) -> None:
    async with cache.subscribe() as records:
        await cache.put(status(4, BarrierStatus.OPENING))
        await cache.put(status(4, BarrierStatus.OPENED))
        async with asyncio.timeout(DEADLINE):
            first = await anext(records)
            second = await anext(records)
    assert (first, second) == (status(4, BarrierStatus.OPENING), status(4, BarrierStatus.OPENED))


async def test_cache_amend_changes_a_record_unless_it_was_written_meanwhile(
    cache: StatusCache, redis_url: str, namespace: str
) -> None:
    pending = PendingCommand(str(uuid.uuid4()), CommandKind.OPEN, "op", CommandState.ACCEPTED)

    def add_pending(record: StatusRecord) -> StatusRecord:
        return msgspec.structs.replace(record, pending=pending)

    assert await cache.amend(4, add_pending) is None, "no record: nothing to amend"
    assert await cache.get(4) is None
    await cache.put(status(4, BarrierStatus.CLOSED))
    async with cache.subscribe() as records:
        amended = await cache.amend(4, add_pending)
        assert amended == msgspec.structs.replace(status(4, BarrierStatus.CLOSED), pending=pending)
        async with asyncio.timeout(DEADLINE):
            assert await anext(records) == amended
    assert await cache.get(4) == amended

    # Another writer (the bridge) stores a newer record between the read and the write: it
    # stays, and the amendment is dropped.
    newer = status(4, BarrierStatus.OPENED)
    with SyncRedis.from_url(redis_url) as bridge:

        def raced(record: StatusRecord) -> StatusRecord:
            bridge.set(f"{namespace}:4", msgspec.json.encode(newer))
            return add_pending(record)

        assert await cache.amend(4, raced) is None
    assert await cache.get(4) == newer


def redis_db_url(url: str, db: int) -> str:
    """Return `url` pointed at database number `db`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


async def test_cache_rebuild_and_a_flush_detected(redis_url: str) -> None:
    # A database of its own, because this test flushes it (FLUSHDB: the others are left alone).
    url = redis_db_url(redis_url, 13)
    async with StatusCache(url) as cache, Redis.from_url(url) as client:
        await client.flushdb()
        assert not await cache.has_sentinel()

        await cache.rebuild([status(barrier_id) for barrier_id in (1, 2, 3)])
        assert await cache.has_sentinel()
        assert await cache.get_all() == [status(barrier_id) for barrier_id in (1, 2, 3)]
        assert await client.exists("barrier:1", "barrier:_epoch") == 2

        await client.flushdb()  # what a Redis restart without persistence looks like
        assert not await cache.has_sentinel()
        assert await cache.get(1) is None

        await cache.rebuild([status(1)])
        assert await cache.has_sentinel()
        assert await cache.get_all() == [status(1)]
        await client.flushdb()


async def test_cache_unavailable_fails_fast_when_nothing_listens() -> None:
    async with StatusCache(f"redis://127.0.0.1:{free_port()}/0") as cache:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: cache.get(1),
            cache.get_all,
            lambda: cache.put(status(1)),
            lambda: cache.rebuild([status(1)]),
            cache.has_sentinel,
        ]
        for call in calls:
            began = time.monotonic()
            with pytest.raises(CacheUnavailable):
                await call()
            assert time.monotonic() - began < 1.0
        with pytest.raises(CacheUnavailable):
            async with cache.subscribe():
                pass
