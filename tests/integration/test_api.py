"""The API over real HTTP and WebSocket, against a real broker, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
import websockets
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from api.views import BarrierView
from plc.quality import Quality
from plc.registers import uniform_register_map
from stack.services import KafkaBroker, free_port
from store import BarrierStore, EventFilter, KeyClaim, StatusCache
from store.types import (
    BarrierStatus,
    CommandKind,
    CommandState,
    EventType,
    PendingCommand,
    StatusRecord,
)
from tests.api_stack import RunningApi, api_settings, auth, serve_api
from tests.bridge_stack import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

BARRIERS = uniform_register_map([("127.0.0.1", 5020), ("127.0.0.1", 5021)], 4).barriers


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[BarrierStore]:
    async with await BarrierStore.open(db_url) as opened:
        await opened.migrate()
        await opened.sync_barriers(BARRIERS)
        yield opened


@pytest_asyncio.fixture
async def cache(redis_url: str, namespace: str) -> AsyncIterator[StatusCache]:
    async with StatusCache(redis_url, namespace=namespace) as opened:
        yield opened


@pytest_asyncio.fixture
async def api(
    store: BarrierStore, kafka_bootstrap: str, db_url: str, redis_url: str, namespace: str
) -> AsyncIterator[RunningApi]:
    async with serve_api(api_settings(kafka_bootstrap, db_url, redis_url, namespace)) as running:
        yield running


def record(
    barrier_id: int,
    status: BarrierStatus = BarrierStatus.CLOSED,
    *,
    read_at: float | None = None,
    **extra: object,
) -> StatusRecord:
    now = time.time()
    return StatusRecord(
        barrier_id=barrier_id,
        name=f"Barrier {barrier_id}",
        status=status,
        quality=Quality.GOOD,
        position=0 if status is BarrierStatus.CLOSED else 100,
        read_at=now if read_at is None else read_at,
        updated_at=now,
        **extra,  # type: ignore[arg-type]
    )


def read_commands(
    kafka: str, topic: str, count: int, within: float = 5.0
) -> list[tuple[bytes | None, dict[str, object]]]:
    """Read up to `count` records of `topic` from the start of every partition (no group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"r-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[tuple[bytes | None, dict[str, object]]] = []
    give_up = time.monotonic() + within
    try:
        while len(out) < count and time.monotonic() < give_up:
            msg = consumer.poll(0.1)
            value = None if msg is None or msg.error() else msg.value()
            if msg is not None and value is not None:
                out.append((msg.key(), msgspec.json.decode(value)))
    finally:
        consumer.close()
    return out


# -- commands -------------------------------------------------------------------------------


async def test_open_answers_202_and_sends_the_command(
    api: RunningApi, store: BarrierStore, cache: StatusCache, kafka_bootstrap: str
) -> None:
    await cache.put(record(3))
    response = await api.client.post("/barriers/3/open", headers=auth("operator"))
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"barrier_id", "command_id", "status", "message"}
    assert (body["barrier_id"], body["status"]) == (3, "opening")
    sent = await asyncio.to_thread(read_commands, kafka_bootstrap, api.settings.commands_topic, 1)
    key, value = sent[0]
    assert key == b"3"
    assert (value["barrier_id"], value["command"], value["command_id"], value["actor"]) == (
        "3",
        "open",
        body["command_id"],
        "operator",
    )
    accepted = await store.get_command(body["command_id"])
    assert accepted is not None
    assert (accepted.state, accepted.actor, accepted.source) == (
        CommandState.ACCEPTED,
        "operator",
        "api",
    )
    shown = await cache.get(3)
    assert shown is not None
    assert shown.status is BarrierStatus.OPENING
    assert shown.pending == PendingCommand(
        body["command_id"], CommandKind.OPEN, "operator", CommandState.ACCEPTED
    )


