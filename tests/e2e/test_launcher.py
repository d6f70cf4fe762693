"""The README's first command: the whole stack from one launcher, attachable, stopped cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import msgspec
import pytest

from stack.launcher import StackInfo
from stack.services import free_port
from tests.bridge_stack import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_stack_starts_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "stack"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stack",
        "--data",
        str(data),
        "--api-port",
        str(free_port()),
        "--travel-time",
        "0.5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        stack_json = data / "stack.json"
        await eventually(lambda: asyncio.to_thread(stack_json.exists), bool, within=90)
        info = msgspec.json.decode(stack_json.read_bytes(), type=StackInfo)
        assert set(info.pids) == {"simulator", "bridge", "api"}
        assert info.kafka_bootstrap.startswith("127.0.0.1:")
        assert info.database_url.startswith("postgresql://")
        assert len(info.simulator_endpoints) == 2
        operator = {"Authorization": f"Bearer {info.tokens['operator']}"}
        async with httpx.AsyncClient(base_url=info.api_url, headers=operator, timeout=5) as client:
            assert (await client.post("/barriers/5/open")).status_code == 202
            status = await eventually(
                lambda: client.get("/barriers/5/status"), lambda r: r.json()["status"] == "opened"
            )
            assert status.json()["quality"] == "good"
            assert (await client.get(info.dashboard_url)).status_code == 200
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
        assert process.returncode == 0, output.decode(errors="replace")[-3000:]
        assert not [name for name, pid in info.pids.items() if alive(pid)], "no process left behind"
        assert not stack_json.exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_check_proves_a_command_end_to_end(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stack",
        "--check",
        "--data",
        str(tmp_path / "stack"),
        "--api-port",
        str(free_port()),
        "--travel-time",
        "0.5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    assert "check passed" in text
