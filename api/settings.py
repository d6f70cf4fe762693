"""The API's settings, read once from ``API_*`` environment variables and passed in."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from store.kafka import REPORT_SLACK
from store.settings import describe, load_from_env

ENV_PREFIX = "API_"


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the API process needs to know; each field is ``API_<FIELD>``."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, ``host:port[,host:port]``."""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/barriers"
    """PostgreSQL connection URL."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis URL of the status cache and pub/sub channel."""
    cache_namespace: str = "barrier"
    """Prefix of the Redis keys and channel; the same as the bridge's."""
    commands_topic: str = "barrier_commands"
    """Topic the API produces commands to."""
    tokens: str = ""
    """Bearer tokens, comma-separated ``name:role:sha256hex`` entries (roles: viewer, operator,
    admin); ``python -m api hash-token`` prints the hash of a token. Stored hashed only."""
    produce_timeout: float = 5.0
    """Seconds the broker has to acknowledge a command; if it does not, the command is
    abandoned (never sent later) and the answer is 503."""
    idempotency_lease: float = 60.0
    """Seconds after which an Idempotency-Key whose request never answered (its process died)
    is handed to a retry; until then a retry is told ``request_in_progress``."""
    idempotency_retention: float = 86400.0
    """Seconds an Idempotency-Key and its answer are kept; older keys are deleted."""
    stale_after: float = 3.0
    """Seconds after the last good read at which a status is shown ``stale``, whatever the
    cache says (a dead bridge must not leave a status looking fresh)."""
    max_body_bytes: int = 16384
    """Largest request body accepted."""
    events_page_max: int = 500
    """Most events one page of ``GET /barriers/events`` returns."""
    ws_queue: int = 256
    """Changes buffered per WebSocket client; a client further behind is resynced."""
    ws_send_timeout: float = 10.0
    """Seconds a WebSocket client may take to accept one message before it is disconnected."""
    ws_ping_interval: float = 20.0
    """Seconds between pings to each WebSocket client."""
    log_level: str = "INFO"
    """Python logging level."""

    def __post_init__(self) -> None:
        """Refuse a lease that could hand a key over while its request may still be sending."""
        if self.idempotency_lease <= self.produce_timeout + REPORT_SLACK:
            raise ValueError(
                f"API_IDEMPOTENCY_LEASE ({self.idempotency_lease} s) must exceed "
                f"API_PRODUCE_TIMEOUT + {REPORT_SLACK} s"
            )


def load_settings(environ: Mapping[str, str] = os.environ) -> ApiSettings:
    """Read `ApiSettings` from ``API_*`` variables; raise ValueError naming a bad one."""
    return load_from_env(ApiSettings, ENV_PREFIX, environ)


def describe_settings() -> str:
    """The settings as help text: variable, default and meaning."""
    return describe(ApiSettings, ENV_PREFIX)
