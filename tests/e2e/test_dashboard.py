"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Simulator, bridge and API run on loopback as in test_end_to_end.py; the page is loaded from the
API at ``/`` and used as an operator would. Set ``BARRIER_DASHBOARD_SCREENSHOT=docs/dashboard.png``
to write the README's screenshot.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest
import pytest_asyncio
from playwright.async_api import Locator, Page, async_playwright, expect

from api.settings import ApiSettings
from plc.registers import RegisterMap, uniform_register_map
from simulator import Simulator
from simulator.physics import Command, Fault
from tests.api_stack import TOKENS, RunningApi, api_settings, auth, serve_api
from tests.bridge_stack import BridgeStack, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

CHROMIUM = Path(os.environ.get("BARRIER_TEST_CHROMIUM", "/usr/bin/chromium"))
"""Debian's Chromium; Playwright's own browser downloads are never used."""

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Nothing but loopback is reachable: keep Chromium from calling home."""

ON_THE_MACHINE = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts the page may request anything from: nothing outside the machine may be fetched."""

SCREENSHOT_ENV = "BARRIER_DASHBOARD_SCREENSHOT"
SCREENSHOT_MAX_BYTES = 300_000

WAIT_MS = 15_000
"""How long any expectation on the page may take to come true."""

NAMES = (
    "North entry",
    "North exit",
    "South entry",
    "Fire lane",
    "Delivery gate",
    "Staff car park",
    "Visitor car park",
    "Bus depot",
)


def named_map() -> RegisterMap:
    """Two barrier-v1 PLCs on free ports with four barriers each, named like a real site."""
    plain = uniform_register_map([("127.0.0.1", 0), ("127.0.0.1", 0)], 4)
    barriers = tuple(
        msgspec.structs.replace(b, name=name) for b, name in zip(plain.barriers, NAMES, strict=True)
    )
    return msgspec.structs.replace(plain, barriers=barriers)


@pytest_asyncio.fixture
async def stack(
    kafka_bootstrap: str, db_url: str, redis_url: str, namespace: str
) -> AsyncIterator[BridgeStack]:
    # 1.5 s of travel: long enough to see "opening" on the page before "opened".
    async with Simulator(named_map(), travel_time=1.5, scan_interval=0.01) as sim:
        built = BridgeStack(sim, kafka_bootstrap, db_url, redis_url, namespace)
        try:
            yield built
        finally:
            await built.close()


@pytest.fixture
def settings(stack: BridgeStack) -> ApiSettings:
    return api_settings(
        stack.kafka,
        stack.db_url,
        stack.redis_url,
        stack.settings.cache_namespace,
        commands_topic=stack.settings.commands_topic,
    )


class Dashboard:
    """The page, and what an operator looks at on it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requested: list[str] = []
        """Every URL the page asked for: documents, scripts, styles, fetches and WebSockets."""
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.requested.append(request.url))
        page.on("websocket", lambda socket: self.requested.append(socket.url))
        self.tiles = page.locator("#tiles > li")
        self.banner = page.locator("#banner")
        self.connection = page.locator("#connection")
        self.log = page.locator("#log > li")

    async def sign_in(self, token: str) -> None:
        await self.page.get_by_label("Access token").fill(token)
        await self.page.get_by_role("button", name="Connect").click()

    def tile(self, barrier_id: int) -> Locator:
        return self.page.locator(f'#tiles > li[data-barrier-id="{barrier_id}"]')

    def status(self, barrier_id: int) -> Locator:
        return self.tile(barrier_id).locator(".status-word")

    def entries(self, barrier_id: int, text: str) -> Locator:
        return self.page.locator(f'#log > li[data-barrier-id="{barrier_id}"]', has_text=text)

    def off_the_machine(self) -> list[str]:
        """The URLs the page requested from anywhere but this machine (there should be none)."""
        assert any(url.startswith("ws://") for url in self.requested), "requests are recorded"
        return [url for url in self.requested if urlsplit(url).hostname not in ON_THE_MACHINE]


@pytest.fixture
def chromium() -> Path:
    """The browser binary; its absence fails the test (a skip would hide an untested page)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run ./dev test as root (it installs "
            "Debian's chromium), or 'apt-get install chromium', or set BARRIER_TEST_CHROMIUM "
            "to a Chromium binary."
        )
    return CHROMIUM


@pytest_asyncio.fixture
async def dashboard(chromium: Path) -> AsyncIterator[Dashboard]:
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        # Playwright gives every launch a fresh, empty profile (--user-data-dir) of its own.
        browser = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = await browser.new_context(viewport={"width": 1360, "height": 860})
            yield Dashboard(await context.new_page())
        finally:
            await browser.close()


async def all_read(api: RunningApi, count: int = len(NAMES)) -> None:
    """Wait until the bridge has read every barrier once, so the first snapshot has them all."""
    await eventually(
        lambda: api.client.get("/barriers", headers=auth("viewer")),
        lambda r: [b["source"] for b in r.json()["barriers"]] == ["cache"] * count,
    )


async def position_of(sim: Simulator, barrier_id: int) -> int:
    """Where the simulated barrier is now, 0 (closed) to 100 (open)."""
    return sim.reading(barrier_id).position


