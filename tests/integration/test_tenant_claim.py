"""A tenant's quotas in the claim itself, with several dispatchers claiming at once on a
real PostgreSQL: the in-progress quota is exact across the tenant's queues, and the
calls-per-second bucket lets out no more than it holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
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
async def engines(migrated_database: str) -> AsyncIterator[list[AsyncEngine]]:
    engines = [make_engine(migrated_database, pool_size=2) for _ in range(4)]
    yield engines
    for engine in engines:
        await engine.dispose()


async def add_due_tasks(
    engine: AsyncEngine, queues: int, per_queue: int, params: dict[str, Any] | None = None
) -> None:
    async with transaction(engine) as conn:
        for _ in range(queues):
            queue = await add_queue(conn)
            await add_tasks(conn, queue, per_queue, callback_params=params or {})


async def set_tenant(engine: AsyncEngine, **quotas: float) -> None:
    columns = ", ".join(quotas)
    values = ", ".join(f":{name}" for name in quotas)
    async with transaction(engine) as conn:
        await conn.execute(
            text(f"INSERT INTO tenants (client_id, {columns}) VALUES ('acme', {values})"),
            quotas,
        )


async def executed(engine: AsyncEngine) -> int:
    async with transaction(engine) as conn:
        found = await conn.execute(text("SELECT count(*) FROM tasks WHERE status = 'executed'"))
        return int(found.scalar_one())


async def db_clock(engine: AsyncEngine) -> datetime:
    """The database's clock, the one the token buckets refill by."""
    async with transaction(engine) as conn:
        moment: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return moment


def dispatcher(engine: AsyncEngine) -> Scheduler:
    settings = DispatcherSettings.model_construct(dialer_capacity=0, lookahead_seconds=0.0)
    return Scheduler(engine, settings, Wakeups(0.0), asyncio.Event(), DEFAULTS)


async def test_in_progress_quota_is_exact_with_four_dispatchers(
    engines: list[AsyncEngine],
) -> None:
    await set_tenant(engines[0], max_in_progress=5)
    await add_due_tasks(engines[0], queues=3, per_queue=10)  # limits 10 each: 30 could start
    dispatchers = [dispatcher(engine) for engine in engines]

    for _ in range(5):  # passes at once, again and again
        await asyncio.gather(*(d._claim_pass() for d in dispatchers))

    assert await executed(engines[0]) == 5


async def test_calls_per_second_bucket_holds_a_seconds_worth(engines: list[AsyncEngine]) -> None:
    await set_tenant(engines[0], calls_per_second=3)
    await add_due_tasks(engines[0], queues=2, per_queue=10)
    dispatchers = [dispatcher(engine) for engine in engines]

    before = await db_clock(engines[0])
    passes = await asyncio.gather(*(d._claim_pass() for d in dispatchers))
    after = await db_clock(engines[0])

    # A full bucket holds 3 calls; the passes took those, plus at most what refilled while
    # they ran by the database's clock (3 a second: none, unless the machine stalled them
    # for a third of a second). A bound the passes' own time sets, not a number.
    claimed = sum(p.claimed for p in passes)
    assert 3 <= claimed <= 3 + int(3 * (after - before).total_seconds())
    held = [p for p in passes if p.retry_in is not None]
    assert all(0 < p.retry_in <= 1 / 3 for p in held if p.retry_in is not None)


async def test_every_a_number_rung_at_once_counts_as_a_call(engines: list[AsyncEngine]) -> None:
    """A task rings its A number and its extended A numbers together: 3 calls each here."""
    await set_tenant(engines[0], calls_per_second=3)
    await add_due_tasks(engines[0], 1, 10, {"extended_a_numbers": ["103", "104"]})

    first = await dispatcher(engines[0])._claim_pass()

    assert first.claimed == 3  # the bucket's 3, counted in tasks as they are claimed ...
    async with transaction(engines[0]) as conn:
        tokens = (await conn.execute(text("SELECT rate_tokens FROM tenants"))).scalar_one()
    # ... but 9 calls were spent from the full bucket of a tenant's first claim (no refill
    # to count): it is in debt, and the tenant waits it out.
    assert tokens == 3 - 9
    assert first.retry_in is not None and first.retry_in > 2
