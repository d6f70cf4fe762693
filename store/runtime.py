"""Process-wide tuning shared by the long-running services (the API and the bridge)."""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation (CPython's default: 700)."""


def tune_garbage_collector() -> None:
    """Keep CPython's cyclic collector from pausing a latency-sensitive service for long.

    With the default thresholds, objects that live for one fan-out or one poll cycle survive
    a few young collections and are promoted; full collections then come every few seconds and
    each walks every object of the process: 120-150 ms with 1,000 WebSocket clients connected
    (measured in the API with ``gc.callbacks``), time in which no frame and no poll goes out.
    So: what start-up built is frozen (never walked again), and young collections are rarer,
    so that short-lived objects die by reference count before one runs. Call once, after
    start-up's imports and set-up and before serving.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle * 2, old)