async def test_close_and_errors_of_commands(api: RunningApi) -> None:
    closing = await api.client.post("/barriers/2/close", headers=auth("admin"))
    assert (closing.status_code, closing.json()["status"]) == (202, "closing")
    cases = [
        ("/barriers/99/open", auth("operator"), 404, "unknown_barrier"),
        ("/barriers/abc/open", auth("operator"), 404, "not_found"),
        ("/barriers/1/open", {}, 401, "unauthorized"),
        ("/barriers/1/open", {"Authorization": "Bearer nope"}, 401, "unauthorized"),
        ("/barriers/1/open", {"Authorization": "Basic b3BlcmF0b3I="}, 401, "unauthorized"),
        ("/barriers/1/open", auth("viewer"), 403, "forbidden"),
        ("/barriers/1/explode", auth("operator"), 404, "not_found"),
    ]
    for path, headers, status, code in cases:
        response = await api.client.post(path, headers=headers)
        assert (path, response.status_code, response.json()["error"]) == (path, status, code)
        assert response.json()["message"]


async def test_an_idempotency_key_returns_the_first_answer(
    api: RunningApi, store: BarrierStore, kafka_bootstrap: str
) -> None:
    headers = {**auth("operator"), "Idempotency-Key": "retry-42"}
    first = await api.client.post("/barriers/4/open", headers=headers)
    again = await api.client.post("/barriers/4/open", headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    other = await api.client.post("/barriers/4/close", headers=headers)
    assert (other.status_code, other.json()["error"]) == (422, "idempotency_key_reused")
    # Keys are per caller: the admin's same key is another request.
    admin = await api.client.post(
        "/barriers/4/open", headers={**auth("admin"), "Idempotency-Key": "retry-42"}
    )
    assert admin.json()["command_id"] != first.json()["command_id"]
    sent = await asyncio.to_thread(
        read_commands, kafka_bootstrap, api.settings.commands_topic, 3, 3.0
    )
    assert sorted(v["actor"] for _, v in sent) == ["admin", "operator"]  # type: ignore[type-var]


async def test_a_key_held_by_a_request_that_died_goes_to_a_retry_after_its_lease(
    store: BarrierStore, kafka_bootstrap: str, db_url: str, redis_url: str, namespace: str
) -> None:
    settings = api_settings(
        kafka_bootstrap, db_url, redis_url, namespace, produce_timeout=0.5, idempotency_lease=2.5
    )
    async with serve_api(settings) as api:
        # A request claimed the key, then its process died before it answered.
        await store.claim_idempotency_key("operator", "k9", "open 2", lease=60, retention=3600)
        headers = {**auth("operator"), "Idempotency-Key": "k9"}

        async def retry() -> httpx.Response:
            return await api.client.post("/barriers/2/open", headers=headers)

        first = await retry()
        assert (first.status_code, first.json()["error"]) == (409, "request_in_progress")
        taken = await eventually(retry, lambda r: r.status_code != 409, within=10.0)
        assert (taken.status_code, taken.json()["status"]) == (202, "opening")
        again = await retry()
        assert again.json() == taken.json()


async def test_broker_down_answers_503_and_records_nothing(
    store: BarrierStore, db_url: str, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with KafkaBroker(tmp_path / "kafka") as broker:
        settings = api_settings(
            broker.bootstrap_servers, db_url, redis_url, namespace, produce_timeout=1.0
        )
        async with serve_api(settings) as api:
            assert (
                await api.client.post("/barriers/1/open", headers=auth("operator"))
            ).status_code == 202
            broker.stop()
            started = time.monotonic()
            response = await api.client.post(
                "/barriers/1/open", headers={**auth("operator"), "Idempotency-Key": "k1"}
            )
            assert time.monotonic() - started < 3.0
            assert (response.status_code, response.json()["error"]) == (503, "broker_unavailable")
            rows = await store.events(EventFilter(barrier_id=1), 10)
            assert [r.event_type for r in rows] == ["command_accepted"], (
                "only the first command was recorded"
            )
            ready = await api.client.get("/ready", headers=auth("viewer"))
            assert ready.status_code == 503
            assert ready.json()["dependencies"] == {
                "kafka": "down",
                "postgres": "up",
                "redis": "up",
            }
            # The failed request released its key: a retry is a new request, not a replay.
            claim = await store.claim_idempotency_key(
                "operator", "k1", "open 1", lease=60, retention=3600
            )
            assert isinstance(claim, KeyClaim)


# -- status ---------------------------------------------------------------------------------


async def test_status_comes_from_the_cache_with_quality_and_age(
    api: RunningApi, cache: StatusCache
) -> None:
    await cache.put(record(5, BarrierStatus.OPENED, read_at=time.time() - 1.0))
    body = (await api.client.get("/barriers/5/status", headers=auth("viewer"))).json()
    view = msgspec.convert(body, BarrierView)
    assert (view.status, view.quality, view.source.value, view.position) == (
        BarrierStatus.OPENED,
        Quality.GOOD,
        "cache",
        100,
    )
    assert view.age_seconds is not None
    assert 0.9 <= view.age_seconds < 3
    # A record the bridge stopped refreshing is never shown as fresh.
    await cache.put(record(6, BarrierStatus.OPENED, read_at=time.time() - 60))
    old = (await api.client.get("/barriers/6/status", headers=auth("viewer"))).json()
    assert (old["status"], old["quality"]) == ("opened", "stale")
    assert old["age_seconds"] >= 60


async def test_status_is_the_same_answered_ahead_of_the_framework_or_by_it(
    api: RunningApi, cache: StatusCache
) -> None:
    now = time.time()
    await cache.put(record(5, BarrierStatus.OPENED, read_at=now - 1.0))
    fast = await api.client.get("/barriers/5/status", headers=auth("viewer"))
    # A non-canonical id is not the fast path's: the routed handler answers it.
    routed = await api.client.get("/barriers/05/status", headers=auth("viewer"))
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    first, second = fast.json(), routed.json()
    assert abs(first.pop("age_seconds") - second.pop("age_seconds")) < 1.0
    assert first == second
    # Whoever answers, each request is timed under its route's template.
    assert (await api.client.get("/barriers/5/status")).status_code == 401
    assert (await api.client.get("/barriers/99/status", headers=auth("viewer"))).status_code == 404
    metrics = (await api.client.get("/metrics")).text
    route = 'method="GET",path="/barriers/{barrier_id}/status"'
    for status in (200, 401, 404):
        assert f'barrier_api_request_duration_seconds_count{{{route},status_code="{status}"}}' in (
            metrics
        ), status


async def test_status_falls_back_to_postgres_when_redis_is_down(
    store: BarrierStore, kafka_bootstrap: str, db_url: str, namespace: str
) -> None:
    await store.record_event(
        7, EventType.STATE_CHANGED, at=time.time() - 5, status=BarrierStatus.OPENED, position=100
    )
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with serve_api(api_settings(kafka_bootstrap, db_url, dead_redis, namespace)) as api:
        body = (await api.client.get("/barriers/7/status", headers=auth("viewer"))).json()
        assert (body["status"], body["quality"], body["source"]) == ("opened", "stale", "database")
        assert body["age_seconds"] >= 5
        listing = (await api.client.get("/barriers", headers=auth("viewer"))).json()
        assert len(listing["barriers"]) == 8
        assert {b["source"] for b in listing["barriers"]} == {"database"}


async def test_list_of_barriers(api: RunningApi, cache: StatusCache) -> None:
    await cache.put(record(1, BarrierStatus.OPENED))
    body = (await api.client.get("/barriers", headers=auth("viewer"))).json()
    assert [b["barrier_id"] for b in body["barriers"]] == list(range(1, 9))
    assert body["barriers"][0]["status"] == "opened"
    assert body["barriers"][1]["source"] == "database"
    assert (await api.client.get("/barriers")).status_code == 401


# -- events and commands --------------------------------------------------------------------


async def test_events_paginate_newest_first_without_gaps_or_repeats(
    api: RunningApi, store: BarrierStore
) -> None:
    base = time.time() - 1000
    for i in range(230):
        # Some share a timestamp: the cursor must still split them exactly.
        await store.record_event(
            1 + i % 3, EventType.STATE_CHANGED, at=base + i // 2, detail={"n": i}
        )
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 50}
        if cursor:
            params["cursor"] = cursor
        page = (
            await api.client.get("/barriers/events", params=params, headers=auth("viewer"))
        ).json()
        seen += [e["detail"]["n"] for e in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == list(range(229, -1, -1))
    one = (
        await api.client.get(
            "/barriers/events", params={"barrier_id": 2, "limit": 500}, headers=auth("viewer")
        )
    ).json()
    assert {e["barrier_id"] for e in one["events"]} == {2}
    assert len(one["events"]) == 77
    window = (
        await api.client.get(
            "/barriers/events",
            params={
                "since": datetime.fromtimestamp(base + 99.5, UTC).isoformat(),
                "until": datetime.fromtimestamp(base + 109.5, UTC).isoformat(),
            },
            headers=auth("viewer"),
        )
    ).json()
    assert sorted(e["detail"]["n"] for e in window["events"]) == list(range(200, 220))
    typed = (
        await api.client.get(
            "/barriers/events", params={"event_type": "link_lost"}, headers=auth("viewer")
        )
    ).json()
    assert typed == {"events": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cursor": "bm9wZQ"}, "invalid_cursor"),
        ({"limit": 501}, "page_too_large"),
        ({"limit": 0}, "invalid_request"),
        ({"event_type": "exploded"}, "invalid_request"),
        ({"command_id": "not-a-uuid"}, "invalid_request"),
        ({"since": "yesterday"}, "invalid_request"),
        ({"barrier_id": "x"}, "invalid_request"),
    ],
)
async def test_bad_event_queries_are_400(
    api: RunningApi, params: dict[str, object], code: str
) -> None:
    response = await api.client.get("/barriers/events", params=params, headers=auth("viewer"))  # type: ignore[arg-type]
    assert (response.status_code, response.json()["error"]) == (400, code)


async def test_a_command_with_its_events(api: RunningApi) -> None:
    accepted = (await api.client.post("/barriers/8/open", headers=auth("operator"))).json()
    body = (
        await api.client.get(f"/commands/{accepted['command_id']}", headers=auth("viewer"))
    ).json()
    assert (body["state"], body["actor"], body["kind"], body["barrier_id"]) == (
        "accepted",
        "operator",
        "open",
        8,
    )
    assert [e["event_type"] for e in body["events"]] == ["command_accepted"]
    missing = await api.client.get(f"/commands/{uuid.uuid4()}", headers=auth("viewer"))
    assert (missing.status_code, missing.json()["error"]) == (404, "unknown_command")
    bad = await api.client.get("/commands/123", headers=auth("viewer"))
    assert bad.status_code == 404


async def test_oversized_bodies_are_refused(api: RunningApi) -> None:
    response = await api.client.post(
        "/barriers/1/open", headers=auth("operator"), content=b"x" * 100_000
    )
    assert (response.status_code, response.json()["error"]) == (413, "request_too_large")


async def test_health_is_open_and_ready_reports_dependencies(api: RunningApi) -> None:
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    ready = await api.client.get("/ready", headers=auth("viewer"))
    assert ready.json() == {
        "ready": True,
        "dependencies": {"kafka": "up", "postgres": "up", "redis": "up"},
    }
    assert (await api.client.get("/ready")).status_code == 401
    schema = (await api.client.get("/schema/openapi.json")).json()
    assert "/barriers/{barrier_id}/open" in schema["paths"]
    metrics = (await api.client.get("/metrics")).text
    assert "barrier_api_commands_accepted_total" in metrics


# -- WebSocket ------------------------------------------------------------------------------


async def next_message(
    socket: websockets.ClientConnection, kind: str, within: float = 5.0
) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = msgspec.json.decode(await socket.recv(), type=dict[str, Any])
            if message["type"] == kind:
                return message


async def test_websocket_snapshot_then_live_changes(api: RunningApi, cache: StatusCache) -> None:
    await cache.put(record(1))
    await cache.put(record(2))
    async with websockets.connect(f"{api.ws_base}/ws?token=viewer-secret") as socket:
        snapshot = await next_message(socket, "snapshot")
        assert [b["barrier_id"] for b in snapshot["barriers"]] == [1, 2]
        await cache.put(record(2, BarrierStatus.OPENED))
        change = await next_message(socket, "status")
        assert (change["barrier"]["barrier_id"], change["barrier"]["status"]) == (2, "opened")


async def test_websocket_filter_and_header_auth(api: RunningApi, cache: StatusCache) -> None:
    await cache.put(record(1))
    await cache.put(record(3))
    async with websockets.connect(
        f"{api.ws_base}/ws?barriers=3", additional_headers=auth("viewer")
    ) as socket:
        snapshot = await next_message(socket, "snapshot")
        assert [b["barrier_id"] for b in snapshot["barriers"]] == [3]
        await cache.put(record(1, BarrierStatus.OPENED))
        await cache.put(record(3, BarrierStatus.OPENED))
        change = await next_message(socket, "status")
        assert change["barrier"]["barrier_id"] == 3


async def test_websocket_clients_learn_when_a_reading_goes_stale(
    store: BarrierStore,
    cache: StatusCache,
    kafka_bootstrap: str,
    db_url: str,
    redis_url: str,
    namespace: str,
) -> None:
    # A bridge that stops publishes nothing more: the API itself must tell its watchers.
    settings = api_settings(kafka_bootstrap, db_url, redis_url, namespace, stale_after=1.0)
    async with serve_api(settings) as api:
        await cache.put(record(4, BarrierStatus.OPENED))
        async with websockets.connect(f"{api.ws_base}/ws?barriers=4&token=viewer-secret") as socket:
            snapshot = await next_message(socket, "snapshot")
            assert snapshot["barriers"][0]["quality"] == "good"
            change = await next_message(socket, "status", within=5.0)
            assert (change["barrier"]["status"], change["barrier"]["quality"]) == (
                "opened",
                "stale",
            )
            assert change["barrier"]["age_seconds"] > 1.0


@pytest.mark.parametrize("query", ["", "?token=wrong"])
async def test_websocket_requires_a_token(api: RunningApi, query: str) -> None:
    with pytest.raises(websockets.exceptions.WebSocketException):
        async with websockets.connect(f"{api.ws_base}/ws{query}") as socket:
            await socket.recv()


async def stuck_websocket_client(host: str, port: int, path: str) -> socket.socket:
    """Open a WebSocket by hand, then never read: nothing buffers on our side but the kernel's."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, (host, port))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(raw, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(raw, 1)  # byte by byte: leave the frames unread
    assert head.startswith(b"HTTP/1.1 101")
    return raw


async def websocket_clients(api: RunningApi) -> float:
    text = (await api.client.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("barrier_api_websocket_clients "))
    return float(line.split()[1])


async def test_a_slow_websocket_client_does_not_delay_a_fast_one(
    store: BarrierStore,
    cache: StatusCache,
    kafka_bootstrap: str,
    db_url: str,
    redis_url: str,
    namespace: str,
) -> None:
    settings = api_settings(kafka_bootstrap, db_url, redis_url, namespace, ws_queue=64)
    async with serve_api(settings) as api:
        clients_before = await websocket_clients(api)
        slow = await stuck_websocket_client(settings.host, settings.port, "/ws?token=viewer-secret")
        try:
            async with websockets.connect(f"{api.ws_base}/ws?token=viewer-secret") as fast:
                await next_message(fast, "snapshot")
                padding = "x" * 8000
                latest: dict[int, str] = {}
                final = {b: f"final-{b}" for b in range(1, 9)}

                async def follow() -> None:
                    while {b: latest.get(b) for b in final} != final:
                        message = msgspec.json.decode(await fast.recv(), type=dict[str, Any])
                        views = message.get("barriers", []) + (
                            [message["barrier"]] if "barrier" in message else []
                        )
                        for view in views:
                            latest[view["barrier_id"]] = (view["fault"] or "").split("|")[0]

                following = asyncio.create_task(follow())
                # ~24 MB of changes: far more than the stuck client's socket buffers hold.
                for i in range(0, 3000, 100):
                    batch = [
                        record(1 + (i + j) % 8, fault=f"{i + j}|{padding}") for j in range(100)
                    ]
                    await cache.put_many(batch, publish={r.barrier_id for r in batch})
                published = time.monotonic()
                await cache.put_many(
                    [record(b, fault=marker) for b, marker in final.items()], publish=set(final)
                )
                async with asyncio.timeout(10):
                    await following
                caught_up = time.monotonic() - published
                # The stuck client was let go (after the send timeout); the fast one stays.
                await eventually(lambda: websocket_clients(api), lambda n: n == clients_before + 1)
        finally:
            slow.close()
    assert caught_up < 2.0, f"the fast client took {caught_up:.2f} s to see the last changes"


async def test_a_fuzz_run_of_the_openapi_schema_finds_no_server_error(api: RunningApi) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{api.base}/schema/openapi.json",
        "--checks",
        "not_a_server_error",
        "--header",
        "Authorization: Bearer operator-secret",
        "--max-examples",
        "25",
        "--seed",
        "20261203",
        "--generation-deterministic",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(240):
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-4000:]
    tested = re.search(r"Tested: (\d+)", text)
    assert tested is not None
    assert int(tested.group(1)) >= 8, "every REST operation was exercised"
    assert re.search(r"(\d+) generated, \1 passed", text), text[-2000:]
