"""The Litestar application: REST for people and systems, WebSocket for monitors.

`create_app(settings)` builds it; the adapters (PostgreSQL, Redis, Kafka) are opened on start-up
and closed on shutdown. Every error is JSON with a stable ``error`` code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, Litestar, Request, Response, WebSocket, get, post, websocket
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader, State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
    WebSocketDisconnect,
)
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter
from litestar.plugins.prometheus import PrometheusController
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_202_ACCEPTED
from litestar.types import ASGIApp, Receive, Scope, Send

from api import metrics
from api.auth import Principal, Role, TokenRegistry
from api.fast import FastStatus
from api.live import Broadcaster, TooSlow, Watcher, serve_watcher
from api.mirror import StatusMirror
from api.settings import ApiSettings
from api.views import (
    BarrierList,
    BarrierView,
    CommandAccepted,
    CommandView,
    DependencyState,
    ErrorBody,
    EventPage,
    Health,
    InvalidCursor,
    Readiness,
    decode_cursor,
    encode_cursor,
    view_of_command,
    view_of_event,
    view_of_record,
    view_of_row,
)
from bridge.messages import Command, command_key, encode_command
from store import (
    BarrierRow,
    BarrierStore,
    CacheUnavailable,
    EventFilter,
    KeyClaim,
    NewCommand,
    StatusCache,
    StoreUnavailable,
)
from store.kafka import AsyncProducer, DeliveryUnknown, KafkaUnavailable
from store.types import (
    BarrierStatus,
    CommandKind,
    CommandState,
    EventType,
    PendingCommand,
    StatusRecord,
    present,
)

log = logging.getLogger(__name__)

OPEN_PATHS = [
    r"^/health$",
    r"^/metrics$",
    r"^/schema(?:/|$)",
    r"^/$",
    r"^/[\w-]+\.(?:html|css|js)$",
]
"""Paths served without a token: the dashboard's files too (the page asks for the token)."""

DASHBOARD = Path(__file__).parent / "static"
"""The dashboard's static files, served at ``/``."""

DIRECTORY_TTL = 5.0
"""Seconds the list of barriers is reused before it is read from PostgreSQL again."""

MAX_IDEMPOTENCY_KEY = 200

KEY_EXPIRY_INTERVAL = 3600.0
"""Most seconds between two deletions of expired Idempotency-Keys."""


class ApiError(HTTPException):
    """An error answered as JSON with a stable code."""

    def __init__(self, status_code: int, error: str, message: str) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.error = error


class Adapters:
    """The process's connections, opened at start-up."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.tokens = TokenRegistry.parse(settings.tokens)
        self.store: BarrierStore | None = None
        self.cache = StatusCache(settings.redis_url, namespace=settings.cache_namespace)
        self.producer: AsyncProducer | None = None
        self.mirror = StatusMirror()
        self.broadcaster = Broadcaster(self.cache, settings.stale_after, self.mirror)
        self._directory: dict[int, BarrierRow] = {}
        self._directory_read = -DIRECTORY_TTL
        self._housekeeping: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the pool, the producer and the one Redis subscription."""
        self.store = await BarrierStore.open(self.settings.database_url, acquire_timeout=2.0)
        # Safe beside the bridge doing the same: a fresh install answers no 500 while it starts.
        await self.store.migrate()
        self.producer = AsyncProducer(
            self.settings.kafka_bootstrap, timeout=self.settings.produce_timeout
        )
        self.broadcaster.start()
        self._housekeeping = asyncio.create_task(self._forget_old_keys(), name="key expiry")

    async def close(self) -> None:
        """Close everything opened."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await self.broadcaster.stop()
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close, 1.0)
        await self.cache.close()
        if self.store is not None:
            await self.store.close()

    async def _forget_old_keys(self) -> None:
        """Delete Idempotency-Keys past their retention, at start and then now and again."""
        retention = self.settings.idempotency_retention
        while True:
            try:
                forgotten = await self.db().forget_idempotency_keys(retention)
            except StoreUnavailable as exc:
                log.warning("old Idempotency-Keys not deleted: %s", exc)
            else:
                if forgotten:
                    log.info("deleted %d Idempotency-Keys older than %g s", forgotten, retention)
            await asyncio.sleep(min(retention / 4, KEY_EXPIRY_INTERVAL))

    async def status_record(self, barrier_id: int) -> StatusRecord | None:
        """Barrier `barrier_id`'s cached record (raise CacheUnavailable if Redis is down)."""
        return await self.mirror.get(barrier_id, self.cache.get)

    def db(self) -> BarrierStore:
        """The store (open once started)."""
        assert self.store is not None
        return self.store

    async def directory(self) -> dict[int, BarrierRow]:
        """The active barriers by id, re-read from PostgreSQL every few seconds."""
        now = time.monotonic()
        if now - self._directory_read >= DIRECTORY_TTL or not self._directory:
            try:
                rows = await self.db().barrier_rows()
            except StoreUnavailable:
                if not self._directory:
                    raise
                return self._directory  # serve the last known list while PostgreSQL is away
            self._directory = {row.id: row for row in rows if row.active}
            self._directory_read = now
        return self._directory

    async def barrier(self, barrier_id: int) -> BarrierRow:
        """The barrier `barrier_id`, or a 404."""
        try:
            directory = await self.directory()
        except StoreUnavailable:
            raise ApiError(503, "database_unavailable", DATABASE_DOWN) from None
        row = directory.get(barrier_id)
        if row is None:
            raise ApiError(
                404,
                "unknown_barrier",
                f"There is no barrier {barrier_id}; GET /barriers lists them.",
            )
        return row


