"""Thin confluent-kafka adapters for asyncio: a command consumer, a producer, topic set-up.

librdkafka's consumer is blocking, so it runs in a thread of its own and hands records to the
event loop. At-least-once: auto-commit and auto offset store are off; the bridge commits an
offset only when every record before it has a durable outcome. Rebalance callbacks run the
bridge's handlers on the loop and wait for them, so revoked partitions are handed over only
after their commands were stopped and their offsets committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

log = logging.getLogger(__name__)

CLIENT_LOG = logging.getLogger("librdkafka")

CONSUME_BATCH = 100
"""Most records the consumer thread takes from librdkafka at once."""
"""librdkafka's own messages (e.g. a broker refusing connections) go to Python logging."""


REPORT_SLACK = 1.5
"""Seconds past ``message.timeout.ms`` within which librdkafka reports a record it gave up on:
it looks for timed-out records once a second."""


class KafkaUnavailable(Exception):
    """The broker did not acknowledge in time, or refused."""


class DeliveryUnknown(KafkaUnavailable):
    """No delivery report came within the deadline: the record may still be delivered."""


class Record(msgspec.Struct, frozen=True):
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


def ensure_topics(bootstrap: str, topics: dict[str, int], *, timeout: float = 10.0) -> None:
    """Create the missing topics among `topics` (name -> partitions); existing ones are kept."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout).topics
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=-1)
        for name, partitions in topics.items()
        if name not in existing
    ]
    if not missing:
        return
    futures = admin.create_topics(missing, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaUnavailable(f"cannot create topic {name}: {exc}") from exc


def partition_count(bootstrap: str, topic: str, *, timeout: float = 10.0) -> int:
    """The number of partitions of `topic`."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise KafkaUnavailable(f"topic {topic} has no partitions")
    return len(metadata.partitions)