async def test_open_a_barrier_and_ride_out_a_disconnect(
    stack: BridgeStack, settings: ApiSettings, dashboard: Dashboard
) -> None:
    page = dashboard.page
    async with stack.bridge():
        async with serve_api(settings, create_topic=False) as api:
            await all_read(api)
            await page.goto(f"{api.base}/")
            await dashboard.sign_in("not-a-token")
            await expect(page.locator("#sign-in-error")).to_have_text(
                "The bearer token is not valid."
            )
            await dashboard.sign_in(TOKENS["operator"])
            await expect(dashboard.connection).to_have_text("Live")
            await expect(dashboard.tiles).to_have_count(8)
            await expect(page.locator(".status-word", has_text="Closed")).to_have_count(8)
            await expect(dashboard.banner).to_be_hidden()

            tile = dashboard.tile(6)
            await expect(tile.locator(".tile-name")).to_have_text("#6 Staff car park")
            await tile.get_by_role("button", name="Open #6 Staff car park").click()
            await expect(dashboard.status(6)).to_have_text("Opening")
            await expect(tile.locator(".answer")).to_have_text(
                re.compile(r"^Accepted: Barrier 6 is opening")
            )
            await expect(dashboard.status(6)).to_have_text("Opened")
            await expect(tile.locator(".position-value")).to_have_text("100 %")
            await expect(tile.locator('[role="meter"]')).to_have_attribute("aria-valuenow", "100")
            await expect(dashboard.entries(6, "Closed → Opening (open by operator)")).to_have_count(
                1
            )
            await expect(dashboard.entries(6, "Opening → Opened")).to_have_count(1)
            await expect(page.locator(".status-word", has_text="Closed")).to_have_count(7)

        # The API is gone: the page's socket is closed by the server going away, then refused.
        await expect(dashboard.banner).to_be_visible()
        await expect(dashboard.banner).to_contain_text("Live updates are disconnected")
        await expect(dashboard.connection).to_have_text("Disconnected")
        await expect(page.locator("#log > li", has_text="Live updates lost")).to_have_count(1)

        # A change while the page cannot hear: it must arrive with the snapshot on reconnect.
        stack.sim.set_occupied(3, True)
        await eventually(lambda: stack.cached(3), lambda r: r is not None and r.occupied is True)
        await expect(dashboard.tile(3).locator(".occupancy")).to_have_text("Clear")

        async with serve_api(settings, create_topic=False):
            await expect(dashboard.banner).to_be_hidden(timeout=30_000)
            await expect(dashboard.connection).to_have_text("Live")
            await expect(dashboard.tile(3).locator(".occupancy")).to_have_text("Present")
            await expect(
                dashboard.entries(3, "Vehicle present (while disconnected)")
            ).to_have_count(1)
            await expect(page.locator("#log > li", has_text="Live updates restored")).to_have_count(
                1
            )
            await expect(dashboard.tiles).to_have_count(8)
            await expect(dashboard.status(6)).to_have_text("Opened")
    assert dashboard.errors == []
    assert dashboard.off_the_machine() == []


async def test_states_read_at_a_glance_on_a_screen_and_a_phone(
    stack: BridgeStack, settings: ApiSettings, dashboard: Dashboard
) -> None:
    page = dashboard.page
    sim = stack.sim
    async with stack.bridge(), serve_api(settings, create_topic=False) as api:
        await all_read(api)
        await page.goto(f"{api.base}/")
        await dashboard.sign_in(TOKENS["viewer"])
        await expect(dashboard.tiles).to_have_count(8)

        # A viewer may watch but not command: the API's refusal is shown on the tile.
        button = dashboard.tile(2).get_by_role("button", name="Open #2 North exit")
        await button.focus()
        await page.keyboard.press("Enter")
        await expect(dashboard.tile(2).locator(".answer")).to_have_text(
            "Refused: Your token's role (viewer) may not do this; it needs operator."
        )
        await expect(button).to_be_focused()

        sim.local_command(1, Command.OPEN)  # the cabinet's push button
        sim.local_command(5, Command.OPEN)
        sim.set_occupied(5, True)
        sim.inject_fault(4, Fault.MOTOR_FAULT)
        sim.local_command(7, Command.OPEN)
        await eventually(lambda: position_of(sim, 7), lambda position: position >= 30)
        sim.inject_fault(7, Fault.STUCK)  # jammed part-way: it reports "opening" for ever
        await expect(dashboard.status(1)).to_have_text("Opened")
        await expect(dashboard.status(5)).to_have_text("Opened")
        await expect(dashboard.tile(5).locator(".occupancy")).to_have_text("Present")
        await expect(dashboard.status(4)).to_have_text("Error")
        await expect(dashboard.tile(4).locator(".fault")).to_have_text("motor fault")
        await expect(dashboard.entries(4, "ALARM: Fault: motor fault")).to_have_count(1)
        await expect(dashboard.status(7)).to_have_text("Opening")
        await expect(dashboard.tile(7).locator(".position-value")).to_have_text(
            re.compile(r"^[3-9]\d %$")
        )
        await expect(dashboard.status(2)).to_have_text("Closed")
        await expect(dashboard.tile(2).locator(".quality")).to_have_text("Good")
        await expect(dashboard.tile(2).locator(".age")).to_have_text(re.compile(r"s ago$"))
        await expect(page.locator("#summary")).to_have_text(
            "8 barriers · 2 opened · 1 in fault · 0 not reading well · 1 with a vehicle"
        )

        png = await page.screenshot(full_page=True)
        assert len(png) < SCREENSHOT_MAX_BYTES
        if target := os.environ.get(SCREENSHOT_ENV):
            await asyncio.to_thread(Path(target).write_bytes, png)

        # A phone: one column, nothing wider than the screen.
        await page.set_viewport_size({"width": 390, "height": 844})
        await expect(dashboard.tile(1)).to_be_visible()
        boxes = [await tile.bounding_box() for tile in await dashboard.tiles.all()]
        assert len({box["x"] for box in boxes if box is not None}) == 1
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert dashboard.errors == []
    assert dashboard.off_the_machine() == []
