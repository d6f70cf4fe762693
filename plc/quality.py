"""Pure judgement of how far a barrier's last reading can be trusted."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Quality(StrEnum):
    """How far the reading shown for a barrier can be trusted."""

    GOOD = "good"
    STALE = "stale"
    """No fresh read within the staleness limit, or the PLC's heartbeat is frozen."""
    COMM_LOST = "comm_lost"
    """The link to the PLC is down."""


class QualityLimits(msgspec.Struct, frozen=True):
    """When a reading stops being good."""

    stale_after: float = 3.0
    """Seconds without a good read after which a reading is stale."""
    frozen_after: float = 3.0
    """Seconds of an unchanged heartbeat after which the PLC counts as frozen."""


def assess_quality(
    now: float,
    *,
    link_up: bool,
    last_good_read: float | None,
    heartbeat_changed: float | None,
    limits: QualityLimits,
) -> Quality:
    """Return the quality at `now` of a barrier last read well at `last_good_read`.

    `heartbeat_changed` is when the heartbeat word was last seen to move (or first seen).
    """
    if not link_up:
        return Quality.COMM_LOST
    if last_good_read is None or now - last_good_read > limits.stale_after:
        return Quality.STALE
    if heartbeat_changed is not None and now - heartbeat_changed > limits.frozen_after:
        return Quality.STALE
    return Quality.GOOD
