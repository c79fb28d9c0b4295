"""Refreshes the gauges that are read from the database and NATS, not counted in passing."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import bus, metrics
from services.common.db import transaction
from services.common.models import TASK_STATUSES
from services.dispatcher import repository

log = logging.getLogger(__name__)


async def refresh_forever(
    engine: AsyncEngine, jetstream: JetStreamContext, interval_seconds: float
) -> None:
    while True:
        try:
            async with transaction(engine) as conn:
                counts = await repository.count_tasks_by_status(conn)
            for status in TASK_STATUSES:
                metrics.TASKS.labels(status).set(counts.get(status, 0))
            # Every service's consumer, for the lag gauge.
            for consumer in bus.CONSUMERS:
                info = await jetstream.consumer_info(consumer.stream.name, consumer.durable)
                metrics.CONSUMER_PENDING.labels(consumer.durable).set(info.num_pending or 0)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a consumer not created yet, NATS or PostgreSQL down
            log.debug("stats not refreshed", extra={"action": "stats", "error": repr(err)})
        await asyncio.sleep(interval_seconds)
