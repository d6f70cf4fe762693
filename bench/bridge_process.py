"""``python -m bridge`` as a child process, configured by ``BRIDGE_*`` variables, and its metrics.

`BridgeProcess` writes the register map file, sets every setting explicitly in the child's
environment (nothing leaks in from ours), and reads the bridge's Prometheus ``/metrics``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from bench.children import ChildError, ChildProcess, settings_env
from bridge.settings import ENV_PREFIX, BridgeSettings
from plc.config import dump_register_map
from plc.registers import RegisterMap
from stack.services import LOOPBACK, log_tail

Labels = frozenset[tuple[str, str]]


class Metrics(msgspec.Struct, frozen=True):
    """One scrape of a bridge's ``/metrics``: every sample by name and labels."""

    samples: dict[str, dict[Labels, float]]
    at: float
    """Monotonic time of the scrape."""

    @classmethod
    def parse(cls, text: str, at: float) -> Metrics:
        """Parse the Prometheus text format."""
        samples: dict[str, dict[Labels, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = frozenset(sample.labels.items())
                samples.setdefault(sample.name, {})[labels] = sample.value
        return cls(samples=samples, at=at)

    def total(self, name: str) -> float:
        """The sum of `name` over all its labels (0 if absent)."""
        return sum(self.samples.get(name, {}).values())

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """`name`'s values keyed by the value of `label`."""
        out: dict[str, float] = {}
        for labels, value in self.samples.get(name, {}).items():
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """A histogram's cumulative buckets summed over its other labels: (upper bound, count)."""
        merged: dict[float, float] = {}
        for labels, value in self.samples.get(f"{name}_bucket", {}).items():
            bound = float(dict(labels)["le"])
            merged[bound] = merged.get(bound, 0.0) + value
        return sorted(merged.items())


def histogram_quantile(
    before: Iterable[tuple[float, float]], after: Iterable[tuple[float, float]], q: float
) -> float | None:
    """The upper bound of the bucket holding quantile `q` of the observations between scrapes."""
    start = dict(before)
    diffs = [(bound, count - start.get(bound, 0.0)) for bound, count in after]
    if not diffs or diffs[-1][1] <= 0:
        return None
    target = q * diffs[-1][1]
    for bound, count in diffs:
        if count >= target:
            return bound
    return None


class BridgeProcess(ChildProcess):
    """One bridge instance as a separate process, against the given services and map."""

    def __init__(
        self,
        work_dir: Path,
        register_map: RegisterMap,
        settings: BridgeSettings,
    ) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        map_file = work_dir / f"barriers-{settings.instance_id}.toml"
        map_file.write_text(dump_register_map(register_map))
        settings = msgspec.structs.replace(settings, register_map=str(map_file))
        super().__init__(
            f"bridge {settings.instance_id}",
            [sys.executable, "-m", "bridge"],
            work_dir / f"bridge-{settings.instance_id}.log",
            env=settings_env(settings, ENV_PREFIX),
            stop_timeout=settings.shutdown_grace + 10,
        )
        self.settings = settings
        self.register_map = register_map

    @property
    def metrics_url(self) -> str:
        """Where the bridge serves its Prometheus metrics."""
        return f"http://{LOOPBACK}:{self.settings.metrics_port}/metrics"

    def _fetch(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:
            body: bytes = reply.read()
            return body.decode()

    async def scrape(self) -> Metrics:
        """Read the bridge's metrics now."""
        text = await asyncio.to_thread(self._fetch)
        return Metrics.parse(text, time.monotonic())

    async def ready(self, within: float = 60.0) -> Metrics:
        """Wait until the bridge owns every barrier and has polled every endpoint once."""
        barriers = len(self.register_map.barriers)
        endpoints = {e.name for e in self.register_map.endpoints}
        deadline = time.monotonic() + within
        last: Any = "no answer"
        while time.monotonic() < deadline:
            self.check()
            try:
                metrics = await self.scrape()
            except OSError as exc:
                last = exc
            else:
                cycles = metrics.by_label("bridge_poll_cycle_seconds_count", "endpoint")
                owned = metrics.total("bridge_owned_barriers")
                last = f"owns {owned:.0f}/{barriers}, polled {sorted(cycles)}"
                if owned == barriers and endpoints <= {e for e, n in cycles.items() if n > 0}:
                    return metrics
            await asyncio.sleep(0.1)
        raise ChildError(
            f"{self.name} not ready after {within} s ({last}); log {self.log_path}:\n"
            f"{log_tail(self.log_path)}"
        )
