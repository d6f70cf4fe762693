"""Test helper: the API served by uvicorn on a free loopback port, with tokens of every role."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import uvicorn

from api.app import create_app
from api.auth import hash_token
from api.settings import ApiSettings
from stack.services import free_port
from store.kafka import ensure_topics

TOKENS = {"viewer": "viewer-secret", "operator": "operator-secret", "admin": "admin-secret"}
"""Role -> token; each token's name is its role."""


def token_config() -> str:
    """The API_TOKENS value for `TOKENS`, hashed as configuration holds them."""
    return ",".join(f"{role}:{role}:{hash_token(token).hex()}" for role, token in TOKENS.items())


def auth(role: str) -> dict[str, str]:
    """Headers that authenticate as `role`."""
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def api_settings(
    kafka: str, db_url: str, redis_url: str, namespace: str, **overrides: Any
) -> ApiSettings:
    """Settings for a test API on a free port, with its own commands topic."""
    settings = ApiSettings(
        port=free_port(),
        kafka_bootstrap=kafka,
        database_url=db_url,
        redis_url=redis_url,
        cache_namespace=namespace,
        commands_topic=f"commands-{uuid.uuid4().hex[:10]}",
        tokens=token_config(),
        produce_timeout=2.0,
        stale_after=3.0,
        ws_ping_interval=5.0,
        ws_send_timeout=2.0,
    )
    return msgspec.structs.replace(settings, **overrides)


class RunningApi:
    """An API being served, and a client for it."""

    def __init__(self, settings: ApiSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.base = f"http://{settings.host}:{settings.port}"
        self.ws_base = f"ws://{settings.host}:{settings.port}"


@asynccontextmanager
async def serve_api(
    settings: ApiSettings, *, create_topic: bool = True
) -> AsyncIterator[RunningApi]:
    """Serve the API with uvicorn in this process until the block ends."""
    if create_topic:
        await asyncio.to_thread(
            ensure_topics, settings.kafka_bootstrap, {settings.commands_topic: 4}
        )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(
            base_url=f"http://{settings.host}:{settings.port}", timeout=10
        ) as client:
            yield RunningApi(settings, client)
    finally:
        server.should_exit = True
        await task
