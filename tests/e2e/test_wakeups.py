"""What new tasks tell the dispatchers (migration 0007): nothing for a switched-off queue;
for a switched-on one, how long until the earliest new task falls due."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from deploy.local.stack import Stack
from services.common.db import libpq_url
from services.dispatcher.repository import WAKE_CHANNEL
from services.dispatcher.wakeups import DUE_IN
from tests.support.queues import create_queue
from tests.support.waiting import WAIT_SECONDS
from tests.support.wire_times import whole_seconds_from_now, wire_time


@pytest.fixture
async def listening(stack: Stack) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    conn = await psycopg.AsyncConnection.connect(libpq_url(stack.database_url), autocommit=True)
    await conn.execute(f"LISTEN {WAKE_CHANNEL}")
    yield conn
    await conn.close()


async def announced_due_in(conn: psycopg.AsyncConnection[object], count: int) -> list[float]:
    """Seconds announced by the next `count` new-tasks notifications (others are skipped).
    One generator for all: leaving it drops what arrived in the same packet."""
    found: list[float] = []
    async for notification in conn.notifies(timeout=WAIT_SECONDS):
        if notification.payload.startswith(DUE_IN):
            found.append(float(notification.payload.removeprefix(DUE_IN)))
            if len(found) == count:
                return found
    raise AssertionError(f"only {found} announced within {WAIT_SECONDS} s")


def due_in_when_added(stack: Stack, task_ids: list[int]) -> float:
    """Seconds from the tasks' insert (create_date_utc, the transaction's now(), as the
    trigger's) until the earliest of them is due: what their insert should announce."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT EXTRACT(EPOCH FROM min(next_run_at) - min(create_date_utc))::float8 "
            "FROM tasks WHERE id = ANY(%s)",
            (task_ids,),
        ).fetchone()
    assert row is not None and row[0] is not None
    seconds: float = row[0]
    return seconds


async def test_new_tasks_announce_when_the_earliest_falls_due_only_for_queues_that_are_on(
    stack: Stack, api: httpx.Client, tenant: str, listening: psycopg.AsyncConnection[object]
) -> None:
    switched_off = create_queue(api, tenant, status="off")
    switched_on = create_queue(api, tenant, status="on")
    in_an_hour = wire_time(whole_seconds_from_now(3600))
    in_two_hours = wire_time(whole_seconds_from_now(7200))

    # Notifications arrive in commit order: had the first POST sent one, it would come first.
    switched_off.add_one(start_time_utc=in_an_hour)
    alone = switched_on.add_one(start_time_utc=in_two_hours)
    together = switched_on.add(
        {"a_number": "+15550001", "b_number": "101", "start_time_utc": in_two_hours},
        {"a_number": "+15550002", "b_number": "101", "start_time_utc": in_an_hour},
    )

    later, earlier = await announced_due_in(listening, 2)
    # Exactly what the database had at each insert (its clock, not ours: no margin for how
    # long the requests took); about two hours, then about one.
    assert later == pytest.approx(due_in_when_added(stack, [alone["id"]]), abs=1e-3)
    assert earlier == pytest.approx(due_in_when_added(stack, [t["id"] for t in together]), abs=1e-3)
    assert 0 < earlier < later <= 7200


async def test_a_task_due_now_announces_it_is_due(
    api: httpx.Client, tenant: str, listening: psycopg.AsyncConnection[object]
) -> None:
    queue = create_queue(api, tenant, status="on")

    queue.add_one()  # no start time: now

    assert await announced_due_in(listening, 1) == [0]
