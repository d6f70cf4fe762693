"""``python -m api`` as a child process, configured by ``API_*`` variables, with tokens of its own.

The API runs as in production: one uvicorn worker with uvloop and httptools, every setting
explicit in its environment.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import msgspec

from api.auth import hash_token
from api.settings import ENV_PREFIX, ApiSettings
from bench.children import ChildError, ChildProcess, settings_env
from stack.services import LOOPBACK, free_port, log_tail

TOKENS = {"viewer": "bench-viewer", "operator": "bench-operator"}
"""Role -> token of the bench's clients; each token is named after its role."""


def token_config() -> str:
    """The ``API_TOKENS`` value for `TOKENS`, hashed as configuration holds them."""
    return ",".join(f"{role}:{role}:{hash_token(token).hex()}" for role, token in TOKENS.items())


def bearer(role: str) -> dict[str, str]:
    """Headers that authenticate as `role`."""
    return {"Authorization": f"Bearer {TOKENS[role]}"}


class ApiProcess(ChildProcess):
    """One API worker as a separate process on a free loopback port."""

    def __init__(self, log_path: Path, settings: ApiSettings) -> None:
        settings = msgspec.structs.replace(
            settings, host=LOOPBACK, port=free_port(), tokens=token_config()
        )
        env = settings_env(settings, ENV_PREFIX)
        super().__init__("api", [sys.executable, "-m", "api"], log_path, env=env)
        self.settings = settings
        self.base = f"http://{LOOPBACK}:{settings.port}"
        self.ws_base = f"ws://{LOOPBACK}:{settings.port}"

    async def ready(self, within: float = 60.0) -> None:
        """Wait until ``/ready`` says every dependency is up."""
        deadline = time.monotonic() + within
        last = "no answer"
        async with httpx.AsyncClient(base_url=self.base, timeout=2.0) as client:
            while time.monotonic() < deadline:
                self.check()
                try:
                    reply = await client.get("/ready", headers=bearer("viewer"))
                except httpx.HTTPError as exc:
                    last = repr(exc)
                else:
                    if reply.status_code == 200:
                        return
                    last = f"{reply.status_code} {reply.text[:200]}"
                await asyncio.sleep(0.1)
        raise ChildError(
            f"api not ready after {within} s ({last}); log {self.log_path}:\n"
            f"{log_tail(self.log_path)}"
        )
