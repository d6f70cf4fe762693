"""Which offset may be committed: the first one on each partition without a durable outcome."""

from __future__ import annotations


class OffsetTracker:
    """Tracks records in flight per partition; commits never pass an unfinished record."""

    def __init__(self) -> None:
        self._pending: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}
        """Per partition: one past the highest offset seen."""
        self._committed: dict[int, int] = {}

    def started(self, partition: int, offset: int) -> None:
        """Record that `offset` on `partition` was consumed and has no outcome yet."""
        self._pending.setdefault(partition, set()).add(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def finished(self, partition: int, offset: int) -> None:
        """Record that `offset` on `partition` has a durable outcome."""
        self._pending.get(partition, set()).discard(offset)

    def committable(self) -> dict[int, int]:
        """Per partition, the offset to commit now (the next to read) where it moved on."""
        out: dict[int, int] = {}
        for partition, next_offset in self._next.items():
            pending = self._pending.get(partition)
            offset = min(pending) if pending else next_offset
            if offset > self._committed.get(partition, -1):
                out[partition] = offset
        return out

    def committed(self, offsets: dict[int, int]) -> None:
        """Record that `offsets` were committed."""
        for partition, offset in offsets.items():
            self._committed[partition] = max(self._committed.get(partition, -1), offset)

    def in_flight(self, partition: int) -> int:
        """How many records of `partition` have no outcome yet."""
        return len(self._pending.get(partition, ()))

    def all_done(self) -> bool:
        """Whether every record consumed has an outcome."""
        return not any(self._pending.values())

    def forget(self, partitions: set[int]) -> None:
        """Drop the state of partitions this consumer no longer owns."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
