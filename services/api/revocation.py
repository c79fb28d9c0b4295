"""Revocation times of clients' tokens, read from the database and kept for a short while.

Every call checks its token against its client's revocation time; reading it from PostgreSQL
on every call costs a round trip, so each api process keeps what it read for a few seconds
(API_REVOCATION_CACHE_SECONDS; 0 reads it every time).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime

Loader = Callable[[str], Awaitable[datetime | None]]

# Past this many clients the cache starts over rather than grow without bound.
MAX_CLIENTS = 100_000


class RevocationTimes:
    """A client's tokens_not_before, read through `load` at most once per `ttl` seconds."""

    def __init__(
        self, load: Loader, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._clock = clock
        self._read: dict[str, tuple[float, datetime | None]] = {}

    async def tokens_not_before(self, client_id: str) -> datetime | None:
        now = self._clock()
        cached = self._read.get(client_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        value = await self._load(client_id)
        if self._ttl > 0:
            if len(self._read) >= MAX_CLIENTS:
                self._read.clear()
            self._read[client_id] = (now, value)
        return value
