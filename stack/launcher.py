"""The whole system on loopback from one command: services, simulator, bridge and API.

Embedded Kafka-protocol broker, PostgreSQL and Redis (from PyPI wheels) are started unless the
user gives URLs of their own; the simulator, the bridge and the API run as child processes
whose logs are streamed with a prefix. The address and process id of everything the launcher
started, and the demo tokens, are written to ``<data>/stack.json`` (readable by its owner only)
so scripts can attach, and everything is stopped on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import stat
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec

from api.auth import hash_token
from plc.config import dump_register_map
from plc.registers import RegisterMap, uniform_register_map
from stack.services import (
    LOOPBACK,
    KafkaBroker,
    PostgresServer,
    RedisServer,
    free_port,
    parent_death_hook,
)

STARTUP_DEADLINE = 90.0
"""Seconds the whole stack may take to become ready."""

EmbeddedService = TypeVar("EmbeddedService", KafkaBroker, PostgresServer, RedisServer)


class StackOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What to start, and where."""

    data: Path
    endpoints: int = 2
    barriers_per_endpoint: int = 4
    travel_time: float = 3.0
    api_port: int = 8000
    kafka: str | None = None
    database_url: str | None = None
    redis_url: str | None = None


class StackInfo(msgspec.Struct, frozen=True):
    """The addresses of a running stack, as written to ``stack.json``."""

    api_url: str
    dashboard_url: str
    kafka_bootstrap: str
    database_url: str
    redis_url: str
    simulator_endpoints: dict[str, str]
    simulator_control_url: str
    bridge_metrics_url: str
    tokens: dict[str, str]
    """Demo tokens by role (made up for this run)."""
    pids: dict[str, int]
    """Process id of everything the launcher started, by name (embedded services included)."""


