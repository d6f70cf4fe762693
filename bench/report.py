"""The common result of every scenario: figures with their distribution, load and process costs.

A `ScenarioResult` holds `Figure`s (a single value, or the `Stats` of many samples: count,
median, p99, max), the `ProcessUsage` (CPU, peak RSS) of every process measured in each phase,
and the `Machine` it ran on. It is written as JSON and printed as a plain-text table.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec


class Stats(msgspec.Struct, frozen=True):
    """The distribution of a sample: percentiles by nearest rank."""

    count: int
    median: float
    p99: float
    max: float
    min: float
    mean: float


def summarize(values: Iterable[float]) -> Stats | None:
    """Return the `Stats` of `values`, or None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Stats(
        count=len(ordered),
        median=statistics.median(ordered),
        p99=percentile(ordered, 99.0),
        max=ordered[-1],
        min=ordered[0],
        mean=statistics.fmean(ordered),
    )


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The nearest-rank `pct` percentile of the already sorted, non-empty `ordered`."""
    rank = max(math.ceil(pct / 100.0 * len(ordered)), 1)
    return ordered[rank - 1]


class Figure(msgspec.Struct, frozen=True, kw_only=True):
    """One measured figure: a value, or the distribution of many samples, with its load."""

    phase: str
    """The part of the scenario it was measured in."""
    name: str
    unit: str
    value: float | None = None
    """A single value (a rate, a count); None when `stats` carries the figure."""
    stats: Stats | None = None
    load: str = ""
    """What the system was doing while this was measured."""
    limit: float | None = None
    """The natural limit measured in the same run, in the same unit, if there is one."""
    ratio: float | None = None
    """Ours divided by `limit`."""
    note: str = ""


class ProcessUsage(msgspec.Struct, frozen=True, kw_only=True):
    """What one process (or process tree) cost during one phase, from ``/proc``."""

    phase: str
    role: str
    pid: int
    ours: bool
    """One of this project's processes, rather than a backing service or the load generator."""
    processes: int
    """1, or the size of the process tree measured (PostgreSQL and its backends)."""
    wall_seconds: float
    cpu_seconds: float
    """User + system time of all threads within the phase."""
    cpu_percent: float
    """Percent of one core, averaged over the phase."""
    peak_rss_mb: float
    """Peak resident memory within the phase (a tree: the largest sampled sum of PSS)."""
    lifetime_peak_rss_mb: float
    """Peak resident memory of the root process since it started."""
    command: str = ""


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    """Where the figures were measured."""

    cores: int
    usable_cores: int
    cpu_model: str
    memory_mb: float
    kernel: str
    python: str
    pymodbus: str
    load_average: tuple[float, float, float]
    """1, 5 and 15 minute load averages when the scenario began."""
    git_commit: str = ""
    git_dirty: tuple[str, ...] = ()
    """Paths with uncommitted changes: the code measured is the working tree."""


class ScenarioResult(msgspec.Struct, kw_only=True):
    """Everything one scenario measured."""

    scenario: str
    description: str
    quick: bool
    started_at: str
    """ISO 8601, UTC."""
    seconds: float
    machine: Machine
    params: dict[str, Any]
    figures: list[Figure] = msgspec.field(default_factory=list)
    processes: list[ProcessUsage] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)
    problems: list[str] = msgspec.field(default_factory=list)
    """Broken invariants (a command lost, lag that never returns to 0): not timing."""
    samples: dict[str, list[float]] = msgspec.field(default_factory=dict)
    """The raw samples of each distribution figure, by ``"<phase>: <name> (<unit>)"``."""

    def add(self, phase: str, name: str, unit: str, value: float | None, **extra: Any) -> None:
        """Add a single-value figure."""
        self.figures.append(Figure(phase=phase, name=name, unit=unit, value=value, **extra))

    def add_stats(
        self, phase: str, name: str, unit: str, values: Iterable[float], **extra: Any
    ) -> None:
        """Add a distribution figure from raw samples (nothing if there are none)."""
        kept = list(values)
        stats = summarize(kept)
        if stats is not None:
            self.figures.append(Figure(phase=phase, name=name, unit=unit, stats=stats, **extra))
            self.samples[f"{phase}: {name} ({unit})"] = kept


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _memory_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def machine() -> Machine:
    """Describe this machine and the code's revision."""
    load = os.getloadavg()
    dirty = tuple(line[3:] for line in _git("status", "--porcelain").splitlines() if line)
    return Machine(
        cores=os.cpu_count() or 0,
        usable_cores=len(os.sched_getaffinity(0)),
        cpu_model=_cpu_model(),
        memory_mb=round(_memory_mb()),
        kernel=platform.release(),
        python=platform.python_version(),
        pymodbus=metadata.version("pymodbus"),
        load_average=(load[0], load[1], load[2]),
        git_commit=_git("rev-parse", "--short", "HEAD"),
        git_dirty=dirty,
    )


def write_json(result: ScenarioResult, path: Path) -> None:
    """Write `result` to `path` as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")


def number(value: float | None) -> str:
    """Format a figure with as many digits as make sense for its size."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if value == int(value) and size < 1e9:
        return f"{int(value):,}"
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render(result: ScenarioResult) -> str:
    """The result as plain-text tables: figures, then processes, then notes and problems."""
    m = result.machine
    out = [
        f"== {result.scenario}{' (quick)' if result.quick else ''}: {result.description}",
        f"   {m.usable_cores}/{m.cores} cores {m.cpu_model}, {m.memory_mb:,.0f} MB, "
        f"Python {m.python}, pymodbus {m.pymodbus}, load {m.load_average[0]:.2f}, "
        f"git {m.git_commit}{' + uncommitted changes' if m.git_dirty else ''}; "
        f"{result.seconds:.0f} s",
        "",
    ]
    rows = []
    for f in result.figures:
        s = f.stats
        ratio = f"{f.ratio:.2f}x of {number(f.limit)}" if f.ratio is not None else ""
        rows.append(
            [
                f.phase,
                f.name,
                number(s.median if s else f.value),
                number(s.p99) if s else "",
                number(s.max) if s else "",
                number(s.count) if s else "",
                f.unit,
                ratio,
                f.load,
            ]
        )
    header = ["phase", "figure", "value/p50", "p99", "max", "n", "unit", "vs limit", "load"]
    out += _table(header, rows, right={2, 3, 4, 5})
    out.append("")
    prow = [
        [
            u.phase,
            u.role + ("" if u.processes <= 1 else f" ({u.processes} procs)"),
            f"{u.cpu_percent:.1f}",
            f"{u.cpu_seconds:.2f}",
            f"{u.wall_seconds:.1f}",
            f"{u.peak_rss_mb:.0f}" if u.pid else "",
            f"{u.lifetime_peak_rss_mb:.0f}" if u.pid else "",
        ]
        for u in result.processes
    ]
    pheader = ["phase", "process", "CPU % of 1 core", "CPU s", "wall s", "peak RSS MB", "ever MB"]
    out += _table(pheader, prow, right={2, 3, 4, 5, 6})
    out += [f"note: {n}" for n in result.notes]
    out += [f"PROBLEM: {p}" for p in result.problems]
    return "\n".join(out)
