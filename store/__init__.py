"""Storage adapters: PostgreSQL (schema, migrations, the durable record) and Redis (status cache).

Thin adapters with no business logic: the bridge decides, the store records each decision
atomically. PostgreSQL holds the truth; Redis is a cache that can be rebuilt from it.
"""

from store.cache import CacheUnavailable, StatusCache
from store.migrations import MIGRATIONS, migrate
from store.postgres import (
    BarrierRow,
    BarrierStore,
    CommandRecord,
    EventFilter,
    EventRow,
    IdempotentAnswer,
    KeyClaim,
    NewCommand,
    StoreUnavailable,
)

__all__ = [
    "MIGRATIONS",
    "BarrierRow",
    "BarrierStore",
    "CacheUnavailable",
    "CommandRecord",
    "EventFilter",
    "EventRow",
    "IdempotentAnswer",
    "KeyClaim",
    "NewCommand",
    "StatusCache",
    "StoreUnavailable",
    "migrate",
]
