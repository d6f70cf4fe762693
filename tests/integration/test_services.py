"""The session's real services work: Kafka, PostgreSQL and Redis, each used as the product will."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis.asyncio as aioredis
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bridge.partitioning import partition_for_key
from tests.services import DATABASE_ENV, REDIS_ENV

DEADLINE = 30.0  # seconds; every wait below gives up after this

PARTITIONS = 3


@pytest.mark.integration
def test_kafka_topic_produce_and_consume_in_a_group(kafka_bootstrap: str) -> None:
    # The reference partitioner itself, checked against Kafka's UtilsTest.testMurmur2 values.
    for reference_key, signed in [(b"21", -973932308), (b"foobar", -790332482)]:
        assert partition_for_key(reference_key, 1000) == (signed & 0x7FFFFFFF) % 1000

    topic = f"services-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
        operation_timeout=DEADLINE,
        request_timeout=DEADLINE,
    )
    futures[topic].result(timeout=DEADLINE)
    metadata = admin.list_topics(topic, timeout=DEADLINE)
    assert sorted(metadata.topics[topic].partitions) == list(range(PARTITIONS))

    sent = {(f"barrier-{i % 10}".encode(), f"command-{i}".encode()) for i in range(30)}
    delivered: list[tuple[bytes, int]] = []
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        key, partition = message.key(), message.partition()
        if error is not None:
            errors.append(error)
        elif isinstance(key, bytes) and partition is not None:
            delivered.append((key, partition))

    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 1,
        }
    )
    for key, value in sorted(sent):
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(DEADLINE) == 0
    assert errors == []
    assert len(delivered) == len(sent)
    # murmur2_random partitions keyed messages exactly as the Java client does.
    assert all(partition == partition_for_key(key, PARTITIONS) for key, partition in delivered)
    assert len({partition for _, partition in delivered}) > 1

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"group-{topic}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        consumer.subscribe([topic])
        received: list[tuple[bytes, bytes]] = []
        next_offsets: dict[int, int] = {}
        deadline = time.monotonic() + DEADLINE
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None:
                continue
            assert message.error() is None, message.error()
            got_key, got_value = message.key(), message.value()
            partition, offset = message.partition(), message.offset()
            assert isinstance(got_key, bytes)
            assert isinstance(got_value, bytes)
            assert partition is not None
            assert offset is not None
            received.append((got_key, got_value))
            next_offsets[partition] = offset + 1
        assert sorted(received) == sorted(sent)  # all of them, each exactly once

        consumer.commit(asynchronous=False)
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=DEADLINE
        )
        assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == next_offsets
    finally:
        consumer.close()


def _port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


class _Abort(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.mark.integration
@pytest.mark.asyncio
async def test_postgres_transactions_are_atomic(postgres_url: str) -> None:
    table = f"services_{uuid.uuid4().hex}"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        assert conn.info.server_version >= 140000
        server_port = await _fetch_one(conn, "SELECT inet_server_port()")
        assert server_port == conn.info.port == _port_of(postgres_url)
        if DATABASE_ENV not in os.environ:
            assert server_port != 5432  # our own server, not the machine's

        async with conn.transaction():
            await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text NOT NULL)")
            await conn.execute(f"INSERT INTO {table} VALUES (1, 'committed'), (2, 'committed')")

        # Rolled back on purpose: the row is visible inside, gone afterwards.
        async def insert_then_abort() -> None:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (3, 'rolled back')")
                assert await _fetch_one(conn, f"SELECT count(*) FROM {table}") == 3
                raise _Abort

        with pytest.raises(_Abort):
            await insert_then_abort()

        # Rolled back by a failure: the transaction's first insert is undone with it.
        async def insert_then_fail() -> None:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (4, 'rolled back')")
                await conn.execute(f"INSERT INTO {table} VALUES (1, 'duplicate key')")

        with pytest.raises(psycopg.errors.UniqueViolation):
            await insert_then_fail()

        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            cursor = await other.execute(f"SELECT id, note FROM {table} ORDER BY id")
            assert await cursor.fetchall() == [(1, "committed"), (2, "committed")]
        await conn.execute(f"DROP TABLE {table}")


async def _fetch_one(conn: psycopg.AsyncConnection[Any], query: str) -> Any:
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_redis_set_get_and_publish_subscribe(redis_url: str) -> None:
    async with aioredis.Redis.from_url(redis_url) as client, client.pubsub() as pubsub:
        info = await client.info("server")
        assert info["tcp_port"] == _port_of(redis_url)
        if REDIS_ENV not in os.environ:
            assert info["tcp_port"] != 6379  # our own server, not the machine's

        key = f"services:{uuid.uuid4().hex}"
        assert await client.set(key, "open", ex=60) is True
        assert await client.get(key) == b"open"

        channel = f"{key}:events"
        await pubsub.subscribe(channel)
        async with asyncio.timeout(DEADLINE):
            confirmation = await pubsub.get_message(timeout=DEADLINE)
        assert confirmation is not None
        assert confirmation["type"] == "subscribe"

        assert await client.publish(channel, "barrier-1 opened") == 1
        async with asyncio.timeout(DEADLINE):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=DEADLINE)
        assert message is not None
        assert message["channel"] == channel.encode()
        assert message["data"] == b"barrier-1 opened"
