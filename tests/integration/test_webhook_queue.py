"""The notifier's queue of deliveries, on a database of its own: which delivery may be sent
now, and when the sender should look again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import make_engine, transaction
from services.notifier import repository
from services.notifier.limits import Caps, InFlight

LEASE = 15.0
WAIT = 600.0  # missing_event_wait_seconds
CAPS = Caps(total=200, per_host=100, per_tenant=100)


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=1)
    yield engine
    await engine.dispose()


async def add(engine: AsyncEngine, task_id: int, seq: int, **values: Any) -> None:
    """A pending delivery of task_id; next_in / age are seconds from / before now."""
    row = {"predecessors": 0, "next_in": 0.0, "age": 0.0} | values
    async with transaction(engine) as conn:
        await conn.execute(
            text("""
                INSERT INTO webhook_deliveries (event_id, client_id, task_id, seq, predecessors,
                                                event, url, body, next_attempt_at, created_at)
                VALUES (:event_id, 'acme', :task_id, :seq, :predecessors, 'after',
                        'https://hooks.example.com/', '{}',
                        now() + make_interval(secs => :next_in),
                        now() - make_interval(secs => :age))
            """),
            {"event_id": f"{task_id}:{seq}", "task_id": task_id, "seq": seq} | row,
        )


async def claimable(engine: AsyncEngine) -> list[str]:
    async with transaction(engine) as conn:
        rows = await repository.claim_due(conn, InFlight(CAPS).room(100), LEASE, WAIT)
    return sorted(row.event_id for row in rows)


async def db_clock(engine: AsyncEngine) -> datetime:
    """The database's clock, the one due times are decided by."""
    async with transaction(engine) as conn:
        moment: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return moment


def seconds(since: datetime, until: datetime) -> float:
    return (until - since).total_seconds()


async def next_due(engine: AsyncEngine) -> float | None:
    async with transaction(engine) as conn:
        return await repository.seconds_until_next_due(conn, WAIT)


async def test_a_delivery_behind_a_retrying_one_does_not_make_the_sender_look_now(
    engine: AsyncEngine,
) -> None:
    added = await db_clock(engine)
    await add(engine, 1, seq=10, next_in=3600)  # `before`, failed once, retried in an hour
    await add(engine, 1, seq=19, next_in=0)  # `after`, due now but must wait for it

    assert await claimable(engine) == []
    due = await next_due(engine)
    # An hour from the insert, less what passed since by the database's clock (no margin).
    assert due is not None and 3600 - seconds(added, await db_clock(engine)) <= due <= 3600


async def test_the_first_due_delivery_of_each_task_goes(engine: AsyncEngine) -> None:
    await add(engine, 1, seq=10)
    await add(engine, 1, seq=19)
    await add(engine, 2, seq=10, next_in=60)
    await add(engine, 3, seq=10)

    due = await next_due(engine)
    assert due is not None and due <= 0
    assert await claimable(engine) == ["1:10", "3:10"]


async def test_an_event_that_never_came_holds_the_next_one_for_a_bounded_time(
    engine: AsyncEngine,
) -> None:
    added = await db_clock(engine)
    await add(engine, 1, seq=19, predecessors=1)  # its `before` has not reached the notifier

    assert await claimable(engine) == []
    due = await next_due(engine)
    assert due is not None and WAIT - seconds(added, await db_clock(engine)) <= due <= WAIT

    await add(engine, 2, seq=19, predecessors=1, age=WAIT + 1)  # waited long enough

    assert await claimable(engine) == ["2:19"]


async def test_nothing_pending_means_no_wake_up(engine: AsyncEngine) -> None:
    assert await next_due(engine) is None
