"""LISTEN on a PostgreSQL channel and hand each notification's payload to a callback.

A NOTIFY is delivered at commit, so a woken listener always sees the committed rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from services.common.db import libpq_url
from services.common.retry import Backoff

log = logging.getLogger(__name__)


# Handed to the callback after (re)connecting: anything may have changed meanwhile.
RECONNECTED = ""


async def listen_forever(database_url: str, channel: str, on_notify: Callable[[str], None]) -> None:
    """Call `on_notify(payload)` on every notification; reconnect after a failure and call
    it with RECONNECTED, so that the listener re-checks everything."""
    backoff = Backoff(first=0.2, cap=5.0)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                libpq_url(database_url), autocommit=True
            ) as conn:
                await conn.execute(f"LISTEN {channel}")
                backoff.reset()
                on_notify(RECONNECTED)
                async for notification in conn.notifies():
                    on_notify(notification.payload)
        except asyncio.CancelledError:
            raise
        except (psycopg.Error, OSError) as err:
            log.warning(
                "listen connection lost",
                extra={"action": "listen_retry", "channel": channel, "error": str(err)},
            )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(backoff.next_delay())
