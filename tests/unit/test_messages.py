"""Command records in every form they arrive in, and every way they can be wrong."""

import uuid
from typing import TypedDict

import msgspec
import pytest

from bridge.messages import (
    Command,
    CommandRejected,
    DeadLetterReason,
    dead_letter,
    derived_command_id,
    encode_command,
    parse_command,
)
from bridge.partitioning import barrier_partition, partition_for_key
from store.types import CommandKind

pytestmark = pytest.mark.unit


class Where(TypedDict):
    topic: str
    partition: int
    offset: int
    record_timestamp_ms: int


WHERE: Where = {
    "topic": "barrier_commands",
    "partition": 2,
    "offset": 41,
    "record_timestamp_ms": 1733230001500,
}


def test_the_original_form_exactly() -> None:
    command = parse_command(
        b'{"barrier_id": "3", "command": "open", "timestamp": 1733230000}', **WHERE
    )
    assert command == Command(
        command_id=derived_command_id("barrier_commands", 2, 41),
        barrier_id=3,
        kind=CommandKind.OPEN,
        actor="kafka",
        requested_at=1733230000.0,
        source="barrier_commands/2/41",
    )


def test_a_derived_id_is_stable_per_record_and_differs_between_records() -> None:
    assert derived_command_id("t", 0, 5) == derived_command_id("t", 0, 5)
    assert (
        len(
            {
                derived_command_id("t", 0, 5),
                derived_command_id("t", 0, 6),
                derived_command_id("t", 1, 5),
            }
        )
        == 3
    )
    uuid.UUID(derived_command_id("t", 0, 5))


def test_the_rich_form_round_trips_and_ignores_unknown_fields() -> None:
    command = Command(
        str(uuid.uuid4()), 12, CommandKind.CLOSE, "operator:alice", 1733230000.123, "api"
    )
    raw = msgspec.json.decode(encode_command(command))
    assert raw["barrier_id"] == "12"
    assert raw["timestamp"] == 1733230000
    assert raw["requested_at"] == 1733230000123
    raw["colour"] = "blue"
    parsed = parse_command(msgspec.json.encode(raw), **WHERE)
    assert parsed == msgspec.structs.replace(command, source="barrier_commands/2/41")


def test_integer_barrier_ids_and_record_timestamps_are_accepted() -> None:
    command = parse_command(b'{"barrier_id": 7, "command": "close"}', **WHERE)
    assert (command.barrier_id, command.kind, command.requested_at) == (
        7,
        CommandKind.CLOSE,
        1733230001.5,
    )


