"""What a scenario is, what it gets to run with, and how one is run into a `ScenarioResult`.

A scenario is one module under `bench.scenarios` exposing a `Scenario`: a name, a parameter
Struct whose defaults are the full size, a `quick` instance small enough for a smoke test, and an
async `run(params, context, result)` that adds figures and notes to `result`. The harness fills
in the machine, the timing and the CPU/memory of every process the scenario watched.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

from bench.proc import ProcessMonitor
from bench.report import ScenarioResult, machine

log = logging.getLogger("bench")

P = TypeVar("P", bound=msgspec.Struct)


@dataclass(frozen=True)
class Context:
    """What a running scenario may use."""

    work_dir: Path
    """An empty directory for the scenario's services' data, logs and files."""
    quick: bool
    monitor: ProcessMonitor
    """Watch every process the scenario starts (and the bench itself) with this."""


@dataclass(frozen=True)
class Scenario(Generic[P]):
    """One benchmark scenario."""

    name: str
    description: str
    params: type[P]
    """Its parameters; the defaults are the full size."""
    quick: P
    """The parameters of the ``--quick`` size."""
    run: Callable[[P, Context, ScenarioResult], Awaitable[None]]

    def parameters(self, quick: bool, overrides: dict[str, str]) -> P:
        """The parameters for this run: the full or quick size, with `overrides` applied."""
        base: dict[str, Any] = msgspec.to_builtins(self.quick if quick else self.params())
        for key, raw in overrides.items():
            if key not in base:
                known = ", ".join(sorted(base))
                raise ValueError(f"{self.name} has no parameter {key!r} (known: {known})")
            try:
                base[key] = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                base[key] = raw
        try:
            return msgspec.convert(base, self.params, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{self.name}: {exc}") from None


def _empty_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


async def run_scenario(
    scenario: Scenario[Any], params: msgspec.Struct, work_dir: Path, *, quick: bool
) -> ScenarioResult:
    """Run `scenario` in a fresh `work_dir`; a failure becomes a problem in the result."""
    await asyncio.to_thread(_empty_dir, work_dir)
    monitor = ProcessMonitor()
    result = ScenarioResult(
        scenario=scenario.name,
        description=scenario.description,
        quick=quick,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=0.0,
        machine=machine(),
        params=msgspec.to_builtins(params),
    )
    began = time.monotonic()
    try:
        await scenario.run(params, Context(work_dir, quick, monitor), result)
    except Exception as exc:
        log.error("scenario %s failed:\n%s", scenario.name, traceback.format_exc())
        result.problems.append(f"the scenario failed: {type(exc).__name__}: {exc}")
    finally:
        result.seconds = time.monotonic() - began
        result.processes = list(monitor.usage)
    return result
