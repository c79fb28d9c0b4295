"""Deletes what is kept only for a while: Idempotency-Keys past their lifetime, and (the
retention period) finished tasks with their calls and webhook deliveries, and the calls of
deleted tasks. Phone numbers are personal data; nothing else would ever delete them.

Any number of dispatchers run it: each batch skips rows another one holds.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import metrics, retention
from services.common.db import transaction
from services.dispatcher import repository

log = logging.getLogger(__name__)

# Rows per transaction, and transactions per table per round: at most 10,000 tasks a round
# (with a round a minute, 14 M a day), never a transaction that holds many locks for long.
BATCH = 1000
BATCHES_PER_ROUND = 10


async def purge_round(engine: AsyncEngine, retention_days: float) -> repository.Purged:
    """One round of housekeeping; what the retention purge deleted."""
    async with transaction(engine) as conn:
        keys = await repository.delete_expired_idempotency_keys(
            conn, retention.IDEMPOTENCY_KEY_LIFETIME
        )
    metrics.ROWS_PURGED.labels("idempotency_keys").inc(keys)
    if retention_days <= 0:  # keep forever
        return repository.Purged(0, 0, 0)
    age = timedelta(days=retention_days)
    tasks = calls = deliveries = 0
    for _ in range(BATCHES_PER_ROUND):
        async with transaction(engine) as conn:
            given = await repository.give_finished_at(conn, BATCH)
            purged = await repository.purge_finished_tasks(conn, age, BATCH)
            orphans = await repository.purge_calls_of_deleted_tasks(conn, age, BATCH)
        tasks += purged.tasks
        calls += purged.calls + orphans
        deliveries += purged.deliveries
        if max(given, purged.tasks, orphans) < BATCH:
            break
    metrics.ROWS_PURGED.labels("tasks").inc(tasks)
    metrics.ROWS_PURGED.labels("calls").inc(calls)
    metrics.ROWS_PURGED.labels("webhook_deliveries").inc(deliveries)
    if tasks or calls:
        log.info(
            "purged",
            extra={"action": "purge", "tasks": tasks, "calls": calls, "deliveries": deliveries},
        )
    return repository.Purged(tasks, calls, deliveries)


async def purge_forever(engine: AsyncEngine, retention_days: float, interval: float) -> None:
    while True:
        try:
            await purge_round(engine, retention_days)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # PostgreSQL down: the next round catches up
            log.warning("purge skipped", extra={"action": "purge", "error": repr(err)})
        await asyncio.sleep(interval)
