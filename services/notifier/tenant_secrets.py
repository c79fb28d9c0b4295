"""Per-client webhook secrets: which sign a client's webhooks now, and their rotation.

A client has no row until its first rotation: it signs with version 1, derived from the
master key (what every client had before; receivers see no change on upgrade, and the
notifier needs no INSERT on the table). A rotation stores a random new version as the
current one and gives the previous one an overlap (default 24 h) during which both sign;
an older one still in its overlap stops at once, so that at most two sign at a time. The
table: services/common/models.py `WebhookSecret`; at rest: services/notifier/keyring.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.db import transaction
from services.notifier import repository
from services.notifier.keyring import Keyring, new_secret

# Cached clients past this many are forgotten (those whose time is up first).
_CACHE_LIMIT = 10_000


class TenantSecrets:
    """The notifier's view: a client's secrets that sign now, newest first, read from the
    database and kept `cache_seconds` (a rotation reaches the webhooks within that long)."""

    def __init__(self, engine: AsyncEngine, master_key: str, cache_seconds: float) -> None:
        self._engine = engine
        self._keyring = Keyring(master_key)
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def signing(self, client_id: str) -> list[str]:
        """Raises StorageUnavailable (the database) or SecretUnreadable (the master key)."""
        now = time.monotonic()
        cached = self._cache.get(client_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with transaction(self._engine) as conn:
            rows = await repository.signing_secrets(conn, client_id)
        found = [self._keyring.open(client_id, r.version, r.sealed) for r in rows]
        secrets = found or [self._keyring.derived(client_id)]
        if self._cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                while len(self._cache) >= _CACHE_LIMIT:
                    del self._cache[min(self._cache, key=lambda k: self._cache[k][0])]
            self._cache[client_id] = (now + self._cache_seconds, secrets)
        return secrets


@dataclass(frozen=True)
class SecretVersion:
    """One version of a client's secret, as the operator's listing shows it."""

    version: int
    secret: str
    created_at: datetime | None  # None: the derived version 1, never stored
    retires_at: datetime | None  # None: current
    live: bool


async def versions(conn: AsyncConnection, keyring: Keyring, client_id: str) -> list[SecretVersion]:
    """Every version of a client's secret, newest first (the derived version 1 for a client
    without a row)."""
    rows = await repository.list_secrets(conn, client_id)
    if not rows:
        derived = keyring.derived(client_id)
        return [SecretVersion(1, derived, None, None, True)]
    return [
        SecretVersion(
            r.version,
            keyring.open(client_id, r.version, r.sealed),
            r.created_at,
            r.retires_at,
            bool(r.live) or index == 0,  # the newest always signs
        )
        for index, r in enumerate(rows)
    ]


async def rotate(
    conn: AsyncConnection, keyring: Keyring, client_id: str, overlap_seconds: float
) -> SecretVersion:
    """A new random current secret; the previous one signs beside it for `overlap_seconds`,
    any older one stops now. Returns the new version (with its secret)."""
    rows = await repository.list_secrets(conn, client_id, for_update=True)
    if rows:
        newest = int(rows[0].version)
        await repository.retire_secrets(conn, client_id, below_version=newest, in_seconds=0)
        await repository.retire_secrets(
            conn, client_id, below_version=newest + 1, in_seconds=overlap_seconds
        )
    else:
        # Until now the client signed with the derived version 1: stored so that it can
        # retire like any other (a concurrent first rotation fails on its primary key).
        newest = 1
        derived = keyring.derived(client_id)
        await repository.add_secret(
            conn, client_id, 1, keyring.seal(client_id, 1, derived), overlap_seconds
        )
    secret = new_secret()
    version = newest + 1
    await repository.add_secret(
        conn, client_id, version, keyring.seal(client_id, version, secret), None
    )
    return SecretVersion(version, secret, None, None, True)


async def retire_previous(conn: AsyncConnection, client_id: str) -> None:
    """End the overlap now: only the current secret signs."""
    rows = await repository.list_secrets(conn, client_id, for_update=True)
    if rows:
        await repository.retire_secrets(
            conn, client_id, below_version=int(rows[0].version), in_seconds=0
        )
