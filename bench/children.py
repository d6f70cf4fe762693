"""Child processes of the benchmark: the simulator, the bridge, each in its own process.

Every child runs in a session of its own (a Ctrl-C meant for the bench does not hit it half-way;
the bench stops it in order), logs to a file, gets a parent-death signal (a SIGKILLed bench
leaves none behind) and is stopped with SIGTERM, then SIGKILL of its group, when its ``with``
block ends, whatever ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgspec

from plc.registers import RegisterMap, uniform_register_map
from simulator.control import CoilWrites
from simulator.server import CoilWrite
from stack.services import (
    LOOPBACK,
    free_port,
    log_tail,
    parent_death_hook,
    stop_process_group,
)


def settings_env(settings: msgspec.Struct, prefix: str) -> dict[str, str]:
    """Our environment with every field of `settings` set as ``<prefix><FIELD>``.

    Every setting is explicit: nothing with `prefix` leaks in from our own environment.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    for field in msgspec.structs.fields(settings):
        env[prefix + field.name.upper()] = str(getattr(settings, field.name))
    return env


class ChildError(RuntimeError):
    """A child process failed to start or died."""


class ChildProcess:
    """One child process; ``with`` starts it and stops it (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.killed = False
        """Whether the last stop had to SIGKILL the child (it ignored SIGTERM for too long)."""
        self.exit_status: int | None = None
        """The child's exit status once stopped."""

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._process is None:
            raise ChildError(f"{self.name} is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self._process is not None and self._process.poll() is None

    def check(self) -> None:
        """Raise `ChildError` with the tail of its log if the child has exited."""
        if self._process is not None and self._process.poll() is not None:
            raise ChildError(
                f"{self.name} exited with status {self._process.returncode}; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def start(self) -> Self:
        """Start the child, its output appended to `log_path`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=parent_death_hook(signal.SIGTERM),
            )
        return self

    def stop(self) -> None:
        """Ask the child to stop; kill its process group if it has not within `stop_timeout`."""
        process, self._process = self._process, None
        if process is None:
            return
        self.killed = stop_process_group(process, signal.SIGTERM, self.stop_timeout)
        self.exit_status = process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


async def wait_port(port: int, host: str = LOOPBACK, within: float = 10.0) -> None:
    """Wait until a TCP connection to `host`:`port` succeeds; raise TimeoutError at the deadline."""
    async with asyncio.timeout(within):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


_ENDPOINT_LINE = re.compile(r"^plc-(\d+) modbus://[^:]+:(\d+)/", re.MULTILINE)


class SimulatorProcess(ChildProcess):
    """``python -m simulator`` serving a uniform ``barrier-v1`` map on free loopback ports."""

    def __init__(
        self,
        log_path: Path,
        *,
        endpoints: int,
        barriers_per_endpoint: int,
        travel_time: float = 3.0,
        scan_interval: float = 0.05,
        control: bool = False,
    ) -> None:
        self.control_port = free_port() if control else 0
        super().__init__(
            "simulator",
            [
                sys.executable,
                "-m",
                "simulator",
                "--endpoints",
                str(endpoints),
                "--barriers-per-endpoint",
                str(barriers_per_endpoint),
                "--host",
                LOOPBACK,
                "--port",
                "0",
                "--control-port",
                str(self.control_port),
                "--travel-time",
                str(travel_time),
                "--scan-interval",
                str(scan_interval),
            ],
            log_path,
        )
        self.endpoints = endpoints
        self.barriers_per_endpoint = barriers_per_endpoint

    async def ready(self, within: float = 30.0) -> RegisterMap:
        """Wait until every PLC listens; return the register map with the ports it bound."""
        deadline = time.monotonic() + within
        ports: dict[int, int] = {}
        while len(ports) < self.endpoints:
            self.check()
            if time.monotonic() > deadline:
                raise ChildError(
                    f"simulator not listening after {within} s; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            await asyncio.sleep(0.05)
            text = self.log_path.read_text(errors="replace")
            text = text[text.rfind("=== ") :]  # this run's part of the log only
            ports = {int(m.group(1)): int(m.group(2)) for m in _ENDPOINT_LINE.finditer(text)}
        for port in [*ports.values(), *([self.control_port] if self.control_port else [])]:
            await wait_port(port, within=max(deadline - time.monotonic(), 1.0))
        return uniform_register_map(
            [(LOOPBACK, ports[i + 1]) for i in range(self.endpoints)], self.barriers_per_endpoint
        )

    def _get(self, path: str) -> Any:
        if not self.control_port:
            raise ChildError("the simulator was started without its control interface")
        url = f"http://{LOOPBACK}:{self.control_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read()

    async def request_count(self) -> int:
        """Modbus requests all the PLCs have received so far (needs ``control=True``)."""
        body = await asyncio.to_thread(self._get, "/endpoints")
        endpoints = msgspec.json.decode(body)
        return sum(sum(e["request_counts"].values()) for e in endpoints)

    async def writes(self, after: int = 0) -> list[CoilWrite]:
        """The request-coil writes the PLCs received, with a ``seq`` above `after`."""
        body = await asyncio.to_thread(self._get, f"/writes?after={after}")
        return msgspec.json.decode(body, type=CoilWrites).writes
