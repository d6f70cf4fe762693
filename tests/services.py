"""Session-scoped fixtures that provide real Kafka, PostgreSQL and Redis services to tests.

Each fixture yields an address. If its environment variable is set (to a non-empty value), that
user-provided service is used as is:

* ``BARRIER_TEST_KAFKA_BOOTSTRAP`` -> :func:`kafka_bootstrap` (``host:port[,host:port...]``)
* ``BARRIER_TEST_DATABASE_URL`` -> :func:`postgres_url` (``postgresql://...``)
* ``BARRIER_TEST_REDIS_URL`` -> :func:`redis_url` (``redis://...``)

Otherwise the fixture starts a private server from :mod:`stack.services` on a free loopback
port, with its data and log in a pytest temporary directory, and stops it when the session
ends. A service is started only if some test asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stack.services import KafkaBroker, PostgresServer, RedisServer

KAFKA_ENV = "BARRIER_TEST_KAFKA_BOOTSTRAP"
DATABASE_ENV = "BARRIER_TEST_DATABASE_URL"
REDIS_ENV = "BARRIER_TEST_REDIS_URL"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Kafka ``bootstrap.servers`` for the session: ``$BARRIER_TEST_KAFKA_BOOTSTRAP`` or a broker.

    The private broker keeps everything in memory; tests share it, so they should use unique
    topic and group names.
    """
    provided = os.environ.get(KAFKA_ENV)
    if provided:
        yield provided
        return
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL URL for the session: ``$BARRIER_TEST_DATABASE_URL`` or a private server.

    The private server's URL is ``postgresql://postgres@127.0.0.1:PORT/barriers`` (trust
    authentication, superuser). Tests share the database, so they should use unique table names
    or clean up after themselves.
    """
    provided = os.environ.get(DATABASE_ENV)
    if provided:
        yield provided
        return
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Redis URL for the session: ``$BARRIER_TEST_REDIS_URL`` or a private server (database 0)."""
    provided = os.environ.get(REDIS_ENV)
    if provided:
        yield provided
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