@pytest.mark.parametrize(
    ("value", "reason", "fragment"),
    [
        (None, DeadLetterReason.NOT_JSON, "no value"),
        (b"", DeadLetterReason.NOT_JSON, "not JSON"),
        (b"\xff\xfe", DeadLetterReason.NOT_JSON, "not JSON"),
        (b'{"barrier_id": "3", "command": "open"', DeadLetterReason.NOT_JSON, "not JSON"),
        (b'["open", 3]', DeadLetterReason.NOT_AN_OBJECT, "not a JSON object"),
        (b'{"command": "open"}', DeadLetterReason.MISSING_FIELD, "'barrier_id'"),
        (b'{"barrier_id": "3"}', DeadLetterReason.MISSING_FIELD, "'command'"),
        (
            b'{"barrier_id": null, "command": "open"}',
            DeadLetterReason.MISSING_FIELD,
            "'barrier_id'",
        ),
        (
            b'{"barrier_id": "three", "command": "open"}',
            DeadLetterReason.BAD_BARRIER_ID,
            "not a decimal integer",
        ),
        (
            b'{"barrier_id": "-3", "command": "open"}',
            DeadLetterReason.BAD_BARRIER_ID,
            "not a decimal integer",
        ),
        (
            b'{"barrier_id": 3.5, "command": "open"}',
            DeadLetterReason.BAD_BARRIER_ID,
            "not a decimal integer",
        ),
        (
            b'{"barrier_id": true, "command": "open"}',
            DeadLetterReason.BAD_BARRIER_ID,
            "not a decimal integer",
        ),
        (
            b'{"barrier_id": "0", "command": "open"}',
            DeadLetterReason.BAD_BARRIER_ID,
            "out of range",
        ),
        (
            b'{"barrier_id": "99999999999", "command": "open"}',
            DeadLetterReason.BAD_BARRIER_ID,
            "out of range",
        ),
        (
            b'{"barrier_id": "3", "command": "explode"}',
            DeadLetterReason.UNKNOWN_COMMAND,
            "not one of open, close",
        ),
        (
            b'{"barrier_id": "3", "command": ["open"]}',
            DeadLetterReason.UNKNOWN_COMMAND,
            "not one of",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "command_id": "abc"}',
            DeadLetterReason.BAD_COMMAND_ID,
            "not a UUID",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "timestamp": "yesterday"}',
            DeadLetterReason.BAD_TIMESTAMP,
            "not a unix time",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "requested_at": -1}',
            DeadLetterReason.BAD_TIMESTAMP,
            "not a unix time",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "actor": 5}',
            DeadLetterReason.BAD_ACTOR,
            "non-empty printable string",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "actor": "eve\\u0000"}',
            DeadLetterReason.BAD_ACTOR,
            "printable",
        ),
        (
            b'{"barrier_id": "' + b"9" * 5000 + b'", "command": "open"}',
            DeadLetterReason.BAD_BARRIER_ID,
            "out of range",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "timestamp": 1' + b"0" * 400 + b"}",
            DeadLetterReason.BAD_TIMESTAMP,  # too big for a float
            "between the years 2000 and 3000",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "timestamp": 1e400}',
            DeadLetterReason.NOT_JSON,  # msgspec refuses a number beyond a float's range
            "out of range",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "timestamp": 1733230000000}',
            DeadLetterReason.BAD_TIMESTAMP,  # milliseconds sent where seconds belong
            "unix time in seconds between the years 2000 and 3000",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "requested_at": 1733230000}',
            DeadLetterReason.BAD_TIMESTAMP,  # seconds sent where milliseconds belong
            "unix time in milliseconds",
        ),
        (
            b'{"barrier_id": "3", "command": "open", "timestamp": 1e15}',
            DeadLetterReason.BAD_TIMESTAMP,  # microseconds, beyond PostgreSQL's range
            "between the years 2000 and 3000",
        ),
    ],
)
def test_bad_records_are_rejected_with_a_stable_reason(
    value: bytes | None, reason: DeadLetterReason, fragment: str
) -> None:
    with pytest.raises(CommandRejected, match=fragment) as caught:
        parse_command(value, **WHERE)
    assert caught.value.reason is reason


def test_no_time_at_all_is_rejected() -> None:
    with pytest.raises(CommandRejected) as caught:
        parse_command(
            b'{"barrier_id": "3", "command": "open"}',
            topic="t",
            partition=0,
            offset=0,
            record_timestamp_ms=None,
        )
    assert caught.value.reason is DeadLetterReason.MISSING_FIELD


def test_dead_letters_keep_the_original_bytes() -> None:
    rejected = CommandRejected(DeadLetterReason.NOT_JSON, "value is not JSON")
    letter = dead_letter(
        rejected, topic="t", partition=1, offset=9, key=b"3", value=b"\xff\x00", now=1733230000.25
    )
    assert (letter.key, letter.value, letter.failed_at) == ("3", "base64:/wA=", 1733230000250)
    text = dead_letter(
        rejected, topic="t", partition=1, offset=9, key=None, value=b"{oops", now=1.0
    )
    assert (text.key, text.value, text.reason) == (None, "{oops", DeadLetterReason.NOT_JSON)


def test_partitioning_matches_the_java_client() -> None:
    # Kafka's own UtilsTest.testMurmur2 reference values.
    for key, signed in [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
    ]:
        assert partition_for_key(key, 1000) == (signed & 0x7FFFFFFF) % 1000
    assert barrier_partition(3, 12) == partition_for_key(b"3", 12)
    assert len({barrier_partition(b, 6) for b in range(1, 50)}) == 6
