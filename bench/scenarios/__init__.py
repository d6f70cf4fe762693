"""The benchmark scenarios, one module each; add a module and list its `SCENARIO` here."""

from __future__ import annotations

from typing import Any

from bench.harness import Scenario
from bench.scenarios import api, bridge, plc

SCENARIOS: dict[str, Scenario[Any]] = {
    s.name: s for s in (plc.SCENARIO, bridge.SCENARIO, api.SCENARIO)
}
"""Every scenario by name, in the order ``python -m bench`` runs them."""