DATABASE_DOWN = "The database is unreachable; try again shortly."
BROKER_DOWN = "The command broker did not acknowledge the command; nothing was sent. Try again."
BROKER_UNKNOWN = (
    "The command broker did not answer in time; the command may still arrive. "
    "Check its outcome before sending it again."
)


def adapters_of(state: State) -> Adapters:
    """The adapters stored on the application state."""
    adapters: Adapters = state.adapters
    return adapters


async def provide_adapters(state: State) -> Adapters:
    """Dependency: the process's adapters."""
    return adapters_of(state)


class TokenAuth(AbstractAuthenticationMiddleware):
    """Bearer token from the Authorization header (or ``?token=`` on the WebSocket)."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """Return the caller, or raise 401."""
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = (
                connection.query_params.get("token", "")
                if connection.scope["type"] == ScopeType.WEBSOCKET
                else ""
            )
        if not token:
            raise NotAuthorizedException(
                "A bearer token is required: send 'Authorization: Bearer <token>'."
            )
        principal = adapters_of(connection.app.state).tokens.authenticate(token.strip())
        if principal is None:
            raise NotAuthorizedException("The bearer token is not valid.")
        return AuthenticationResult(user=principal, auth=principal.name)


def limit_body(max_bytes: int) -> Any:
    """Middleware refusing requests that announce a body over `max_bytes` (413), read or not."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP:
                for name, value in scope["headers"]:
                    if name == b"content-length" and (
                        not value.isdigit() or int(value) > max_bytes
                    ):
                        raise ClientException(
                            status_code=413,
                            detail=f"Request bodies may be at most {max_bytes} bytes.",
                        )
            await app(scope, receive, send)

        return middleware

    return factory


