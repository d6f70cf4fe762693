"""Offset commits never pass a record whose outcome is not durable."""

import pytest

from bridge.offsets import OffsetTracker

pytestmark = pytest.mark.unit


def test_commits_stop_at_the_first_unfinished_record() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(0, offset)
    tracker.started(1, 5)
    assert tracker.committable() == {0: 10, 1: 5}
    tracker.committed({0: 10, 1: 5})
    assert tracker.committable() == {}
    tracker.finished(0, 11)  # a fast barrier finished before a slow one
    assert tracker.committable() == {}
    tracker.finished(0, 10)
    assert tracker.committable() == {0: 12}
    tracker.finished(0, 12)
    tracker.finished(1, 5)
    assert tracker.committable() == {0: 13, 1: 6}
    tracker.committed({0: 13, 1: 6})
    assert tracker.committable() == {}
    assert tracker.in_flight(0) == 0


def test_forgotten_partitions_start_afresh() -> None:
    tracker = OffsetTracker()
    tracker.started(3, 7)
    tracker.forget({3})
    assert tracker.committable() == {}
    tracker.started(3, 7)
    assert tracker.committable() == {3: 7}
