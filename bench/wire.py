"""Lean HTTP/1.1 and WebSocket clients for load generation, on bare asyncio.

A general client (httpx, websockets) spends a millisecond or so of Python per request or frame;
at a hundred POSTs a second, or a thousand WebSocket clients, the bench would then measure itself.
These speak just enough of each protocol for the bench, against our own API on loopback: requests
without bodies on keep-alive connections, and text frames received unfragmented and unmasked, as
servers send them. They are not general clients.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import time
from collections.abc import Mapping

from stack.services import LOOPBACK


class WireError(RuntimeError):
    """The server answered something these clients do not speak."""


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read a status line and headers; return the status code and the headers (lower-case)."""
    status_line = await reader.readline()
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.1"):
        raise WireError(f"not an HTTP/1.1 answer: {status_line!r}")
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _request_head(method: str, path: str, port: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpPool:
    """Keep-alive HTTP/1.1 connections, one request at a time each; ``async with`` closes them."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.size = size
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._all: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HttpPool:
        for _ in range(self.size):
            reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
            self._all.append(writer)
            self._idle.put_nowait((reader, writer))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._all:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(
        self, method: str, path: str, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """Send a request without a body; return the status and the body of the answer."""
        reader, writer = await self._idle.get()
        try:
            writer.write(_request_head(method, path, self.port, {**headers, "Content-Length": "0"}))
            status, answer = await _read_head(reader)
            body = await reader.readexactly(int(answer.get("content-length", "0")))
        except BaseException:
            writer.close()  # its state is unknown: replace it
            reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
            self._all.append(writer)
            raise
        finally:
            self._idle.put_nowait((reader, writer))
        return status, body


class FrameReader(asyncio.Protocol):
    """A WebSocket client connection: the opening handshake, then the server's frames.

    Every data frame is stamped with the time its last byte arrived; pings are answered.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.frames: list[tuple[float, bytes]] = []
        """(time.time() on arrival, payload) of every data frame."""
        self.opened: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        """The status of the handshake's answer (101 when open)."""
        self.first = asyncio.Event()
        """Set when the first frame (the snapshot) has arrived."""
        self.transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the opening handshake."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        """Take the handshake's answer, then split the bytes into frames."""
        now = time.time()
        buffer = self._buffer + data
        if not self.opened.done():
            head, found, buffer = buffer.partition(b"\r\n\r\n")
            if not found:
                self._buffer = head
                return
            status = head.split(b" ", 2)[1]
            self.opened.set_result(int(status) if status.isdigit() else 0)
        while len(buffer) >= 2:
            length, start = buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, 2)
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, 2)
                start = 10
            if len(buffer) < start + length:
                break
            opcode, payload = buffer[0] & 0x0F, buffer[start : start + length]
            if opcode in (0x1, 0x2):
                self.frames.append((now, payload))
                self.first.set()
            elif opcode == 0x9 and self.transport is not None and length < 126:
                # Pong, masked as client frames must be (a zero mask leaves the payload as is).
                self.transport.write(bytes([0x8A, 0x80 | length]) + b"\0\0\0\0" + payload)
            buffer = buffer[start + length :]
        self._buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail a handshake still waiting."""
        if not self.opened.done():
            self.opened.set_exception(WireError("closed during the WebSocket handshake"))

    def close(self) -> None:
        """Drop the connection."""
        if self.transport is not None:
            self.transport.close()


async def open_websocket(port: int, path: str) -> FrameReader:
    """Open a WebSocket to `path` on our API on loopback `port`."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = _request_head(
        "GET",
        path,
        port,
        {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        },
    )
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(lambda: FrameReader(request), LOOPBACK, port)
    status = await connection.opened
    if status != 101:
        connection.close()
        raise WireError(f"WebSocket {path} refused with {status}")
    return connection
