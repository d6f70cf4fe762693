"""Versioned PostgreSQL schema migrations, applied at start-up.

Each migration runs in its own transaction under a transaction-scoped advisory lock, so two
processes that start at once apply every version exactly once: the second waits for the first
and then finds the version recorded in ``schema_migrations``.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

MIGRATION_LOCK_KEY = 0x6261_7272_6965_7273
"""Advisory lock taken around every check-and-apply (the bytes of ``barriers``)."""

_CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_IS_APPLIED = "SELECT 1 FROM schema_migrations WHERE version = %s"
_RECORD = "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)"

# Migrations are frozen history: their SQL is literal, never generated from today's enums (a new
# CommandState needs a new migration). ``barriers`` keeps the original shape (last_updated stays
# a TIMESTAMP, holding UTC) and adds what the register map needs; ``status`` holds only confirmed
# states and stays NULL until the first confirmation.
_V1_INITIAL = """
CREATE TABLE barriers (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT CHECK (status IN ('opened', 'closed', 'error')),
    last_updated TIMESTAMP DEFAULT (now() AT TIME ZONE 'UTC'),
    endpoint TEXT,
    slot INT,
    points JSONB,
    fault TEXT,
    position INT,
    active BOOLEAN NOT NULL DEFAULT true
);

CREATE TABLE commands (
    command_id UUID PRIMARY KEY,
    barrier_id INT NOT NULL REFERENCES barriers (id),
    kind TEXT NOT NULL CHECK (kind IN ('open', 'close')),
    actor TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN (
        'accepted', 'written', 'moving', 'confirmed',
        'failed', 'timed_out', 'rejected', 'expired', 'superseded'
    )),
    requested_at TIMESTAMPTZ NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    written_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    detail TEXT,
    fault TEXT,
    source TEXT,
    consumed_to_written_ms DOUBLE PRECISION,
    written_to_confirmed_ms DOUBLE PRECISION
);
CREATE INDEX commands_barrier_accepted ON commands (barrier_id, accepted_at DESC);

CREATE TABLE barrier_events (
    id BIGSERIAL PRIMARY KEY,
    barrier_id INT NOT NULL REFERENCES barriers (id),
    event_type TEXT NOT NULL,
    command_id UUID,
    actor TEXT,
    status TEXT,
    detail JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX barrier_events_newest ON barrier_events (created_at DESC, id DESC);
CREATE INDEX barrier_events_barrier_newest
    ON barrier_events (barrier_id, created_at DESC, id DESC);
CREATE INDEX barrier_events_command ON barrier_events (command_id) WHERE command_id IS NOT NULL;
CREATE INDEX barrier_events_type_newest ON barrier_events (event_type, created_at DESC, id DESC);
"""

# The API's Idempotency-Key: the first answer to a key is kept per caller and returned to its
# retries. A row without a response is a request still in progress.
_V2_IDEMPOTENCY = """
CREATE TABLE idempotency_keys (
    actor TEXT NOT NULL,
    key TEXT NOT NULL,
    request TEXT NOT NULL,
    status_code INT,
    response JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
"""

# Every filter of the event history is one range of one index, in (created_at, id) order: a
# command's events need no sort, and a barrier's events of one type are found without reading
# its others. (CREATE INDEX locks out writes to the table while it builds.)
_V3_EVENT_INDEXES = """
CREATE INDEX barrier_events_command_newest
    ON barrier_events (command_id, created_at DESC, id DESC) WHERE command_id IS NOT NULL;
DROP INDEX barrier_events_command;
CREATE INDEX barrier_events_barrier_type_newest
    ON barrier_events (barrier_id, event_type, created_at DESC, id DESC);
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "initial schema", _V1_INITIAL),
    (2, "idempotency keys", _V2_IDEMPOTENCY),
    (3, "event history indexes", _V3_EVENT_INDEXES),
)
"""Every migration as ``(version, name, SQL)``, in the order they apply; append, never edit."""


async def migrate(conn: AsyncConnection[Any]) -> list[int]:
    """Apply the migrations `conn`'s database lacks; return the versions this call applied.

    `conn` must have no transaction open (autocommit, or idle): each migration commits alone.
    """
    async with conn.transaction():
        await conn.execute(_LOCK, (MIGRATION_LOCK_KEY,))
        await conn.execute(_CREATE_SCHEMA_MIGRATIONS)
    applied: list[int] = []
    for version, name, sql in MIGRATIONS:
        async with conn.transaction():
            await conn.execute(_LOCK, (MIGRATION_LOCK_KEY,))
            cursor = await conn.execute(_IS_APPLIED, (version,))
            if await cursor.fetchone() is not None:
                continue
            await conn.execute(sql)
            await conn.execute(_RECORD, (version, name))
        applied.append(version)
    return applied
