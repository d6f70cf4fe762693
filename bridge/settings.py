"""The bridge's settings, read once from environment variables and passed in."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import msgspec

from store.settings import describe, load_from_env

ENV_PREFIX = "BRIDGE_"


class BridgeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the bridge process needs to know; each field is ``BRIDGE_<FIELD>``."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, ``host:port[,host:port]``."""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/barriers"
    """PostgreSQL connection URL."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis URL of the status cache and pub/sub channel."""
    cache_namespace: str = "barrier"
    """Prefix of the Redis keys (``barrier:{id}``) and channel (``barrier_status``)."""
    register_map: str = "barriers.toml"
    """Path of the register map file."""
    group_id: str = "barrier-bridge"
    """Kafka consumer group shared by all bridge instances."""
    instance_id: str = msgspec.field(default_factory=socket.gethostname)
    """Name of this instance in logs, metrics and the Kafka client id."""
    commands_topic: str = "barrier_commands"
    """Topic the commands arrive on."""
    results_topic: str = "barrier_command_results"
    """Topic one result per finished command goes to."""
    dead_letter_topic: str = "barrier_commands.dlq"
    """Topic for records that cannot be executed."""
    partitions: int = 12
    """Partitions of the commands topic when the bridge creates it."""
    session_timeout_ms: int = 10000
    """Consumer group session timeout: how fast a dead bridge's barriers are taken over."""
    command_ttl: float = 30.0
    """Seconds after which an unexecuted command expires instead of running."""
    command_deadline: float = 15.0
    """Seconds from acceptance to confirmation before a command times out."""
    write_retry: float = 0.5
    """Seconds between attempts to write a command while the PLC link is down."""
    poll_interval: float = 1.0
    """Seconds between full polls of each PLC endpoint."""
    fast_poll_interval: float = 0.1
    """Seconds between polls of a moving or just-commanded barrier."""
    request_timeout: float = 1.0
    """Seconds to wait for one Modbus answer."""
    stale_after: float = 3.0
    """Seconds without a good read (or with a frozen heartbeat) before a reading is stale."""
    shutdown_grace: float = 20.0
    """Seconds SIGTERM waits for commands in flight to finish before handing them over."""
    metrics_port: int = 9108
    """Port of the Prometheus metrics endpoint; 0 turns it off."""
    log_level: str = "INFO"
    """Python logging level."""


def load_settings(environ: Mapping[str, str] = os.environ) -> BridgeSettings:
    """Read `BridgeSettings` from ``BRIDGE_*`` variables; raise ValueError naming a bad one."""
    return load_from_env(BridgeSettings, ENV_PREFIX, environ)


def describe_settings() -> str:
    """The settings as help text: variable, default and meaning."""
    return describe(BridgeSettings, ENV_PREFIX, {"instance_id": "(host name)"})