def requires(role: Role) -> Any:
    """A guard that lets through callers with `role` or a higher one."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        if principal.role < role:
            raise PermissionDeniedException(
                f"Your token's role ({principal.role.name.lower()}) may not do this; "
                f"it needs {role.name.lower()}."
            )

    return guard


class BarrierController(Controller):
    """Barriers: commands and statuses."""

    path = "/barriers"
    dependencies = {"adapters": Provide(provide_adapters)}

    @post("/{barrier_id:int}/open", status_code=HTTP_202_ACCEPTED, guards=[requires(Role.OPERATOR)])
    async def open_barrier(
        self,
        request: Request[Principal, str, State],
        adapters: NamedDependency[Adapters],
        barrier_id: FromPath[int],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> CommandAccepted:
        """Open a barrier: the command goes to the bridge at once (202); watch it over /ws."""
        return await submit(adapters, request.user, barrier_id, CommandKind.OPEN, idempotency_key)

    @post(
        "/{barrier_id:int}/close", status_code=HTTP_202_ACCEPTED, guards=[requires(Role.OPERATOR)]
    )
    async def close_barrier(
        self,
        request: Request[Principal, str, State],
        adapters: NamedDependency[Adapters],
        barrier_id: FromPath[int],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> CommandAccepted:
        """Close a barrier (refused by the PLC while a vehicle is in its path)."""
        return await submit(adapters, request.user, barrier_id, CommandKind.CLOSE, idempotency_key)

    @get("/{barrier_id:int}/status", guards=[requires(Role.VIEWER)])
    async def status(
        self, adapters: NamedDependency[Adapters], barrier_id: FromPath[int]
    ) -> BarrierView:
        """A barrier's current status, with its quality and the age of its last good read."""
        row = await adapters.barrier(barrier_id)
        now = time.time()
        try:
            record = await adapters.status_record(barrier_id)
        except CacheUnavailable:
            record = None
        if record is not None:
            return view_of_record(record, now, adapters.settings.stale_after)
        return view_of_row(row, now)

    @get("/", guards=[requires(Role.VIEWER)])
    async def list_barriers(self, adapters: NamedDependency[Adapters]) -> BarrierList:
        """Every barrier with its status."""
        try:
            directory = await adapters.directory()
        except StoreUnavailable:
            raise ApiError(503, "database_unavailable", DATABASE_DOWN) from None
        now = time.time()
        try:
            cached = {r.barrier_id: r for r in await adapters.cache.get_many(directory)}
        except CacheUnavailable:
            cached = {}
        views = [
            view_of_record(cached[bid], now, adapters.settings.stale_after)
            if bid in cached
            else view_of_row(row, now)
            for bid, row in sorted(directory.items())
        ]
        return BarrierList(views)

    @get("/events", guards=[requires(Role.VIEWER)])
    async def events(
        self,
        adapters: NamedDependency[Adapters],
        barrier_id: Annotated[int | None, QueryParameter(ge=1, le=2**31 - 1)] = None,
        event_type: FromQuery[EventType | None] = None,
        command_id: FromQuery[uuid.UUID | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
    ) -> EventPage:
        """The event history, newest first, by pages: filters by barrier, type, command, time."""
        if limit > adapters.settings.events_page_max:
            raise ApiError(
                400, "page_too_large", f"limit may be at most {adapters.settings.events_page_max}."
            )
        after = None
        if cursor is not None:
            try:
                after = decode_cursor(cursor)
            except InvalidCursor:
                raise ApiError(
                    400,
                    "invalid_cursor",
                    "The cursor is not one this API handed out; start without it.",
                ) from None
        where = EventFilter(
            barrier_id=barrier_id,
            event_type=event_type.value if event_type is not None else None,
            command_id=str(command_id) if command_id is not None else None,
            since=since,
            until=until,
            after=after,
        )
        try:
            rows = await adapters.db().events(where, limit + 1)
        except StoreUnavailable:
            raise ApiError(503, "database_unavailable", DATABASE_DOWN) from None
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
        return EventPage([view_of_event(r) for r in page], next_cursor)


@get(
    "/commands/{command_id:uuid}",
    guards=[requires(Role.VIEWER)],
    dependencies={"adapters": Provide(provide_adapters)},
)
async def get_command(
    adapters: NamedDependency[Adapters], command_id: FromPath[uuid.UUID]
) -> CommandView:
    """One command's lifecycle and outcome, with its events."""
    try:
        record = await adapters.db().get_command(str(command_id))
        if record is None:
            raise ApiError(404, "unknown_command", f"There is no command {command_id}.")
        events = await adapters.db().events(EventFilter(command_id=str(command_id)), 1000)
    except StoreUnavailable:
        raise ApiError(503, "database_unavailable", DATABASE_DOWN) from None
    return view_of_command(record, list(reversed(events)))


async def submit(
    adapters: NamedDependency[Adapters],
    principal: Principal,
    barrier_id: int,
    kind: CommandKind,
    idempotency_key: str | None,
) -> CommandAccepted:
    """Send a command to the bridge through Kafka and answer once the broker has it."""
    await adapters.barrier(barrier_id)
    request = f"{kind.value} {barrier_id}"
    claim: KeyClaim | None = None
    if idempotency_key is not None:
        held = await claim_key(adapters, principal, idempotency_key, request)
        if isinstance(held, CommandAccepted):
            return held
        claim = held
    command = Command(
        command_id=str(uuid.uuid4()),
        barrier_id=barrier_id,
        kind=kind,
        actor=principal.name,
        requested_at=time.time(),
        source="api",
    )
    assert adapters.producer is not None
    try:
        await adapters.producer.send(
            adapters.settings.commands_topic, encode_command(command), key=command_key(barrier_id)
        )
    except DeliveryUnknown:
        # Whether the command went is unknown: keep the key claimed (a retry is told the
        # request is in progress until its lease ends) rather than risk sending it twice.
        log.error("no delivery report for %s within the deadline", command.command_id)
        raise ApiError(503, "broker_unavailable", BROKER_UNKNOWN) from None
    except KafkaUnavailable:
        # The producer gave up on it: abandoned, never delivered later.
        if claim is not None:
            with contextlib.suppress(StoreUnavailable):
                await adapters.db().release_idempotency_key(claim)
        raise ApiError(503, "broker_unavailable", BROKER_DOWN) from None
    metrics.commands_accepted.labels(kind.value).inc()
    await record_acceptance(adapters, command)
    moving = BarrierStatus.OPENING if kind is CommandKind.OPEN else BarrierStatus.CLOSING
    answer = CommandAccepted(
        barrier_id=barrier_id,
        command_id=command.command_id,
        status=moving,
        message=f"Barrier {barrier_id} is {moving.value}; "
        f"follow it on /ws or GET /barriers/{barrier_id}/status.",
    )
    if claim is not None:
        with contextlib.suppress(StoreUnavailable):
            await adapters.db().complete_idempotency_key(
                claim, HTTP_202_ACCEPTED, msgspec.to_builtins(answer)
            )
    return answer


async def claim_key(
    adapters: Adapters, principal: Principal, key: str, request: str
) -> KeyClaim | CommandAccepted:
    """Claim `key` for `request`, or return the answer already given to it.

    A key used for another request, or held by a request still being handled, is an error.
    """
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters.",
        )
    settings = adapters.settings
    try:
        held = await adapters.db().claim_idempotency_key(
            principal.name,
            key,
            request,
            lease=settings.idempotency_lease,
            retention=settings.idempotency_retention,
        )
    except StoreUnavailable:
        raise ApiError(503, "database_unavailable", DATABASE_DOWN) from None
    if isinstance(held, KeyClaim):
        return held
    if held.request != request:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"This Idempotency-Key was used for '{held.request}'; "
            "use a new key for a different request.",
        )
    if held.response is None:
        raise ApiError(
            409,
            "request_in_progress",
            "A request with this Idempotency-Key is still being handled; retry in a moment.",
        )
    return msgspec.convert(held.response, CommandAccepted)


