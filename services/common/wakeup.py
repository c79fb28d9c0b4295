"""LISTEN on a PostgreSQL channel and turn notifications into an asyncio.Event.

A NOTIFY is delivered at commit, so a woken listener always sees the committed rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from services.common.db import libpq_url

log = logging.getLogger(__name__)


async def listen_forever(database_url: str, channel: str, wake: asyncio.Event) -> None:
    """Set `wake` on every notification; reconnect (and wake, to re-check) after a failure."""
    delay = 0.2
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                libpq_url(database_url), autocommit=True
            ) as conn:
                await conn.execute(f"LISTEN {channel}")
                delay = 0.2
                # Anything may have happened while we were not listening.
                wake.set()
                async for _ in conn.notifies():
                    wake.set()
        except asyncio.CancelledError:
            raise
        except (psycopg.Error, OSError) as err:
            log.warning(
                "listen connection lost",
                extra={"action": "listen_retry", "channel": channel, "error": str(err)},
            )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