class Child:
    """One child process whose output is streamed with a prefix."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, pump: asyncio.Task[None]
    ) -> None:
        self.name = name
        self.process = process
        self.pump = pump

    @classmethod
    async def start(
        cls, name: str, args: list[str], env: dict[str, str], log: Callable[[str], None]
    ) -> Child:
        """Start `args` with `env`; every line it prints is logged as ``[name] line``."""
        process = await asyncio.create_subprocess_exec(
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches us, and we stop the children in order
            preexec_fn=parent_death_hook(signal.SIGTERM),  # and if we are killed, so are they
        )

        async def pump() -> None:
            assert process.stdout is not None
            async for line in process.stdout:
                log(f"[{name}] {line.decode(errors='replace').rstrip()}")

        return cls(name, process, asyncio.create_task(pump()))

    async def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, wait up to `grace`, then SIGKILL its group; never leave a process behind."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self.process.wait()
            except TimeoutError:
                # Not reaped yet, so its pid (= its group id) cannot have been reused.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self.pump


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _metric(url: str, name: str) -> float | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def _until(
    what: str, probe: Callable[[], bool], children: list[Child], deadline: float
) -> None:
    while not await asyncio.to_thread(probe):
        for child in children:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited with status {child.process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {STARTUP_DEADLINE:g} s")
        await asyncio.sleep(0.2)


class Stack:
    """A running local stack; `start()` starts it, `close()` stops everything it started."""

    def __init__(self, options: StackOptions, log: Callable[[str], None] = print) -> None:
        self.options = options
        self.log = log
        self.services = ExitStack()
        self.children: list[Child] = []
        self.pids: dict[str, int] = {}
        self.info: StackInfo | None = None

    def _embed(self, service: EmbeddedService) -> EmbeddedService:
        """Start an embedded service (stopped by `close()`) and record its process id."""
        started = self.services.enter_context(service)
        if started.pid is None:
            raise RuntimeError(f"{started.name} exited once ready; see {started.log_path}")
        self.pids[started.name] = started.pid
        return started

    async def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        """Start a child process (stopped by `close()`) and record its process id."""
        child = await Child.start(name, args, env, self.log)
        self.children.append(child)
        self.pids[name] = child.process.pid

    def _register_map(self) -> RegisterMap:
        ports = [free_port() for _ in range(self.options.endpoints)]
        return uniform_register_map(
            [(LOOPBACK, port) for port in ports], self.options.barriers_per_endpoint
        )

    async def start(self) -> StackInfo:
        """Start services and children, wait until the API is ready, write ``stack.json``."""
        options = self.options
        data = options.data
        _make_private(data)
        kafka = options.kafka or self._embed(KafkaBroker(data / "kafka")).bootstrap_servers
        database_url = (
            options.database_url or self._embed(PostgresServer(data / "postgres", durable=True)).url
        )
        redis_url = options.redis_url or self._embed(RedisServer(data / "redis")).url
        register_map = self._register_map()
        map_file = data / "barriers.toml"
        map_file.write_text(dump_register_map(register_map))
        tokens = {role: secrets.token_urlsafe(16) for role in ("viewer", "operator", "admin")}
        control_port, metrics_port = free_port(), free_port()
        python = sys.executable
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "API_"))}
        base_env["PYTHONUNBUFFERED"] = "1"
        await self._spawn(
            "simulator",
            [
                python,
                "-m",
                "simulator",
                "--map",
                str(map_file),
                "--travel-time",
                str(options.travel_time),
                "--control-port",
                str(control_port),
            ],
            base_env,
        )
        bridge_env = base_env | {
            "BRIDGE_KAFKA_BOOTSTRAP": kafka,
            "BRIDGE_DATABASE_URL": database_url,
            "BRIDGE_REDIS_URL": redis_url,
            "BRIDGE_REGISTER_MAP": str(map_file),
            "BRIDGE_INSTANCE_ID": "local",
            "BRIDGE_METRICS_PORT": str(metrics_port),
            "BRIDGE_PARTITIONS": "4",
            "BRIDGE_SESSION_TIMEOUT_MS": "6000",
        }
        await self._spawn("bridge", [python, "-m", "bridge"], bridge_env)
        api_env = base_env | {
            "API_HOST": LOOPBACK,
            "API_PORT": str(options.api_port),
            "API_KAFKA_BOOTSTRAP": kafka,
            "API_DATABASE_URL": database_url,
            "API_REDIS_URL": redis_url,
            "API_TOKENS": ",".join(
                f"demo-{role}:{role}:{hash_token(token).hex()}" for role, token in tokens.items()
            ),
        }
        deadline = time.monotonic() + STARTUP_DEADLINE
        metrics_url = f"http://{LOOPBACK}:{metrics_port}/metrics"
        # The bridge creates the topics and the schema: the API starts once it owns barriers.
        await _until(
            "the bridge",
            lambda: (_metric(metrics_url, "bridge_owned_barriers") or 0) > 0,
            self.children,
            deadline,
        )
        await self._spawn("api", [python, "-m", "api"], api_env)
        api_url = f"http://{LOOPBACK}:{options.api_port}"
        viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
        await _until(
            "the API", lambda: _http_ok(f"{api_url}/ready", viewer), self.children, deadline
        )
        self.info = StackInfo(
            api_url=api_url,
            dashboard_url=f"{api_url}/",
            kafka_bootstrap=kafka,
            database_url=database_url,
            redis_url=redis_url,
            simulator_endpoints={
                e.name: f"modbus://{e.host}:{e.port}/{e.unit_id}" for e in register_map.endpoints
            },
            simulator_control_url=f"http://{LOOPBACK}:{control_port}",
            bridge_metrics_url=metrics_url,
            tokens=tokens,
            pids=dict(self.pids),
        )
        _write_private(data / "stack.json", msgspec.json.format(msgspec.json.encode(self.info)))
        return self.info

    async def close(self) -> None:
        """Stop the children (API first, simulator last), then the services."""
        for child in reversed(self.children):
            await child.stop()
        self.children = []
        self.services.close()
        self.pids = {}
        with contextlib.suppress(FileNotFoundError):
            (self.options.data / "stack.json").unlink()


def _make_private(folder: Path) -> None:
    """Create `folder` if needed, and take away read and write access from group and others.

    Search (x) bits are left alone: run as root, PostgreSQL runs as a user of its own that must
    traverse the folder to reach its cluster (see :mod:`stack.services`).
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o066:
        folder.chmod(mode & ~0o066)


def _write_private(path: Path, content: bytes) -> None:
    """Replace `path` by a file readable by its owner only (mode 0600) holding `content`.

    Written beside it and renamed, so a reader never sees it half written, and a file left by an
    earlier run with a wider mode is replaced rather than reused.
    """
    partial = path.with_name(f"{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    partial.replace(path)


async def check(info: StackInfo, within: float = 30.0) -> None:
    """Prove a command end to end: open barrier 1 through the API and see it opened."""
    operator = {"Authorization": f"Bearer {info.tokens['operator']}"}
    async with httpx.AsyncClient(base_url=info.api_url, headers=operator, timeout=5) as client:
        answer = (await client.post("/barriers/1/open")).raise_for_status().json()
        give_up = time.monotonic() + within
        while True:
            status = (await client.get("/barriers/1/status")).raise_for_status().json()
            if status["status"] == "opened" and status["pending"] is None:
                return
            if time.monotonic() > give_up:
                raise RuntimeError(
                    f"command {answer['command_id']} did not open barrier 1: {status}"
                )
            await asyncio.sleep(0.2)