async def record_acceptance(adapters: NamedDependency[Adapters], command: Command) -> None:
    """Record the acceptance and show the barrier moving; the bridge takes it from there.

    Best effort: the command is already with the broker, and the bridge records it in any case.
    """
    now = time.time()
    try:
        await adapters.db().start_command(
            NewCommand(
                command_id=command.command_id,
                barrier_id=command.barrier_id,
                kind=command.kind,
                actor=command.actor,
                requested_at=command.requested_at,
                accepted_at=now,
                source="api",
            )
        )
    except StoreUnavailable as exc:
        log.warning("acceptance of %s not recorded: %s", command.command_id, exc)
    pending = PendingCommand(command.command_id, command.kind, command.actor, CommandState.ACCEPTED)

    def show_pending(record: StatusRecord) -> StatusRecord:
        return present(msgspec.structs.replace(record, pending=pending, updated_at=now))

    try:
        # Only if the bridge has not written meanwhile: its record may already be newer.
        shown = await adapters.cache.amend(command.barrier_id, show_pending)
        if shown is not None:
            adapters.mirror.published(shown)  # this process's next GET shows it already
    except CacheUnavailable as exc:
        log.warning("cache not updated for %s: %s", command.command_id, exc)


@get("/health")
async def health() -> Health:
    """Liveness: the process answers (no dependency is checked)."""
    return Health()


@get("/ready", guards=[requires(Role.VIEWER)], dependencies={"adapters": Provide(provide_adapters)})
async def ready(adapters: NamedDependency[Adapters]) -> Response[Readiness]:
    """Readiness: whether PostgreSQL, Redis and the broker answer; 503 unless all do."""
    states: dict[str, DependencyState] = {}

    async def check(name: str, probe: Any) -> None:
        try:
            async with asyncio.timeout(2.0):
                await probe()
        except Exception:
            log.warning("dependency %s is down", name, exc_info=True)
            states[name] = DependencyState.DOWN
        else:
            states[name] = DependencyState.UP

    assert adapters.producer is not None
    await asyncio.gather(
        check("postgres", adapters.db().barrier_rows),
        check("redis", adapters.cache.has_sentinel),
        check("kafka", adapters.producer.ping),
    )
    is_ready = all(state is DependencyState.UP for state in states.values())
    body = Readiness(ready=is_ready, dependencies=dict(sorted(states.items())))
    return Response(body, status_code=200 if is_ready else 503)


