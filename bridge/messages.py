"""Kafka message formats: commands in, results and dead letters out.

The original producers send ``{"barrier_id": "3", "command": "open", "timestamp": 1733230000}``
(barrier id as a string, unix seconds); that form is accepted as it is. Our producer adds
``command_id`` (UUID), ``actor`` and ``requested_at`` (unix milliseconds). Unknown fields are
ignored. A missing ``command_id`` is derived from topic/partition/offset, so a redelivered record
keeps its id and stays idempotent.
"""

from __future__ import annotations

import base64
import uuid
from enum import StrEnum
from typing import Any

import msgspec

from store.types import CommandKind, CommandState

COMMANDS_TOPIC = "barrier_commands"
RESULTS_TOPIC = "barrier_command_results"
DEAD_LETTER_TOPIC = "barrier_commands.dlq"

DEFAULT_ACTOR = "kafka"
"""Who asked, for commands that do not say."""

_DERIVED_ID_NAMESPACE = uuid.UUID("6f1c4c2e-9d53-4d2b-9a0e-3f3b1f0b7c11")

MAX_BARRIER_ID = 2**31 - 1
"""The largest id ``barriers.id`` (a PostgreSQL SERIAL) can hold."""

EARLIEST_TIME = 946_684_800.0
"""2000-01-01 in unix seconds: an earlier command time is a wrong field or a broken clock."""

LATEST_TIME = 32_503_680_000.0
"""3000-01-01 in unix seconds: a later one is most likely milliseconds sent as seconds."""

MAX_ACTOR_LENGTH = 200


class DeadLetterReason(StrEnum):
    """Why a command record could not be executed; a stable code for the dead-letter topic."""

    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    BAD_BARRIER_ID = "bad_barrier_id"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_COMMAND_ID = "bad_command_id"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_ACTOR = "bad_actor"
    UNKNOWN_BARRIER = "unknown_barrier"
    INTERNAL_ERROR = "internal_error"
    """The bridge failed on the record in a way it did not foresee (a bug): kept, not lost."""


class CommandRejected(ValueError):
    """A command record that cannot be executed, with a stable reason code."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class Command(msgspec.Struct, frozen=True):
    """A command as the bridge executes it, whatever form it arrived in."""

    command_id: str
    barrier_id: int
    kind: CommandKind
    actor: str
    requested_at: float
    """Unix seconds when the command was asked for."""
    source: str
    """Where it came from: ``topic/partition/offset``, or ``api``."""


class CommandMessage(msgspec.Struct, frozen=True):
    """The value our producer writes to ``barrier_commands`` (a superset of the original form)."""

    barrier_id: str
    command: CommandKind
    timestamp: int
    """Unix seconds, for consumers that know only the original form."""
    command_id: str
    actor: str
    requested_at: int
    """Unix milliseconds."""


class CommandResult(msgspec.Struct, frozen=True):
    """One record on ``barrier_command_results`` per command that reaches a terminal state."""

    command_id: str
    barrier_id: str
    command: CommandKind
    outcome: CommandState
    actor: str
    requested_at: int
    """Unix milliseconds."""
    finished_at: int
    """Unix milliseconds."""
    detail: str | None = None
    fault: str | None = None
    consumed_to_written_ms: float | None = None
    written_to_confirmed_ms: float | None = None


class DeadLetter(msgspec.Struct, frozen=True):
    """A record of ``barrier_commands`` that could not be executed, with the reason."""

    reason: DeadLetterReason
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    """The original value: UTF-8 text, or ``base64:`` and the bytes when it is not text."""
    failed_at: int
    """Unix milliseconds."""


def command_key(barrier_id: int) -> bytes:
    """The Kafka key of a barrier's commands: its id as a decimal string."""
    return str(barrier_id).encode()


def derived_command_id(topic: str, partition: int, offset: int) -> str:
    """A stable command id for a record that carries none."""
    return str(uuid.uuid5(_DERIVED_ID_NAMESPACE, f"{topic}/{partition}/{offset}"))


def _field(payload: dict[str, Any], name: str) -> Any:
    if payload.get(name) is None:
        raise CommandRejected(DeadLetterReason.MISSING_FIELD, f"no {name!r} field")
    return payload[name]


