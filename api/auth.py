"""Bearer tokens with roles: who may read, who may open and close barriers.

Tokens come from configuration as ``name:role:sha256hex``: only their SHA-256 is ever held, and
a presented token is compared with every known hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import IntEnum

import msgspec


class Role(IntEnum):
    """What a token may do; each role may do everything the ones below it may."""

    VIEWER = 1
    """Read statuses, events and commands; watch the WebSocket."""
    OPERATOR = 2
    """And open and close barriers."""
    ADMIN = 3
    """And everything else."""


class Principal(msgspec.Struct, frozen=True):
    """An authenticated caller."""

    name: str
    role: Role


class TokenConfigError(ValueError):
    """The token configuration is malformed."""


class TokenRegistry:
    """The known tokens, by their SHA-256."""

    def __init__(self, entries: list[tuple[str, Role, bytes]]) -> None:
        self._entries = entries

    @classmethod
    def parse(cls, config: str) -> TokenRegistry:
        """Parse ``name:role:sha256hex`` entries separated by commas."""
        entries: list[tuple[str, Role, bytes]] = []
        for raw in filter(None, (part.strip() for part in config.split(","))):
            try:
                name, role_name, digest = raw.split(":")
                role = Role[role_name.upper()]
                value = bytes.fromhex(digest)
            except (ValueError, KeyError):
                raise TokenConfigError(
                    f"token entry {raw.split(':')[0]!r} is not name:role:sha256hex "
                    "(role viewer, operator or admin)"
                ) from None
            if len(value) != hashlib.sha256().digest_size or not name:
                raise TokenConfigError(f"token entry {name!r}: the hash must be 64 hex digits")
            entries.append((name, role, value))
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        """Return who `token` belongs to, or None; the time taken does not depend on it."""
        presented = hash_token(token)
        found: Principal | None = None
        for name, role, digest in self._entries:
            if hmac.compare_digest(presented, digest):
                found = Principal(name, role)
        return found


def hash_token(token: str) -> bytes:
    """The SHA-256 of `token`, as configuration holds it."""
    return hashlib.sha256(token.encode()).digest()
