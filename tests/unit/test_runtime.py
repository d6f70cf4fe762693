"""Process-wide tuning, checked in a fresh interpreter (it changes the whole process)."""

import subprocess
import sys

import pytest

from store.runtime import YOUNG_COLLECTION_THRESHOLD

pytestmark = pytest.mark.unit


def test_the_collector_is_tuned_for_short_pauses() -> None:
    probe = (
        "import gc; from store.runtime import tune_garbage_collector; "
        "before = gc.get_threshold(); tune_garbage_collector(); "
        "print(gc.get_freeze_count() > 0, before[1] * 2 == gc.get_threshold()[1], "
        "gc.get_threshold()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == ["True", "True", str(YOUNG_COLLECTION_THRESHOLD)]
