"""CPU time and resident memory of processes, read from Linux ``/proc`` (no extra dependency).

A `ProcessMonitor` watches named processes ("bridge", "simulator", "postgres", ...) and measures
each over a *window*: CPU seconds spent inside the window (user + system, all threads) and the
peak resident memory. At the start of a window the kernel's peak-RSS counter (``VmHWM``) of each
watched process is reset through ``/proc/PID/clear_refs``, so the peak belongs to the window. A
process tree (PostgreSQL forks a backend per connection) has no such counter: a background thread
samples the sum of its processes' PSS (shared pages split among the processes sharing them, so
PostgreSQL's shared buffers count once) every `interval` seconds and keeps the largest.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import msgspec

from bench.report import ProcessUsage

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""Kernel clock ticks per second, the unit of CPU times in ``/proc/PID/stat``."""


OTHERS_ROLE = "everything else on the machine"


class ProcessGone(Exception):
    """The process no longer exists (or /proc cannot be read)."""


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name: index 0 is field 3 (state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        raise ProcessGone(pid) from exc
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, reaped: bool = True) -> float:
    """User + system CPU seconds of `pid` (all its threads), and of its reaped children if asked."""
    fields = _stat_fields(pid)
    # utime, stime, cutime, cstime are fields 14..17 of proc(5).
    return sum(int(v) for v in fields[11 : 15 if reaped else 13]) / CLOCK_TICKS


