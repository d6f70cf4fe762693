"""The README's first command: the whole stack from one launcher, attachable, stopped cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

import httpx
import msgspec
import psycopg
import pytest

from stack.launcher import StackInfo
from stack.services import free_port
from tests.bridge_stack import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

STARTUP = 90.0
"""Seconds the launcher may take to print that the stack is up."""

EXIT = 60.0
"""Seconds the launcher may take to stop everything and exit."""

SERVICES = {"kafka", "postgres", "redis"}
CHILDREN = {"simulator", "bridge", "api"}


class Process(NamedTuple):
    """One process, as ``/proc/PID/stat`` describes it."""

    pid: int
    ppid: int
    pgid: int
    started: int
    """Clock ticks after boot: with the pid, it names one process even if the pid is reused."""
    command: str


def processes() -> list[Process]:
    """Every process on the machine, zombies (which have exited) left out."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            line = Path(entry.path, "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        # "pid (command) state ppid pgrp session ...": the command may hold spaces and parentheses.
        command = line[line.index("(") + 1 : line.rindex(")")]
        fields = line[line.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            found.append(
                Process(int(entry.name), int(fields[1]), int(fields[2]), int(fields[19]), command)
            )
    return found


def descendants(root: int, table: list[Process]) -> list[Process]:
    """The processes below `root` in `table`, however deep."""
    children = defaultdict(list)
    for process in table:
        children[process.ppid].append(process)
    found, parents = [], [root]
    while parents:
        for child in children[parents.pop()]:
            found.append(child)
            parents.append(child.pid)
    return found


def survivors(started: list[Process], groups: set[int]) -> list[Process]:
    """Which of `started` still run, and whatever else runs in one of the process `groups`."""
    ours = {(process.pid, process.started) for process in started}
    return [p for p in processes() if (p.pid, p.started) in ours or p.pgid in groups]


class Launcher:
    """``python -m stack`` as a user runs it, its output read line by line as it comes."""

    def __init__(self, data: Path, *options: str) -> None:
        self.data = data
        self.api_port = free_port()
        self.command = [
            sys.executable,
            "-m",
            "stack",
            "--data",
            str(data),
            "--api-port",
            str(self.api_port),
            "--travel-time",
            "0.5",
            *options,
        ]
        self.lines: list[str] = []
        self.ended = False
        self.grew = asyncio.Condition()

    async def __aenter__(self) -> Self:
        self.began = time.monotonic()
        # A session of its own, like a shell's foreground job: Ctrl-C is sent to its group.
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.pump = asyncio.create_task(self._pump())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.returncode is None:
            # The test failed: the parent-death signal stops the launcher's children and services.
            self.process.kill()
            await self.process.wait()
        await self.pump

    async def _pump(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            async with self.grew:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self.grew.notify_all()
        async with self.grew:
            self.ended = True
            self.grew.notify_all()

    def tail(self) -> str:
        return "\n".join(self.lines[-60:])

    async def line(self, pattern: str, within: float = STARTUP) -> re.Match[str]:
        """The first line of output matching `pattern`, once printed; fail at the deadline."""
        regex = re.compile(pattern)

        def first() -> re.Match[str] | None:
            return next((match for line in self.lines if (match := regex.search(line))), None)

        try:
            async with self.grew, asyncio.timeout(within):
                await self.grew.wait_for(lambda: self.ended or first() is not None)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {within} s:\n{self.tail()}") from None
        match = first()
        assert match is not None, f"the launcher ended without printing {pattern!r}:\n{self.tail()}"
        return match

    async def up(self) -> float:
        """Wait until the launcher says the stack is up; return the seconds since it was run."""
        await self.line(r"^barrier bridge is up$")
        return time.monotonic() - self.began

    def info(self) -> StackInfo:
        return msgspec.json.decode((self.data / "stack.json").read_bytes(), type=StackInfo)

    async def exit_status(self) -> int:
        """Wait (up to a deadline) for the launcher to exit and its output to end."""
        try:
            async with asyncio.timeout(EXIT):
                await self.process.wait()
                await self.pump
        except TimeoutError:
            raise AssertionError(
                f"the launcher still runs after {EXIT} s:\n{self.tail()}"
            ) from None
        assert self.process.returncode is not None
        return self.process.returncode

    async def ctrl_c(self, info: StackInfo) -> None:
        """Press Ctrl-C; see the launcher exit 0 and every process it started, however deep, gone."""
        started = descendants(self.process.pid, processes())
        assert {p.pid for p in started if p.ppid == self.process.pid} == set(info.pids.values()), (
            f"stack.json records every process the launcher started: {info.pids}, {started}"
        )
        # PostgreSQL's backends and helpers: each one leads a process group of its own, so only
        # the walk down from the launcher finds them.
        assert [p for p in started if p.ppid == info.pids["postgres"]]
        os.killpg(self.process.pid, signal.SIGINT)
        assert await self.exit_status() == 0, self.tail()
        await eventually(
            lambda: asyncio.to_thread(survivors, started, set(info.pids.values())),
            lambda left: left == [],
            within=10,
        )


async def test_the_stack_starts_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "stack"
    # What an older launcher, or one that was killed, may have left: a folder anyone may read
    # and a stack.json to match.
    data.mkdir()
    data.chmod(0o755)
    (data / "stack.json").write_text("{}")
    (data / "stack.json").chmod(0o644)
    async with Launcher(data) as launcher:
        await launcher.up()
        info = launcher.info()
        assert set(info.pids) == SERVICES | CHILDREN
        assert info.kafka_bootstrap.startswith("127.0.0.1:")
        assert info.database_url.startswith("postgresql://")
        assert len(info.simulator_endpoints) == 2
        # It holds the demo tokens in plaintext: for its owner's eyes only.
        assert stat.S_IMODE((data / "stack.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) & 0o066 == 0

        dashboard = (await launcher.line(r"^\s+dashboard\s+(\S+)$")).group(1)
        api = (await launcher.line(r"^\s+API\s+(\S+)")).group(1)
        token = (await launcher.line(r"^\s+operator token\s+(\S+)$")).group(1)
        assert dashboard == f"http://127.0.0.1:{launcher.api_port}/" == info.dashboard_url
        assert api == info.api_url
        operator = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=api, headers=operator, timeout=5) as client:
            wrong = {"Authorization": f"Bearer {token}x"}
            assert (await client.post("/barriers/5/open", headers=wrong)).status_code == 401
            assert (await client.post("/barriers/5/open")).status_code == 202
            status = await eventually(
                lambda: client.get("/barriers/5/status"), lambda r: r.json()["status"] == "opened"
            )
            assert status.json()["quality"] == "good"
            page = await client.get(dashboard)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")

        await launcher.ctrl_c(info)
        assert not (data / "stack.json").exists()


async def test_check_passes_and_a_second_run_reuses_the_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "A second run starts fast" comes down to this: the embedded services' folders under the
    # data folder are kept, so PostgreSQL's cluster is not initialised again (initdb is most of
    # a first start) and what it holds survives. Kafka (memory only) and Redis (no persistence)
    # start afresh in milliseconds either way. The start-up times (launch to "is up") are
    # printed for the record, not asserted: on a busy 2-core machine they are too noisy.
    data = tmp_path / "stack"
    async with Launcher(data, "--check") as first:
        first_startup = await first.up()
        await first.line(r"^check passed")
        assert await first.exit_status() == 0, first.tail()
    for service in SERVICES:
        (data / service / "kept").write_text("left by the first run")
    second_began = datetime.now(UTC)

    async with Launcher(data) as second:
        second_startup = await second.up()
        info = second.info()
        initdb = re.compile(r"^=== .*/bin/initdb'", re.MULTILINE)
        postgres_log = (data / "postgres" / "postgres.log").read_text()
        assert len(initdb.findall(postgres_log)) == 1, "initdb ran in the first run only"
        assert {s for s in SERVICES if (data / s / "kept").exists()} == SERVICES
        async with await psycopg.AsyncConnection.connect(info.database_url) as db:
            cursor = await db.execute(
                "SELECT count(*) FROM barrier_events"
                " WHERE barrier_id = 1 AND command_id IS NOT NULL AND created_at < %s",
                (second_began,),
            )
            [(events,)] = await cursor.fetchall()
        assert events > 0, "the first run's command is still on record"
        await second.ctrl_c(info)

    with capsys.disabled():
        print(
            f"\nlauncher start-up: first run {first_startup:.1f} s (initdb), "
            f"second run {second_startup:.1f} s (data folder kept)"
        )
