"""Redis adapter: the live status of every barrier, one record per barrier, and one change channel.

Redis is a cache: PostgreSQL and the PLCs hold the truth, and the bridge rebuilds the records when
Redis comes back empty. A sentinel key, written with every rebuild, tells a flushed or restarted
Redis from one that merely has no barriers yet.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Self

import msgspec
import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from store.types import StatusRecord

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StatusRecord)


class CacheUnavailable(Exception):
    """Redis cannot be reached; PostgreSQL holds the truth, so rebuild the cache when it is back."""


@contextmanager
def _unavailable_as_typed_error() -> Iterator[None]:
    """Turn a refused, lost or timed-out Redis connection into CacheUnavailable."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise CacheUnavailable(f"Redis is unavailable: {error}") from error


class StatusCache:
    """Each barrier's StatusRecord at ``{namespace}:{id}``; every change on ``{namespace}_status``.

    The defaults give the keys ``barrier:{id}``, the sentinel ``barrier:_epoch`` and the channel
    ``barrier_status``; another namespace lets two systems (or tests) share one Redis.
    """

    def __init__(self, url: str, *, namespace: str = "barrier", timeout: float = 0.5) -> None:
        # One quick retry rides over a connection Redis closed on restart; no backoff, so a dead
        # Redis costs a caller at most two timeouts.
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries=1),
        )
        self._prefix = f"{namespace}:"
        self._sentinel = f"{namespace}:_epoch"
        self.channel = f"{namespace}_status"
        """The pub/sub channel that carries every record put."""

    async def close(self) -> None:
        """Close every connection."""
        await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def put(self, record: StatusRecord) -> None:
        """Store `record` as its barrier's status and publish it, atomically (MULTI)."""
        await self.put_many([record], publish={record.barrier_id})

    async def put_many(self, records: Iterable[StatusRecord], *, publish: Collection[int]) -> None:
        """Store `records` and publish those of the barriers in `publish`, in one MULTI.

        One MSET stores them all (the last record of a barrier wins); each record of a barrier in
        `publish` is published, in order. Unpublished writes only keep a record's read time
        true; clients see no change in them.
        """
        encoded = [(r.barrier_id, _encoder.encode(r)) for r in records]
        if not encoded:
            return
        with _unavailable_as_typed_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.mset({self._key(barrier_id): data for barrier_id, data in encoded})
                for barrier_id, data in encoded:
                    if barrier_id in publish:
                        pipe.publish(self.channel, data)
                await pipe.execute()

    async def amend(
        self, barrier_id: int, change: Callable[[StatusRecord], StatusRecord]
    ) -> StatusRecord | None:
        """Store and publish `change` of barrier `barrier_id`'s record unless written meanwhile.

        The key is watched from the read to the write (WATCH/MULTI): if another writer (the
        bridge) stored a record in between, that newer record stays and nothing is written.
        Return the record written, or None if there was no record or it changed meanwhile.
        """
        key = self._key(barrier_id)
        with _unavailable_as_typed_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                value = await pipe.get(key)
                record = _decode(key, value) if value else None
                if record is None:
                    return None
                changed = change(record)
                data = _encoder.encode(changed)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(key, data)
                pipe.publish(self.channel, data)
                try:
                    await pipe.execute()
                except redis.exceptions.WatchError:
                    return None
        return changed

    async def get(self, barrier_id: int) -> StatusRecord | None:
        """Return barrier `barrier_id`'s record, or None if there is none (or it is corrupt)."""
        records = await self._load([self._key(barrier_id)])
        return records[0] if records else None

    async def get_many(self, barrier_ids: Iterable[int]) -> list[StatusRecord]:
        """Return the records of `barrier_ids` that exist, in the order asked."""
        return await self._load([self._key(barrier_id) for barrier_id in barrier_ids])

    async def get_all(self) -> list[StatusRecord]:
        """Return every barrier's record, by barrier id."""
        with _unavailable_as_typed_error():
            keys = {
                key
                async for key in self._redis.scan_iter(match=f"{self._prefix}*", count=1000)
                if not key.startswith(self._sentinel.encode())
            }
        records = await self._load(sorted(keys))
        return sorted(records, key=lambda record: record.barrier_id)

    async def rebuild(self, records: Iterable[StatusRecord], *, owner: str = "") -> None:
        """Write every record and a fresh sentinel of `owner` in one MSET, without publishing.

        Records of barriers not in `records` are left alone: each bridge rebuilds its own, and
        keeps a sentinel of its own.
        """
        epoch = f"{secrets.token_hex(8)}@{time.time():.3f}"
        with _unavailable_as_typed_error():
            await self._redis.mset(
                {
                    **{self._key(r.barrier_id): _encoder.encode(r) for r in records},
                    self._sentinel_key(owner): epoch,
                }
            )

    async def has_sentinel(self, owner: str = "") -> bool:
        """Whether `owner`'s sentinel of its last rebuild is there (False after a flush)."""
        with _unavailable_as_typed_error():
            return await self._redis.exists(self._sentinel_key(owner)) == 1

    def _sentinel_key(self, owner: str) -> str:
        return f"{self._sentinel}:{owner}" if owner else self._sentinel

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[StatusRecord]]:
        """Subscribe to every record put; the subscription is live once the block is entered.

        ``async with cache.subscribe() as records: async for record in records: ...``
        """
        async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            with _unavailable_as_typed_error():
                await pubsub.subscribe(self.channel)
            published = self._published(pubsub)
            try:
                yield published
            finally:
                await published.aclose()

    async def _published(self, pubsub: PubSub) -> AsyncGenerator[StatusRecord]:
        """Yield each well-formed record published on the channel."""
        with _unavailable_as_typed_error():
            async for message in pubsub.listen():
                record = _decode(self.channel, message["data"])
                if record is not None:
                    yield record

    async def _load(self, keys: Sequence[str | bytes]) -> list[StatusRecord]:
        """Return the well-formed records stored at `keys`, in order, skipping missing ones."""
        if not keys:
            return []
        with _unavailable_as_typed_error():
            values = await self._redis.mget(keys)
        decoded = (_decode(key, value) for key, value in zip(keys, values, strict=True) if value)
        return [record for record in decoded if record is not None]

    def _key(self, barrier_id: int) -> str:
        """Return the key of barrier `barrier_id`'s record."""
        return f"{self._prefix}{barrier_id}"


def _decode(source: str | bytes, data: str | bytes) -> StatusRecord | None:
    """Decode a record read from `source`; log and skip a malformed one rather than fail."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as error:
        log.warning("Skipping malformed status record in Redis at %r: %s", source, error)
        return None