@websocket(
    "/ws", guards=[requires(Role.VIEWER)], dependencies={"adapters": Provide(provide_adapters)}
)
async def live(
    socket: WebSocket[Principal, str, State], adapters: NamedDependency[Adapters]
) -> None:
    """Live status: a snapshot on connect, then every change; ``?barriers=1,2`` filters.

    Authenticate with ``Authorization: Bearer`` or ``?token=``. Messages are JSON with a
    ``type`` of ``snapshot``, ``status`` or ``ping``.
    """
    raw = socket.query_params.get("barriers")
    try:
        wanted = frozenset(int(part) for part in raw.split(",") if part.strip()) if raw else None
    except ValueError:
        await socket.close(code=1008, reason="barriers must be comma-separated barrier ids")
        return
    await socket.accept()
    watcher = Watcher(wanted, adapters.settings.ws_queue)
    adapters.broadcaster.watchers.add(watcher)
    metrics.websocket_clients.inc()

    async def snapshot() -> list[StatusRecord]:
        try:
            return await adapters.cache.get_all()
        except CacheUnavailable:
            return []

    serving = asyncio.create_task(
        serve_watcher(
            watcher,
            socket.send_text,
            snapshot,
            stale_after=adapters.settings.stale_after,
            ping_interval=adapters.settings.ws_ping_interval,
            send_timeout=adapters.settings.ws_send_timeout,
        )
    )
    listening = asyncio.create_task(_drain(socket))
    try:
        done, _ = await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        if serving in done and isinstance(serving.exception(), TooSlow):
            # Best effort: a client that reads nothing may not take the close frame either.
            with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError):
                async with asyncio.timeout(1.0):
                    await socket.close(code=1013, reason="too slow: reconnect for a fresh snapshot")
    finally:
        for task in (serving, listening):
            task.cancel()
        await asyncio.gather(serving, listening, return_exceptions=True)
        adapters.broadcaster.watchers.discard(watcher)
        metrics.websocket_clients.dec()
        metrics.websocket_resyncs.inc(watcher.resyncs)


async def _drain(socket: WebSocket[Any, Any, Any]) -> None:
    """Read and ignore what the client sends, until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.receive_data("text")


def _error_response(status_code: int, error: str, message: str) -> Response[ErrorBody]:
    return Response(ErrorBody(error=error, message=message), status_code=status_code)


HTTP_ERRORS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "too_many_requests",
}


def handle_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    """Any HTTP error as JSON with a stable code."""
    if isinstance(exc, ApiError):
        return _error_response(exc.status_code, exc.error, exc.detail)
    if isinstance(exc, ValidationException):
        details = "; ".join(
            f"{e.get('key', '?')}: {e.get('message', '')}"
            for e in (exc.extra or [])
            if isinstance(e, dict)
        )
        return _error_response(
            400, "invalid_request", f"The request is not valid: {details or exc.detail}."
        )
    code = HTTP_ERRORS.get(exc.status_code, "error" if exc.status_code < 500 else "internal_error")
    return _error_response(exc.status_code, code, str(exc.detail))


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """A bug or a dependency failing in an unforeseen way: 500 as JSON, details in the log."""
    if isinstance(exc, StoreUnavailable):
        return _error_response(503, "database_unavailable", DATABASE_DOWN)
    log.exception("unhandled error", exc_info=exc)
    return _error_response(
        500, "internal_error", "Something went wrong on our side; it was logged."
    )


def create_app(settings: ApiSettings) -> ASGIApp:
    """Build the application for `settings`; connections open on start-up.

    Litestar serves every route; `FastStatus` answers the hot ``GET /barriers/{id}/status``
    ahead of it when it can, and `RequestMetrics` times both.
    """
    adapters = Adapters(settings)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await adapters.open()
        try:
            yield
        finally:
            await adapters.close()

    app = Litestar(
        route_handlers=[
            BarrierController,
            get_command,
            health,
            ready,
            live,
            PrometheusController,
            create_static_files_router(
                path="/",
                directories=[DASHBOARD],
                html_mode=True,
                cache_control=CacheControlHeader(no_cache=True),  # revalidate: no stale page
            ),
        ],
        state=State({"adapters": adapters}),
        lifespan=[lifespan],
        middleware=[
            limit_body(settings.max_body_bytes),
            DefineMiddleware(TokenAuth, exclude=OPEN_PATHS),
        ],
        exception_handlers={HTTPException: handle_http_error, Exception: handle_unexpected},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Barrier bridge API",
            version="0.1.0",
            path="/schema",
            description="Open and close barriers, read their status and history, watch them live.",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}],
        ),
    )
    return metrics.RequestMetrics(FastStatus(app, adapters))
