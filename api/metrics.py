"""The API's Prometheus metrics: request latency by route, commands, WebSocket clients."""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

commands_accepted = Counter(
    "barrier_api_commands_accepted_total",
    "Commands the API handed to the broker, by kind.",
    ["kind"],
)
websocket_clients = Gauge(
    "barrier_api_websocket_clients",
    "WebSocket clients connected now.",
)
websocket_resyncs = Counter(
    "barrier_api_websocket_resyncs_total",
    "Snapshots resent to WebSocket clients that fell behind.",
)


REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

request_seconds = Histogram(
    "barrier_api_request_duration_seconds",
    "HTTP requests by method, route template and status code, and how long they took.",
    ["method", "path", "status_code"],
    buckets=REQUEST_BUCKETS,
)


class RequestMetrics:
    """ASGI wrapper timing every HTTP request by its route's template (not its raw path).

    The route template is what routing put in the scope (``path_template``); a request no route
    matched counts as ``unmatched``, so a scan of random paths cannot blow up the label set.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then observe its duration."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            request_seconds.labels(
                scope["method"], scope.get("path_template", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)
