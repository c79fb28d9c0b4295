"""The moment a task's calling window closes, on its dial request (issue 20): put there by
the claim, in the task's zone, and again when an attempt is dialed again after its lease.
Real PostgreSQL; the requests are read from the outbox as the publisher would send them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from scheduler.v1 import events_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import make_engine, transaction
from services.common.tenancy import TenantDefaults
from services.dispatcher.scheduler import Scheduler
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.wakeups import Wakeups
from tests.support.seed import add_queue, add_tasks

DEFAULTS = TenantDefaults(max_in_progress=10_000, calls_per_second=10_000.0)


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=2)
    yield engine
    await engine.dispose()


def wall(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}"


async def windowed_queue_with_tasks(engine: AsyncEngine, zones: list[str]) -> datetime:
    """A queue whose window (UTC) is open from an hour ago until an hour from now, with a
    task due now in each zone ("": the window's own); returns the closing."""
    async with transaction(engine) as conn:
        now: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
        closing = now.replace(microsecond=0) + timedelta(hours=1)
        condition = {
            "start_datetime": wall(now - timedelta(hours=1)),
            "end_datetime": wall(closing),
        }
        interval = await conn.execute(
            text("""
                INSERT INTO intervals (client_id, name, timezone, conditions)
                VALUES ('acme', '', 'UTC', CAST(:conditions AS jsonb)) RETURNING id
            """),
            {"conditions": json.dumps([condition])},
        )
        queue = await add_queue(conn)
        await conn.execute(
            text("UPDATE queues SET interval_id = :interval WHERE id = :queue"),
            {"interval": interval.scalar_one(), "queue": queue},
        )
        for zone in zones:
            await add_tasks(conn, queue, name=zone, callback_params={"timezone": zone})
    return closing


async def dial_requests(engine: AsyncEngine) -> dict[str, int]:
    """window_closes_at_unix_ms of every dial request in the outbox, by task name, and
    empties the outbox."""
    found: dict[str, int] = {}
    async with transaction(engine) as conn:
        rows = await conn.execute(
            text("DELETE FROM outbox WHERE subject = 'callbacks.dial' RETURNING payload")
        )
        payloads = [bytes(row.payload) for row in rows]
        tasks = await conn.execute(text("SELECT id, name FROM tasks"))
        names: dict[int, str] = {row.id: row.name for row in tasks}
    for payload in payloads:
        for request in events_pb2.DialRequests.FromString(payload).requests:
            found[names[request.task_id]] = request.window_closes_at_unix_ms
    return found


def unix_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def test_a_claimed_task_and_its_attempt_dialed_again_carry_the_closing(
    engine: AsyncEngine,
) -> None:
    # A datetime range is wall-clock in the zone it is read in: 'Etc/GMT+1' is an hour
    # behind UTC, so the range ends there an hour later.
    closing = await windowed_queue_with_tasks(engine, ["", "Etc/GMT+1"])
    settings = DispatcherSettings.model_construct(
        dialer_capacity=0, lookahead_seconds=0.0, attempt_lease_seconds=60.0, max_redials=5
    )
    scheduler = Scheduler(engine, settings, Wakeups(0.0), asyncio.Event(), DEFAULTS)

    claimed = await scheduler._claim_pass()

    assert claimed.claimed == 2
    assert await dial_requests(engine) == {
        "": unix_ms(closing),
        "Etc/GMT+1": unix_ms(closing + timedelta(hours=1)),
    }

    # No call placed before the leases ran out: dialed again, with the closing again.
    async with transaction(engine) as conn:
        await conn.execute(text("UPDATE tasks SET lease_expires_at = now()"))
    assert await scheduler._expire_leases() == 2
    assert await dial_requests(engine) == {
        "": unix_ms(closing),
        "Etc/GMT+1": unix_ms(closing + timedelta(hours=1)),
    }


async def test_a_queue_without_a_window_puts_no_closing(engine: AsyncEngine) -> None:
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        await add_tasks(conn, queue, name="plain")
    settings = DispatcherSettings.model_construct(dialer_capacity=0, lookahead_seconds=0.0)
    scheduler = Scheduler(engine, settings, Wakeups(0.0), asyncio.Event(), DEFAULTS)

    assert (await scheduler._claim_pass()).claimed == 1
    assert await dial_requests(engine) == {"plain": 0}
