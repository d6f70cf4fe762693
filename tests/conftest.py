"""Shared pytest fixtures: real services started by the test session, and test isolation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.services import kafka_bootstrap, postgres_url, redis_url

__all__ = ["db_url", "kafka_bootstrap", "namespace", "postgres_url", "redis_url"]


@pytest_asyncio.fixture
async def db_url(postgres_url: str) -> AsyncIterator[str]:
    """Yield a conninfo string whose connections use a fresh, empty schema, dropped afterwards."""
    schema = sql.Identifier(f"test_{uuid.uuid4().hex[:16]}")
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        try:
            yield make_conninfo(postgres_url, options=f"-c search_path={schema.as_string()}")
        finally:
            await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))


@pytest.fixture
def namespace() -> str:
    """Return a Redis key namespace of the test's own."""
    return f"test-{uuid.uuid4().hex}"
