"""The whole path: REST command -> Kafka -> bridge -> simulated PLC -> WebSocket and history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
import pytest_asyncio
import websockets

from tests.api_stack import RunningApi, api_settings, auth, serve_api
from tests.bridge_stack import BridgeStack, eventually, simulated_stack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


@pytest_asyncio.fixture
async def stack(
    kafka_bootstrap: str, db_url: str, redis_url: str, namespace: str
) -> AsyncIterator[BridgeStack]:
    async with simulated_stack(
        kafka_bootstrap, db_url, redis_url, namespace, travel_time=0.5
    ) as built:
        yield built


async def test_post_open_then_watch_it_open(stack: BridgeStack) -> None:
    settings = api_settings(
        stack.kafka,
        stack.db_url,
        stack.redis_url,
        stack.settings.cache_namespace,
        commands_topic=stack.settings.commands_topic,
    )
    async with stack.bridge(), serve_api(settings, create_topic=False) as api:
        await _open_and_watch(api, barrier_id=6)


async def _open_and_watch(api: RunningApi, barrier_id: int) -> None:
    statuses: list[str] = []
    await eventually(  # the bridge has read the PLC once
        lambda: api.client.get(f"/barriers/{barrier_id}/status", headers=auth("viewer")),
        lambda r: r.json()["source"] == "cache",
    )
    async with websockets.connect(
        f"{api.ws_base}/ws?barriers={barrier_id}&token=viewer-secret"
    ) as socket:
        first = msgspec.json.decode(await socket.recv())
        assert first["type"] == "snapshot"
        assert [b["status"] for b in first["barriers"]] == ["closed"]
        response = await api.client.post(f"/barriers/{barrier_id}/open", headers=auth("operator"))
        assert response.status_code == 202
        command_id = response.json()["command_id"]
        async with asyncio.timeout(10):
            while not statuses or statuses[-1] != "opened":
                message = msgspec.json.decode(await socket.recv())
                if message["type"] != "status":
                    continue
                barrier = message["barrier"]
                if barrier["status"] == "opened":  # published with the command's outcome
                    assert barrier["pending"] is None, barrier
                if not statuses or statuses[-1] != barrier["status"]:
                    statuses.append(barrier["status"])
    assert statuses == ["opening", "opened"]
    status = (await api.client.get(f"/barriers/{barrier_id}/status", headers=auth("viewer"))).json()
    assert (status["status"], status["quality"], status["position"], status["pending"]) == (
        "opened",
        "good",
        100,
        None,
    )
    found = await eventually(
        lambda: api.client.get(
            "/barriers/events", params={"command_id": command_id}, headers=auth("viewer")
        ),
        lambda r: any(e["event_type"] == "command_confirmed" for e in r.json()["events"]),
    )
    events = found.json()["events"]
    kinds = [e["event_type"] for e in reversed(events) if e["event_type"].startswith("command_")]
    assert kinds == ["command_accepted", "command_written", "command_moving", "command_confirmed"]
    assert {e["actor"] for e in events} == {"operator"}
    status = (await api.client.get(f"/barriers/{barrier_id}/status", headers=auth("viewer"))).json()
    assert (status["status"], status["quality"], status["position"]) == ("opened", "good", 100)
    command = (await api.client.get(f"/commands/{command_id}", headers=auth("viewer"))).json()
    assert (command["state"], command["actor"]) == ("confirmed", "operator")
