"""Quality judgement and reconnect backoff: pure functions of the clock."""

import pytest

from plc.client import Backoff
from plc.quality import Quality, QualityLimits, assess_quality

pytestmark = pytest.mark.unit

LIMITS = QualityLimits(stale_after=3.0, frozen_after=5.0)


@pytest.mark.parametrize(
    ("now", "link_up", "last_good", "hb_changed", "expected"),
    [
        (10.0, True, 9.5, 9.5, Quality.GOOD),
        (10.0, True, 7.0, 7.0, Quality.GOOD),
        (10.0, True, 6.9, 6.9, Quality.STALE),  # no fresh read within the limit
        (10.0, True, None, None, Quality.STALE),  # never read
        (10.0, True, 9.9, 5.0, Quality.GOOD),
        (10.0, True, 9.9, 4.9, Quality.STALE),  # fresh read, frozen heartbeat
        (10.0, False, 9.9, 9.9, Quality.COMM_LOST),
        (10.0, False, None, None, Quality.COMM_LOST),
    ],
)
def test_assess_quality(
    now: float, link_up: bool, last_good: float | None, hb_changed: float | None, expected: Quality
) -> None:
    got = assess_quality(
        now, link_up=link_up, last_good_read=last_good, heartbeat_changed=hb_changed, limits=LIMITS
    )
    assert got is expected


@pytest.mark.parametrize(
    ("failures", "draw", "expected"),
    [
        (1, 0.0, 0.1),
        (2, 0.0, 0.2),
        (3, 0.0, 0.4),
        (4, 0.5, 0.8 * 0.9),
        (8, 0.0, 10.0),  # 12.8 capped
        (50, 0.999, 10.0 * (1 - 0.2 * 0.999)),
    ],
)
def test_backoff_is_exponential_capped_and_jittered(
    failures: int, draw: float, expected: float
) -> None:
    assert Backoff(initial=0.1, maximum=10.0, jitter=0.2).delay(failures, draw) == pytest.approx(
        expected
    )
