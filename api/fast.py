"""The hot read path, ``GET /barriers/{id}/status``, answered ahead of the framework.

Monitors ask for a barrier's status many times a second. Litestar's per-request machinery
(routing, dependency injection, parameter parsing, guards, response building) costs several times
the work of the answer itself, so `FastStatus` answers the common case straight from the
adapters: a valid bearer token of any role, a known barrier, a record in the cache. The body is
the routed handler's, built by the same `view_of_record`. Everything else (no or a bad token, an
unknown barrier, no cached record, a dependency down, any other request) goes on to the framework,
which answers it exactly as before, errors included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from api.auth import Role
from api.views import view_of_record
from store.cache import CacheUnavailable
from store.postgres import StoreUnavailable

if TYPE_CHECKING:
    from api.app import Adapters

STATUS_PATH = re.compile(r"/barriers/([1-9][0-9]{0,8})/status")
"""The status path with a barrier id in canonical form; any other spelling is the framework's."""

STATUS_TEMPLATE = "/barriers/{barrier_id}/status"
"""The route's template, as the framework names it in metrics."""

_HEADERS = [(b"content-type", b"application/json")]
_encoder = msgspec.json.Encoder()


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class FastStatus:
    """ASGI wrapper answering ``GET /barriers/{id}/status`` when it can, else passing it on."""

    def __init__(self, app: ASGIApp, adapters: Adapters) -> None:
        self.app = app
        self.adapters = adapters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request, or hand it to the framework."""
        if scope["type"] == ScopeType.HTTP and scope["method"] == "GET":
            match = STATUS_PATH.fullmatch(scope["path"])
            body = None if match is None else await self._answer(scope, int(match.group(1)))
            if body is not None:
                scope["path_template"] = STATUS_TEMPLATE
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())],
                }
                await send(start)
                end: HTTPResponseBodyEvent = {
                    "type": "http.response.body",
                    "body": body,
                    "more_body": False,
                }
                await send(end)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, barrier_id: int) -> bytes | None:
        """The 200 body for `barrier_id`, or None to let the framework answer."""
        adapters = self.adapters
        token = bearer_token(scope["headers"])
        principal = None if token is None else adapters.tokens.authenticate(token)
        if principal is None or principal.role < Role.VIEWER:
            return None
        try:
            if barrier_id not in await adapters.directory():
                return None
            record = await adapters.status_record(barrier_id)
        except (StoreUnavailable, CacheUnavailable):
            return None
        if record is None:
            return None
        view = view_of_record(record, time.time(), adapters.settings.stale_after)
        return _encoder.encode(view)
