"""A small HTTP/1.1 JSON interface to drive a running `Simulator` from outside the process.

Routes (one request per connection; every answer is JSON):

- ``GET /barriers``: every barrier's reading and injected fault.
- ``GET /endpoints``: every endpoint's link faults and request counts.
- ``GET /writes?after=<seq>``: ``{"writes": [...]}``, the request-coil writes with a ``seq`` above
  ``after`` (0, the default, for all those remembered), oldest first, each with when it reached
  the PLC and when the barrier rests as a result (wall-clock seconds).
- ``POST /barriers/{id}/fault`` ``{"fault": "stuck"}``, or ``{"fault": null}`` to clear it.
- ``POST /barriers/{id}/occupied`` ``{"occupied": true}``.
- ``POST /barriers/{id}/local`` ``{"command": "open"}``: the cabinet's push button.
- ``POST /endpoints/{name}/link`` ``{"mode": "silent"}``: up, silent, closed or frozen.
- ``POST /endpoints/{name}/delay`` ``{"seconds": 0.5}``.
- ``POST /endpoints/{name}/exception`` ``{"code": 4}``, or ``{"code": null}`` to stop.

A POST answers with the new status of what it changed. An error answers
``{"error": <stable code>, "message": <what went wrong and what to do>}``.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from enum import StrEnum
from http import HTTPStatus
from types import TracebackType
from typing import Annotated, Self, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
from pymodbus.constants import ExcCodes

from plc.registers import BarrierConfig, PlcEndpoint
from simulator.physics import Command, Fault
from simulator.server import CoilWrite, LinkMode, PlcListenError
from simulator.simulation import Simulator

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
"""Largest request body accepted, in bytes."""

MAX_HEADERS = 100
"""Most header lines accepted in one request."""

REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send its whole request."""


class ErrorCode(StrEnum):
    """The stable `error` code of an error answer."""

    BAD_REQUEST = "bad_request"
    INVALID_QUERY = "invalid_query"
    INVALID_JSON = "invalid_json"
    INVALID_BODY = "invalid_body"
    BODY_TOO_LARGE = "body_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNKNOWN_BARRIER = "unknown_barrier"
    UNKNOWN_ENDPOINT = "unknown_endpoint"
    LISTEN_FAILED = "listen_failed"
    INTERNAL_ERROR = "internal_error"


class ErrorBody(msgspec.Struct, frozen=True):
    """The JSON answer to a request that failed."""

    error: ErrorCode
    message: str


