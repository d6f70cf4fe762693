"""The backing services for a scenario: Tansu Kafka, PostgreSQL and Redis on free loopback ports.

The same embedded servers as the tests and the local stack (`stack.services`), started fresh in the
scenario's work directory, watched by its `ProcessMonitor` (as services, not ours), and stopped
when the ``with`` block ends.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.proc import ProcessMonitor
from stack.services import KafkaBroker, PostgresServer, RedisServer


class Services:
    """Kafka, PostgreSQL and Redis for one scenario; ``with`` starts and stops them."""

    def __init__(self, work_dir: Path, monitor: ProcessMonitor) -> None:
        self.kafka = KafkaBroker(work_dir / "kafka")
        self.postgres = PostgresServer(work_dir / "postgres")
        self.redis = RedisServer(work_dir / "redis")
        self._monitor = monitor
        self._stack = ExitStack()

    @property
    def kafka_bootstrap(self) -> str:
        """Kafka ``bootstrap.servers``."""
        return self.kafka.bootstrap_servers

    @property
    def database_url(self) -> str:
        """The PostgreSQL URL."""
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        """The Redis URL."""
        return self.redis.url

    def new_database(self, name: str) -> str:
        """Create an empty database `name` on the PostgreSQL server; return its URL."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_conninfo(self.database_url, dbname=name)

    def __enter__(self) -> Self:
        try:
            for role, service in (
                ("kafka (tansu)", self.kafka),
                ("postgres", self.postgres),
                ("redis", self.redis),
            ):
                self._stack.enter_context(service)
                assert service.pid is not None
                self._stack.enter_context(
                    self._monitor.watching(role, service.pid, tree=True, ours=False)
                )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()
