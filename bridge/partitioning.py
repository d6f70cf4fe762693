"""Which partition a barrier's commands go to: the Java client's murmur2 partitioner.

The API produces with it (confluent-kafka's ``partitioner=murmur2_random`` matches it for keyed
records) and the bridge uses it to know which barriers its assigned partitions own, so producing
and ownership cannot disagree.
"""

from __future__ import annotations

from bridge.messages import command_key

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of `data` as an unsigned 32-bit value."""
    h = (0x9747B28C ^ len(data)) & _MASK
    words = len(data) // 4
    for i in range(words):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[4 * words :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition the Java client picks for `key` among `partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def barrier_partition(barrier_id: int, partitions: int) -> int:
    """The partition of `barrier_id`'s commands."""
    return partition_for_key(command_key(barrier_id), partitions)
