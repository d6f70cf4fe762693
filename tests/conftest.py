"""Shared pytest fixtures: real services started by the test session, and simulator helpers."""

from tests.services import kafka_bootstrap, postgres_url, redis_url

__all__ = ["kafka_bootstrap", "postgres_url", "redis_url"]