class ControlError(Exception):
    """A request the control interface refuses, with the answer to give."""

    def __init__(self, status: HTTPStatus, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(error=code, message=message)


class BarrierStatus(msgspec.Struct, frozen=True):
    """One barrier as the control interface shows it."""

    id: int
    name: str
    endpoint: str
    state: str
    fault: str
    position: int
    heartbeat: int
    occupied: bool
    injected_fault: Fault | None


class EndpointStatus(msgspec.Struct, frozen=True):
    """One endpoint as the control interface shows it."""

    name: str
    host: str
    port: int
    unit_id: int
    link: LinkMode
    reply_delay: float
    exception_reply: int | None
    request_counts: dict[int, int]


class CoilWrites(msgspec.Struct, frozen=True):
    """Answer to ``GET /writes``."""

    writes: list[CoilWrite]


class FaultChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /barriers/{id}/fault``."""

    fault: Fault | None


class OccupancyChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /barriers/{id}/occupied``."""

    occupied: bool


class LocalCommand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /barriers/{id}/local``."""

    command: Command


class LinkChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /endpoints/{name}/link``."""

    mode: LinkMode


class DelayChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /endpoints/{name}/delay``."""

    seconds: Annotated[float, msgspec.Meta(ge=0)]


class ExceptionChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /endpoints/{name}/exception``."""

    code: ExcCodes | None


class HttpRequest(msgspec.Struct, frozen=True):
    """The parts of an HTTP request the control interface uses."""

    method: str
    path: tuple[str, ...]
    """The path's segments, percent-decoded."""
    query: dict[str, list[str]]
    """The query string's parameters, each with every value given."""
    body: bytes


_Body = TypeVar("_Body")


def _decode(body: bytes, kind: type[_Body]) -> _Body:
    """Decode a JSON request body as `kind`, or raise the ControlError to answer."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ControlError(
            HTTPStatus.BAD_REQUEST, ErrorCode.INVALID_BODY, f"The body does not fit: {exc}."
        ) from None
    except msgspec.DecodeError:
        raise ControlError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.INVALID_JSON,
            "The body is not JSON; send a JSON object.",
        ) from None


_ACTIONS: dict[str, frozenset[str]] = {
    "barriers": frozenset({"fault", "occupied", "local"}),
    "endpoints": frozenset({"link", "delay", "exception"}),
    "writes": frozenset(),
}
"""The POST actions on each member of each collection."""


def _is_route(path: tuple[str, ...]) -> bool:
    """Return whether `path` names a route, whatever the method."""
    match path:
        case (collection,):
            return collection in _ACTIONS
        case (collection, _, action):
            return action in _ACTIONS.get(collection, frozenset())
    return False


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """Read one request; return None if the client closed without sending one."""
    try:
        request_line = await reader.readline()
        if not request_line:
            return None
        method, target, version = request_line.decode("latin-1").split()
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ValueError("too many headers")
        length = int(headers.get("content-length", "0"))
    except ValueError:  # also what readline raises for an overlong line
        raise ControlError(
            HTTPStatus.BAD_REQUEST, ErrorCode.BAD_REQUEST, "That is not an HTTP/1.1 request."
        ) from None
    if "transfer-encoding" in headers or length < 0:
        raise ControlError(
            HTTPStatus.BAD_REQUEST, ErrorCode.BAD_REQUEST, "Send the body with a Content-Length."
        )
    if length > MAX_BODY:
        raise ControlError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            ErrorCode.BODY_TOO_LARGE,
            f"The body is over {MAX_BODY} bytes; send a small JSON object.",
        )
    body = await reader.readexactly(length)
    url = urlsplit(target)
    path = tuple(unquote(s) for s in url.path.strip("/").split("/"))
    query = parse_qs(url.query, keep_blank_values=True)
    return HttpRequest(method=method.upper(), path=path, query=query, body=body)


def _after(query: dict[str, list[str]]) -> int:
    """Return the ``after`` parameter of ``GET /writes``, 0 if absent; raise ControlError if bad."""
    match query.get("after", ["0"]):
        case [value] if value.isascii() and value.isdigit():
            return int(value)
    raise ControlError(
        HTTPStatus.BAD_REQUEST,
        ErrorCode.INVALID_QUERY,
        "after must be one whole number, the last seq seen; send ?after=0 for every write.",
    )


def _http_response(status: HTTPStatus, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ControlServer:
    """Serves the control interface of a `Simulator`; use as ``async with``."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 8502) -> None:
        self._simulator = simulator
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """The interface's base URL, with the port actually bound once started."""
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        """Start listening; port 0 picks a free port."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                answer = await self._answer(reader)
            if answer is not None:
                writer.write(_http_response(*answer))
                await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled: nobody to answer
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[HTTPStatus, bytes] | None:
        try:
            request = await _read_request(reader)
            if request is None:
                return None
            return HTTPStatus.OK, msgspec.json.encode(await self._route(request))
        except ControlError as error:
            return error.status, msgspec.json.encode(error.body)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            raise
        except Exception:
            log.exception("control request failed")
            body = ErrorBody(
                ErrorCode.INTERNAL_ERROR, "The simulator failed to handle that; see its log."
            )
            return HTTPStatus.INTERNAL_SERVER_ERROR, msgspec.json.encode(body)

    async def _route(self, request: HttpRequest) -> object:
        """Carry out `request` and return what to answer."""
        sim = self._simulator
        match request.method, request.path:
            case "GET", ("barriers",):
                return [self._barrier_status(b) for b in sim.register_map.barriers]
            case "GET", ("endpoints",):
                return [self._endpoint_status(e) for e in sim.register_map.endpoints]
            case "GET", ("writes",):
                return CoilWrites(writes=sim.coil_writes(_after(request.query)))
            case "POST", ("barriers", barrier_id, "fault"):
                barrier = self._barrier(barrier_id)
                fault = _decode(request.body, FaultChange).fault
                if fault is None:
                    sim.clear_fault(barrier.id)
                else:
                    sim.inject_fault(barrier.id, fault)
                return self._barrier_status(barrier)
            case "POST", ("barriers", barrier_id, "occupied"):
                barrier = self._barrier(barrier_id)
                sim.set_occupied(barrier.id, _decode(request.body, OccupancyChange).occupied)
                return self._barrier_status(barrier)
            case "POST", ("barriers", barrier_id, "local"):
                barrier = self._barrier(barrier_id)
                sim.local_command(barrier.id, _decode(request.body, LocalCommand).command)
                return self._barrier_status(barrier)
            case "POST", ("endpoints", name, "link"):
                endpoint = self._endpoint(name)
                mode = _decode(request.body, LinkChange).mode
                try:
                    await sim.set_link_async(endpoint.name, mode)
                except PlcListenError as exc:
                    raise ControlError(
                        HTTPStatus.SERVICE_UNAVAILABLE, ErrorCode.LISTEN_FAILED, str(exc)
                    ) from None
                return self._endpoint_status(endpoint)
            case "POST", ("endpoints", name, "delay"):
                endpoint = self._endpoint(name)
                sim.set_reply_delay(endpoint.name, _decode(request.body, DelayChange).seconds)
                return self._endpoint_status(endpoint)
            case "POST", ("endpoints", name, "exception"):
                endpoint = self._endpoint(name)
                sim.set_exception_reply(endpoint.name, _decode(request.body, ExceptionChange).code)
                return self._endpoint_status(endpoint)
            case _, path if _is_route(path):
                raise ControlError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    ErrorCode.METHOD_NOT_ALLOWED,
                    f"{request.method} is not allowed there; lists take GET, changes take POST.",
                )
        raise ControlError(
            HTTPStatus.NOT_FOUND,
            ErrorCode.NOT_FOUND,
            "No such route; try GET /barriers or GET /endpoints.",
        )

    def _barrier(self, barrier_id: str) -> BarrierConfig:
        with suppress(ValueError, KeyError):
            return self._simulator.register_map.barrier(int(barrier_id))
        raise ControlError(
            HTTPStatus.NOT_FOUND,
            ErrorCode.UNKNOWN_BARRIER,
            f"There is no barrier {barrier_id!r}; GET /barriers lists them.",
        )

    def _endpoint(self, name: str) -> PlcEndpoint:
        with suppress(KeyError):
            return self._simulator.register_map.endpoint(name)
        raise ControlError(
            HTTPStatus.NOT_FOUND,
            ErrorCode.UNKNOWN_ENDPOINT,
            f"There is no endpoint {name!r}; GET /endpoints lists them.",
        )

    def _barrier_status(self, barrier: BarrierConfig) -> BarrierStatus:
        reading = self._simulator.reading(barrier.id)
        return BarrierStatus(
            id=barrier.id,
            name=barrier.name,
            endpoint=barrier.endpoint,
            state=reading.state.name.lower(),
            fault=reading.fault.name.lower(),
            position=reading.position,
            heartbeat=reading.heartbeat,
            occupied=reading.occupied,
            injected_fault=self._simulator.injected_fault(barrier.id),
        )

    def _endpoint_status(self, endpoint: PlcEndpoint) -> EndpointStatus:
        faults = self._simulator.link_faults(endpoint.name)
        return EndpointStatus(
            name=endpoint.name,
            host=endpoint.host,
            port=endpoint.port,
            unit_id=endpoint.unit_id,
            link=faults.mode,
            reply_delay=faults.reply_delay,
            exception_reply=faults.exception_reply,
            request_counts=self._simulator.request_counts(endpoint.name),
        )
