"""The bridge's settings, read once from environment variables and passed in."""

from __future__ import annotations

import ast
import inspect
import itertools
import os
import socket
from collections.abc import Mapping

import msgspec

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


def field_docs(cls: type[msgspec.Struct]) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value
    return docs


def load_settings(environ: Mapping[str, str] = os.environ) -> BridgeSettings:
    """Read `BridgeSettings` from ``BRIDGE_*`` variables; raise ValueError naming a bad one."""
    raw: dict[str, str] = {}
    for field in msgspec.structs.fields(BridgeSettings):
        name = ENV_PREFIX + field.name.upper()
        if name in environ:
            raw[field.name] = environ[name]
    try:
        return msgspec.convert(raw, BridgeSettings, strict=False)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        field_name = ENV_PREFIX + path.rstrip("`").upper() if path else "settings"
        raise ValueError(f"{field_name}: {message}") from None


def describe_settings() -> str:
    """The settings as help text: variable, default and meaning."""
    docs = field_docs(BridgeSettings)
    lines = ["environment variables:"]
    for field in msgspec.structs.fields(BridgeSettings):
        default = "(host name)" if field.name == "instance_id" else repr(field.default)
        lines.append(f"  {ENV_PREFIX}{field.name.upper()}  default {default}")
        lines.append(f"      {docs.get(field.name, '')}")
    return "\n".join(lines)