class AsyncProducer:
    """A confluent-kafka producer whose `send` awaits the broker's acknowledgement.

    The broker has `timeout` seconds (``message.timeout.ms``) to acknowledge a record; after
    that librdkafka gives up on it and reports so. Each send ends with that delivery report,
    within `deadline` seconds.
    """

    def __init__(self, bootstrap: str, *, timeout: float = 5.0) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                # The Java client's partitioner: keyed records land where the bridge expects.
                "partitioner": "murmur2_random",
                "linger.ms": 1,
                "message.timeout.ms": int(timeout * 1000),
                "logger": CLIENT_LOG,
            }
        )
        self.deadline = timeout + REPORT_SLACK
        """Seconds within which librdkafka reports on every record; `send` waits no longer."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        """Produce one record and wait for its delivery report; return its (partition, offset).

        Raise KafkaUnavailable if the record was refused, or the broker did not acknowledge it
        within the timeout and librdkafka gave up on it; DeliveryUnknown (a KafkaUnavailable)
        if no report came within `deadline`, when whether it went cannot be told.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int]] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failure = KafkaUnavailable(f"{topic}: {err.str()}")
                loop.call_soon_threadsafe(_settle, done, None, failure)
            else:
                where = (msg.partition() or 0, msg.offset() or 0)
                loop.call_soon_threadsafe(_settle, done, where, None)

        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=delivered, **extra)
        except (KafkaException, BufferError) as exc:
            raise KafkaUnavailable(f"{topic}: {exc}") from exc
        try:
            async with asyncio.timeout(self.deadline):
                return await done
        except TimeoutError:
            raise DeliveryUnknown(f"{topic}: no delivery report in {self.deadline} s") from None

    async def ping(self) -> None:
        """Raise KafkaUnavailable unless the broker answers a metadata request."""
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=1.0)
        except KafkaException as exc:
            raise KafkaUnavailable(f"broker does not answer: {exc}") from exc

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to `timeout`), then stop."""
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join()


def _settle(
    future: asyncio.Future[tuple[int, int]],
    result: tuple[int, int] | None,
    error: Exception | None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    elif result is not None:
        future.set_result(result)


PartitionHandler = Callable[[set[int]], Coroutine[Any, Any, dict[int, int]]]
"""Called on the loop with the partitions assigned or revoked; returns offsets to commit now."""


class CommandConsumer:
    """A consumer-group member on one topic, in its own thread, feeding an asyncio queue."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        *,
        on_assign: PartitionHandler,
        on_revoke: PartitionHandler,
        session_timeout_ms: int = 10000,
        max_in_flight: int = 1000,
        client_id: str = "barrier-bridge",
    ) -> None:
        self.topic = topic
        self._config = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(session_timeout_ms // 4, 100),
            # With a Kafka-protocol broker the fetch wait sets the latency (see NOTES.md).
            "fetch.wait.max.ms": 10,
            "logger": CLIENT_LOG,
        }
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._slots = threading.Semaphore(max_in_flight)
        self._commits: queue.SimpleQueue[dict[int, int]] = queue.SimpleQueue()
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self.records: asyncio.Queue[Record] = asyncio.Queue()
        self.assignment: set[int] = set()
        self.lag: dict[int, int] = {}
        """Per assigned partition: records not yet committed (high watermark - committed)."""
        self.closed = asyncio.Event()

    def start(self) -> None:
        """Join the group and start consuming in a background thread."""
        self._loop = asyncio.get_running_loop()
        self._consumer = Consumer(self._config)
        self._thread = threading.Thread(target=self._serve, name="kafka-consumer", daemon=True)
        self._thread.start()

    def done(self) -> None:
        """Release the in-flight slot of one record (its outcome is durable or abandoned)."""
        self._slots.release()

    def pause(self) -> None:
        """Stop handing out new records (they stay uncommitted for whoever owns them next)."""
        self._paused.set()

    @property
    def paused(self) -> bool:
        """Whether `pause` was called: records handed out since are not to be started."""
        return self._paused.is_set()

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit `offsets` (partition -> next offset to read) soon, from the consumer's thread.

        librdkafka's consumer handle is not for two threads at once: a commit from the event
        loop would block behind the thread's poll.
        """
        if offsets:
            self._commits.put(offsets)

    def _commit_queued(self, consumer: Consumer, *, wait: bool = False) -> None:
        """Commit the queued offsets; without `wait`, in the background.

        A commit lost in the background costs only a redelivery, which does nothing twice; a
        commit waited for would hold up the thread that hands out the commands.
        """
        offsets: dict[int, int] = {}
        while True:
            try:
                batch = self._commits.get_nowait()
            except queue.Empty:
                break
            for partition, offset in batch.items():
                offsets[partition] = max(offsets.get(partition, 0), offset)
        if offsets:
            try:
                if wait:
                    consumer.commit(offsets=self._partitions(offsets), asynchronous=False)
                else:
                    consumer.commit(offsets=self._partitions(offsets), asynchronous=True)
            except KafkaException as exc:
                log.warning("commit failed: %s", exc)

    async def stop(self) -> None:
        """Leave the group (revoking everything through the handler) and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _partitions(self, offsets: dict[int, int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]

    def _run_handler(self, handler: PartitionHandler, partitions: list[TopicPartition]) -> None:
        assert self._loop is not None
        assert self._consumer is not None
        numbers = {tp.partition for tp in partitions}
        future = asyncio.run_coroutine_threadsafe(handler(numbers), self._loop)
        offsets = future.result()
        if offsets:
            try:
                self._consumer.commit(offsets=self._partitions(offsets), asynchronous=False)
            except KafkaException as exc:
                log.warning("commit on rebalance failed: %s", exc)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment |= {tp.partition for tp in partitions}
        self._run_handler(self._on_assign, partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment -= {tp.partition for tp in partitions}
        for tp in partitions:
            self.lag.pop(tp.partition, None)
        self._run_handler(self._on_revoke, partitions)

    def _serve(self) -> None:
        assert self._consumer is not None
        assert self._loop is not None
        consumer, loop = self._consumer, self._loop
        consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )
        polls = 0
        try:
            while not self._stop.is_set():
                if self._paused.is_set():
                    # Keep serving the group protocol (heartbeats, rebalances) without records.
                    consumer.pause(consumer.assignment())
                self._commit_queued(consumer)
                # What is there already, at once; else wait (briefly) for the next one: a
                # batch waited for would hold the first record until the batch is full.
                messages = consumer.consume(CONSUME_BATCH, 0) or consumer.consume(1, 0.05)
                polls += 1
                if polls % 100 == 0:
                    self._measure_lag(consumer)
                for msg in messages:
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer: %s", error.str())
                        continue
                    # Every slot taken: wait for one (commands end within their deadline, far
                    # inside max.poll.interval.ms). Polling meanwhile could return a record, and
                    # one dropped here would be lost.
                    while not self._slots.acquire(timeout=0.1):
                        if self._stop.is_set():
                            return
                    timestamp_type, timestamp = msg.timestamp()
                    record = Record(
                        topic=msg.topic() or self.topic,
                        partition=msg.partition() or 0,
                        offset=msg.offset() or 0,
                        key=msg.key(),
                        value=msg.value(),
                        timestamp_ms=timestamp if timestamp_type != 0 and timestamp > 0 else None,
                    )
                    loop.call_soon_threadsafe(self.records.put_nowait, record)
        finally:
            self._commit_queued(consumer, wait=True)
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()  # leaves the group; runs the revoke handler first
            loop.call_soon_threadsafe(self.closed.set)

    def _measure_lag(self, consumer: Consumer) -> None:
        # One round trip for the committed offsets; the high watermarks are those of the last
        # fetch responses (asking the broker per partition would hold up this thread, which
        # hands out the commands, by a round trip per partition).
        assigned = consumer.assignment()
        if not assigned:
            return
        try:
            committed = consumer.committed(assigned, timeout=1.0)
        except KafkaException:
            return
        for tp in committed:
            try:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high < 0:
                continue  # nothing fetched from it yet
            position = tp.offset if tp.offset >= 0 else 0
            self.lag[tp.partition] = max(high - position, 0)