def _barrier_id(raw: Any) -> int:
    # The original producers send the id as a string; our own API sends it as one too.
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit():
        if len(raw) > len(str(MAX_BARRIER_ID)):  # and int() of thousands of digits refuses
            raise CommandRejected(
                DeadLetterReason.BAD_BARRIER_ID, f"barrier_id {raw[:20]!r}... is out of range"
            )
        value = int(raw)
    else:
        raise CommandRejected(
            DeadLetterReason.BAD_BARRIER_ID,
            f"barrier_id {_shown(raw)} is not a decimal integer",
        )
    if not 1 <= value <= MAX_BARRIER_ID:
        raise CommandRejected(
            DeadLetterReason.BAD_BARRIER_ID, f"barrier_id {_shown(raw)} is out of range"
        )
    return value


def _shown(raw: Any) -> str:
    """`raw` for an error message, cut short: a record may carry megabytes in one field."""
    text = repr(raw)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _unix_seconds(raw: Any, name: str, scale: float) -> float:
    """`raw` (a unix time in units of 1/`scale` s) as unix seconds, if it is a plausible one."""
    unit = "seconds" if scale == 1.0 else "milliseconds"
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise CommandRejected(
            DeadLetterReason.BAD_TIMESTAMP, f"{name} {_shown(raw)} is not a unix time in {unit}"
        )
    # Compared before converting: an integer of hundreds of digits does not fit in a float.
    if not EARLIEST_TIME * scale <= raw <= LATEST_TIME * scale:
        raise CommandRejected(
            DeadLetterReason.BAD_TIMESTAMP,
            f"{name} {_shown(raw)} is not a unix time in {unit} between the years 2000 and 3000",
        )
    return raw / scale


def parse_command(
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    record_timestamp_ms: int | None,
) -> Command:
    """Parse one ``barrier_commands`` record; raise `CommandRejected` with the reason if bad."""
    if value is None:
        raise CommandRejected(DeadLetterReason.NOT_JSON, "the record has no value")
    try:
        payload = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise CommandRejected(DeadLetterReason.NOT_JSON, f"value is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise CommandRejected(DeadLetterReason.NOT_AN_OBJECT, "value is not a JSON object")
    barrier_id = _barrier_id(_field(payload, "barrier_id"))
    raw_command = _field(payload, "command")
    try:
        kind = CommandKind(raw_command)
    except ValueError:
        known = ", ".join(k.value for k in CommandKind)
        raise CommandRejected(
            DeadLetterReason.UNKNOWN_COMMAND,
            f"command {_shown(raw_command)} is not one of {known}",
        ) from None
    raw_id = payload.get("command_id")
    if raw_id is None:
        command_id = derived_command_id(topic, partition, offset)
    else:
        try:
            command_id = str(uuid.UUID(str(raw_id)))
        except ValueError:
            raise CommandRejected(
                DeadLetterReason.BAD_COMMAND_ID, f"command_id {_shown(raw_id)} is not a UUID"
            ) from None
    actor = payload.get("actor", DEFAULT_ACTOR)
    if (
        not isinstance(actor, str)
        or not actor
        or len(actor) > MAX_ACTOR_LENGTH
        or not actor.isprintable()
    ):
        raise CommandRejected(
            DeadLetterReason.BAD_ACTOR,
            f"actor must be a non-empty printable string of at most {MAX_ACTOR_LENGTH} characters",
        )
    if payload.get("requested_at") is not None:
        requested_at = _unix_seconds(payload["requested_at"], "requested_at", 1000.0)
    elif payload.get("timestamp") is not None:
        requested_at = _unix_seconds(payload["timestamp"], "timestamp", 1.0)
    elif record_timestamp_ms is not None and record_timestamp_ms > 0:
        requested_at = record_timestamp_ms / 1000.0
    else:
        raise CommandRejected(DeadLetterReason.MISSING_FIELD, "no timestamp or requested_at")
    return Command(
        command_id=command_id,
        barrier_id=barrier_id,
        kind=kind,
        actor=actor,
        requested_at=requested_at,
        source=f"{topic}/{partition}/{offset}",
    )


def encode_command(command: Command) -> bytes:
    """Encode `command` as our producer writes it (readable by the original consumers too)."""
    return msgspec.json.encode(
        CommandMessage(
            barrier_id=str(command.barrier_id),
            command=command.kind,
            timestamp=int(command.requested_at),
            command_id=command.command_id,
            actor=command.actor,
            requested_at=round(command.requested_at * 1000),
        )
    )


def dead_letter(
    rejected: CommandRejected,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    now: float,
) -> DeadLetter:
    """Build the dead-letter record for a rejected command record, keeping its original bytes."""
    return DeadLetter(
        reason=rejected.reason,
        detail=rejected.detail,
        topic=topic,
        partition=partition,
        offset=offset,
        key=_printable(key),
        value=_printable(value),
        failed_at=round(now * 1000),
    )


def _printable(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()
