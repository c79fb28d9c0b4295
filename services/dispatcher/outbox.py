"""Publishes the outbox to JetStream, oldest first, and forgets what JetStream stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import bus
from services.common.db import transaction
from services.common.retry import Backoff
from services.dispatcher import repository

log = logging.getLogger(__name__)

# Rows left by a dispatcher that died between commit and publish are picked up by the next
# activity of any replica; when the system is otherwise idle, by this safety-net timer.
IDLE_RECHECK_SECONDS = 5.0


class OutboxPublisher:
    def __init__(self, engine: AsyncEngine, jetstream: JetStreamContext, batch: int) -> None:
        self._engine = engine
        self._jetstream = jetstream
        self._batch = batch
        self.ready = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self.ready.set()

    async def run(self) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while not self._stopping:
            self.ready.clear()
            try:
                published = await self.publish_batch()
                backoff.reset()
            except Exception as err:
                log.warning(
                    "outbox publish failed", extra={"action": "outbox_retry", "error": repr(err)}
                )
                await asyncio.sleep(backoff.next_delay())
                continue
            if published == self._batch:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ready.wait(), timeout=IDLE_RECHECK_SECONDS)

    async def publish_batch(self) -> int:
        """Publish one batch; the rows are deleted only after JetStream acknowledged all."""
        async with transaction(self._engine) as conn:
            rows = await repository.take_outbox_batch(conn, self._batch)
            if not rows:
                return 0
            await asyncio.gather(
                *(bus.publish(self._jetstream, r.subject, r.payload, r.msg_id) for r in rows)
            )
            await repository.delete_outbox(conn, [r.id for r in rows])
        return len(rows)

    async def flush(self) -> None:
        """Publish everything left (used at shutdown)."""
        while await self.publish_batch() == self._batch:
            pass
