"""A claim's dial requests leave for the outbox publisher as soon as the claim commits, not
after the rest of the dispatcher's round: here the lease check that follows the claim is
held up by a lock (as by any slow transaction), and the publisher must already have been
told. Real PostgreSQL; the witness that the round has reached the lease check is the
dispatcher's own backend waiting on the lock, in pg_stat_activity."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import make_engine, transaction
from services.common.tenancy import TenantDefaults
from services.dispatcher.scheduler import Scheduler
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.wakeups import Wakeups
from tests.support.seed import add_queue

DEFAULTS = TenantDefaults(max_in_progress=10_000, calls_per_second=10_000.0)
_TASK = """
    INSERT INTO tasks (queue_id, client_id, name, a_number, b_number, extension_id,
                       try_count, try_again_pause, url_before, url_before_again, url_success,
                       url_after, start_time_utc, next_run_at, callback_params, status,
                       attempts, cdr, lease_expires_at)
    VALUES (:queue, 'acme', '', '101', '102', 0, 1, 60, '', '', '', '', now(), now(), '{}',
            :status, :attempts, :cdr, :lease)
    RETURNING id
"""


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=3)
    yield engine
    await engine.dispose()


async def lock_waiters(engine: AsyncEngine) -> int:
    async with transaction(engine) as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        )
        return int(found.scalar_one())


async def test_the_publisher_is_told_before_the_lease_check(engine: AsyncEngine) -> None:
    lost_call = str(uuid.uuid4())
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        # An attempt whose lease ran out with its call dialed: the lease check marks the
        # call lost, an UPDATE of its calls row.
        params = {"queue": queue, "status": "executed", "attempts": 1, "cdr": lost_call}
        stale = (
            await conn.execute(text(_TASK.replace(":lease", "now() - interval '1 s'")), params)
        ).scalar_one()
        await conn.execute(
            text("""
                INSERT INTO calls (call_uuid, client_id, queue_id, task_id, attempt, backend,
                                   dialed_at, dial_by)
                VALUES (:cdr, 'acme', :queue, :task, 1, 'sip', now(), now())
            """),
            {"cdr": lost_call, "queue": queue, "task": stale},
        )
        # A task due now: the claim comes first in the round.
        due = {"queue": queue, "status": "scheduled", "attempts": 0, "cdr": "", "lease": None}
        await conn.execute(text(_TASK), due)
    outbox_ready = asyncio.Event()
    settings = DispatcherSettings.model_construct(dialer_capacity=0, lookahead_seconds=0.0)
    scheduler = Scheduler(engine, settings, Wakeups(0.0), outbox_ready, DEFAULTS)
    async with engine.connect() as holder:
        await holder.execute(
            text("SELECT 1 FROM calls WHERE call_uuid = :cdr FOR UPDATE"), {"cdr": lost_call}
        )
        running = asyncio.create_task(scheduler.run())
        while not await lock_waiters(engine):  # the lease check is blocked on our lock
            assert not running.done()
            await asyncio.sleep(0.01)
        assert outbox_ready.is_set()
        await holder.rollback()
    scheduler.stop()
    await running
