"""Bridge and API settings from the environment."""

import pytest

from api.settings import load_settings as load_api_settings
from bridge.settings import BridgeSettings, describe_settings, load_settings

pytestmark = pytest.mark.unit


def test_defaults_and_overrides() -> None:
    settings = load_settings({"BRIDGE_PARTITIONS": "6", "BRIDGE_COMMAND_TTL": "12.5", "OTHER": "x"})
    assert (settings.partitions, settings.command_ttl) == (6, 12.5)
    assert settings.command_deadline == BridgeSettings().command_deadline


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"^BRIDGE_COMMAND_TTL: Expected `float`"):
        load_settings({"BRIDGE_COMMAND_TTL": "soon"})


def test_help_lists_every_variable_with_its_meaning() -> None:
    text = describe_settings()
    assert "BRIDGE_KAFKA_BOOTSTRAP" in text
    assert "Seconds after which an unexecuted command expires" in text
    assert text.count("BRIDGE_") == len(BridgeSettings.__struct_fields__)


def test_an_idempotency_lease_must_outlast_a_send() -> None:
    assert load_api_settings({"API_IDEMPOTENCY_LEASE": "10"}).idempotency_lease == 10
    with pytest.raises(ValueError, match=r"API_IDEMPOTENCY_LEASE .* must exceed"):
        load_api_settings({"API_IDEMPOTENCY_LEASE": "6", "API_PRODUCE_TIMEOUT": "5"})
