"""The benchmark harness at its ``--quick`` size: every scenario end to end, reported and plotted.

A smoke test of the harness only: no figure is judged here (speed is measured, not asserted).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bench.report import ScenarioResult
from bench.scenarios import SCENARIOS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_every_scenario_runs_at_its_quick_size(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    for name in SCENARIOS:
        result = msgspec.json.decode((out / f"{name}-quick.json").read_bytes(), type=ScenarioResult)
        assert result.problems == []
        assert result.figures, f"{name}: no figures"
        assert all(f.value is not None or f.stats is not None for f in result.figures), name
        assert {p.role for p in result.processes}, f"{name}: no process measured"
        assert f"== {name} (quick)" in run.stdout
    plot = tmp_path / "latencies.png"
    drawn = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.plot",
            *map(str, sorted(out.glob("*.json"))),
            "--out",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert drawn.returncode == 0, drawn.stderr
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
