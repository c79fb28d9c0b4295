"""The retention purge against PostgreSQL: finished tasks older than the retention period go,
with their calls and settled webhook deliveries; nothing else does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.db import make_engine, transaction
from services.dispatcher import housekeeping, repository
from tests.support.seed import add_queue


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=1)
    yield engine
    await engine.dispose()


async def add_task(
    conn: AsyncConnection, queue: int, status: str, finished_days_ago: float | None
) -> int:
    """A task in `status`; finished that many days ago (None: no finish time, as a task
    finished before migration 0013), with one call and a delivered and a pending webhook."""
    row = await conn.execute(
        text("""
            INSERT INTO tasks (queue_id, client_id, name, a_number, b_number, extension_id,
                               try_count, try_again_pause, url_before, url_before_again,
                               url_success, url_after, start_time_utc, next_run_at,
                               callback_params, status, attempts, finished_at)
            VALUES (:queue, 'acme', 'n', '+15550000000', '+15550000001', 0, 1, 60, '', '',
                    '', '', now() - interval '400 days', now() - interval '400 days', '{}',
                    :status, 1,
                    now() - make_interval(secs => CAST(:days AS float) * 86400))
            RETURNING id
        """),
        {"queue": queue, "status": status, "days": finished_days_ago},
    )
    task_id = int(row.scalar_one())
    await conn.execute(
        text("""
            INSERT INTO calls (call_uuid, client_id, queue_id, task_id, attempt, backend,
                               result, dialed_at)
            VALUES (gen_random_uuid()::text, 'acme', :queue, :task, 1, 'simulated',
                    'connected', now())
        """),
        {"queue": queue, "task": task_id},
    )
    for seq, status in ((10, "delivered"), (11, "pending")):
        await conn.execute(
            text("""
                INSERT INTO webhook_deliveries (event_id, client_id, task_id, seq, event, url,
                                                body, status)
                VALUES (:event_id, 'acme', :task, :seq, 'after', 'https://example.test/',
                        '{}', :status)
            """),
            {"event_id": f"{task_id}:{seq}", "task": task_id, "seq": seq, "status": status},
        )
    return task_id


async def remaining(engine: AsyncEngine) -> tuple[set[int], set[int], set[tuple[int, str]]]:
    async with transaction(engine) as conn:
        tasks = set((await conn.execute(text("SELECT id FROM tasks"))).scalars())
        calls = set((await conn.execute(text("SELECT task_id FROM calls"))).scalars())
        deliveries = {
            (row.task_id, row.status)
            for row in await conn.execute(text("SELECT task_id, status FROM webhook_deliveries"))
        }
    return tasks, calls, deliveries


async def test_finished_tasks_past_the_retention_period_go_with_their_calls_and_webhooks(
    engine: AsyncEngine,
) -> None:
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        old = await add_task(conn, queue, "finished", 31)
        recent = await add_task(conn, queue, "finished", 29)
        waiting = await add_task(conn, queue, "delayed", None)
        await conn.execute(
            text("INSERT INTO tenant_usage (client_id, stored_tasks) VALUES ('acme', 3)")
        )

    purged = await housekeeping.purge_round(engine, retention_days=30)

    tasks, calls, deliveries = await remaining(engine)
    assert purged.tasks == 1 and purged.calls == 1 and purged.deliveries == 1
    assert tasks == calls == {recent, waiting}
    # A delivery still pending stays for the notifier, even of a purged task.
    assert (old, "pending") in deliveries and (old, "delivered") not in deliveries
    assert (recent, "delivered") in deliveries
    async with transaction(engine) as conn:  # the stored-tasks quota counts it out
        stored = await conn.execute(text("SELECT stored_tasks FROM tenant_usage"))
        assert stored.scalar_one() == 2


async def test_tasks_finished_before_the_finish_time_existed_get_their_last_due_time(
    engine: AsyncEngine,
) -> None:
    """Finished before migration 0013: no finished_at. The purge gives them their last due
    time (400 days ago here), then deletes them by it."""
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        legacy = await add_task(conn, queue, "finished", None)

    await housekeeping.purge_round(engine, retention_days=30)

    tasks, calls, _ = await remaining(engine)
    assert legacy not in tasks and legacy not in calls


async def test_a_retention_of_zero_keeps_everything(engine: AsyncEngine) -> None:
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        old = await add_task(conn, queue, "finished", 3650)

    purged = await housekeeping.purge_round(engine, retention_days=0)

    tasks, _, _ = await remaining(engine)
    assert purged.tasks == 0 and tasks == {old}


async def test_calls_of_deleted_tasks_go_once_ended_and_old(engine: AsyncEngine) -> None:
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        await conn.execute(
            text("""
                INSERT INTO calls (call_uuid, client_id, queue_id, task_id, attempt, backend,
                                   result, started_at, task_deleted)
                VALUES ('old-ended', 'acme', :q, 1, 1, 'sip', 'connected',
                        now() - interval '40 days', true),
                       ('old-running', 'acme', :q, 2, 1, 'sip', 'in_progress',
                        now() - interval '40 days', true),
                       ('recent-ended', 'acme', :q, 3, 1, 'sip', 'connected', now(), true)
            """),
            {"q": queue},
        )

    await housekeeping.purge_round(engine, retention_days=30)

    async with transaction(engine) as conn:
        left = set((await conn.execute(text("SELECT call_uuid FROM calls"))).scalars())
    assert left == {"old-running", "recent-ended"}


@pytest.mark.parametrize("status", ["finished", "delayed"])
async def test_an_attempt_that_ends_the_task_gives_it_its_finish_time(
    engine: AsyncEngine, status: str
) -> None:
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        task = await add_task(conn, queue, "executed", None)
        # One statement ends every attempt (end_attempt, for one task, is gone).
        await repository.end_attempts(
            conn,
            [
                {
                    "task_id": task,
                    "status": status,
                    "finish_result": "",
                    "finish_comment": "",
                    "retry_after": None,
                }
            ],
        )
        finished = await conn.execute(
            text("SELECT finished_at FROM tasks WHERE id = :id"), {"id": task}
        )
    assert (finished.scalar_one() is not None) == (status == "finished")