def parent_of(pid: int) -> int:
    """The parent process id of `pid`."""
    return int(_stat_fields(pid)[1])


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` value of ``/proc/PID/status`` such as ``VmRSS`` or ``VmHWM``; 0 if absent."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        raise ProcessGone(pid) from exc
    prefix = key + ":"
    for line in lines:
        if line.startswith(prefix):
            return int(line.split()[1])
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy (not idle or waiting for I/O) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    # guest time is already included in user and nice.
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def pss_kib(pid: int) -> int:
    """Proportional set size of `pid`: resident memory with shared pages split among sharers."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError as exc:
        raise ProcessGone(pid) from exc
    for line in lines:
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) of `pid`; False if not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def command_line(pid: int) -> str:
    """The command line of `pid`, arguments joined by spaces (shortened to 200 characters)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text if len(text) <= 200 else text[:197] + "..."


def children_index() -> dict[int, list[int]]:
    """Every living process's children, by parent id (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(ProcessGone, ValueError, IndexError):
                children.setdefault(parent_of(int(entry.name)), []).append(int(entry.name))
    return children


def process_tree(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """`root` and all its living descendants (from `children`, or a fresh scan of /proc)."""
    if children is None:
        children = children_index()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


class Watched(msgspec.Struct, frozen=True):
    """A process measured by a `ProcessMonitor`."""

    role: str
    """What it is in the benchmark: ``bridge``, ``simulator``, ``bench (load generator)``, ..."""
    pid: int
    tree: bool = False
    """Measure the process with all its descendants (e.g. PostgreSQL and its backends)."""
    ours: bool = True
    """One of this project's processes (rather than a backing service or the load generator)."""
    reaped: bool = True
    """Count the CPU of its children once they exited and were reaped (a server's workers);
    False for a process whose children are measured on their own (the bench's load tools)."""


class _Start(msgspec.Struct):
    cpu: float
    lifetime_peak_kib: int
    tree: int


def _tree_cpu(watched: Watched) -> tuple[float, int]:
    """CPU seconds of the watched process (or of its whole tree) and how many processes."""
    pids = process_tree(watched.pid) if watched.tree else [watched.pid]
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid, reaped=watched.reaped)
        except ProcessGone:
            if pid == watched.pid:
                raise
    return total, len(pids)


def _resident_kib(watched: Watched, children: dict[int, list[int]] | None) -> int:
    """VmRSS of a single process; the sum of PSS of a tree (shared memory counted once)."""
    if not watched.tree:
        with contextlib.suppress(ProcessGone):
            return status_kib(watched.pid, "VmRSS")
        return 0
    total = 0
    for pid in process_tree(watched.pid, children):
        with contextlib.suppress(ProcessGone):
            total += pss_kib(pid)
    return total


class Window:
    """One measurement window over the watched processes; its `usage` is set when it ends."""

    def __init__(self, monitor: ProcessMonitor, phase: str) -> None:
        self.phase = phase
        self.usage: list[ProcessUsage] = []
        self._monitor = monitor
        self._watched = list(monitor.watched)
        self._starts: dict[str, _Start] = {}
        self._peaks: dict[str, int] = {}
        self._began = 0.0
        self._machine_busy = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)

    @property
    def seconds(self) -> float:
        """Seconds since the window began."""
        return time.monotonic() - self._began

    def __enter__(self) -> Self:
        for watched in self._watched:
            try:
                cpu, count = _tree_cpu(watched)
                hwm = status_kib(watched.pid, "VmHWM")
            except ProcessGone:
                continue
            reset_peak_rss(watched.pid)
            self._starts[watched.role] = _Start(cpu=cpu, lifetime_peak_kib=hwm, tree=count)
            self._peaks[watched.role] = _resident_kib(watched, None)
        self._began = time.monotonic()
        self._machine_busy = machine_busy_seconds()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self._monitor.interval):
            self._sample_once()

    def _sample_once(self) -> None:
        children = children_index() if any(w.tree for w in self._watched) else None
        for watched in self._watched:
            if watched.role in self._starts:
                rss = _resident_kib(watched, children)
                self._peaks[watched.role] = max(self._peaks.get(watched.role, 0), rss)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        wall = time.monotonic() - self._began
        machine_busy = machine_busy_seconds() - self._machine_busy
        self._stop.set()
        self._thread.join()
        self._sample_once()
        for watched in self._watched:
            start = self._starts.get(watched.role)
            if start is None:
                continue
            try:
                cpu, count = _tree_cpu(watched)
                hwm = status_kib(watched.pid, "VmHWM")
            except ProcessGone:
                continue
            used = cpu - start.cpu
            # A tree's peak is its sampled PSS sum; a process's own high-water mark is exact.
            peak_kib = self._peaks.get(watched.role, 0) if watched.tree else hwm
            self.usage.append(
                ProcessUsage(
                    phase=self.phase,
                    role=watched.role,
                    pid=watched.pid,
                    ours=watched.ours,
                    processes=max(count, start.tree),
                    wall_seconds=wall,
                    cpu_seconds=used,
                    cpu_percent=100.0 * used / wall if wall > 0 else 0.0,
                    peak_rss_mb=peak_kib / 1024,
                    lifetime_peak_rss_mb=max(start.lifetime_peak_kib, hwm) / 1024,
                    command=command_line(watched.pid),
                )
            )
        # Whatever else ran on the machine meanwhile: the noise under these figures.
        others = max(machine_busy - sum(u.cpu_seconds for u in self.usage), 0.0)
        self.usage.append(
            ProcessUsage(
                phase=self.phase,
                role=OTHERS_ROLE,
                pid=0,
                ours=False,
                processes=0,
                wall_seconds=wall,
                cpu_seconds=others,
                cpu_percent=100.0 * others / wall if wall > 0 else 0.0,
                peak_rss_mb=0.0,
                lifetime_peak_rss_mb=0.0,
                command="machine-wide busy CPU (/proc/stat) minus the processes above",
            )
        )
        self._monitor.usage.extend(self.usage)


class ProcessMonitor:
    """Named processes to measure, and every window's measurements so far."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.watched: list[Watched] = []
        self.usage: list[ProcessUsage] = []

    def watch(
        self, role: str, pid: int, *, tree: bool = False, ours: bool = True, reaped: bool = True
    ) -> None:
        """Measure `pid` as `role` in every later window (replacing an earlier `role`)."""
        self.unwatch(role)
        self.watched.append(Watched(role=role, pid=pid, tree=tree, ours=ours, reaped=reaped))

    def unwatch(self, role: str) -> None:
        """Stop measuring `role`."""
        self.watched = [w for w in self.watched if w.role != role]

    def window(self, phase: str) -> Window:
        """A window measuring every watched process; use as ``with monitor.window(...) as w``."""
        return Window(self, phase)

    @contextlib.contextmanager
    def watching(
        self, role: str, pid: int, *, tree: bool = False, ours: bool = True
    ) -> Iterator[None]:
        """Watch `pid` as `role` for the duration of the block."""
        self.watch(role, pid, tree=tree, ours=ours)
        try:
            yield
        finally:
            self.unwatch(role)
