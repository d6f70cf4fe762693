"""The API's own Prometheus metrics (request latency by route comes from Litestar's plugin)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
