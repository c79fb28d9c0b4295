"""The queue counters of migration 0017 (task_count, sched_task_count, last_call_at), kept by
triggers whoever writes: the api's bulk add and delete, the dispatcher's claim and end of an
attempt, the retention purge, a queue's delete. After every step they equal a count(*) of
the tasks, read by another connection once the writer committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import repository as api_repository
from services.api import validation
from services.common.db import make_engine, transaction
from services.dispatcher import repository
from tests.support.postgres import alembic
from tests.support.seed import add_queue

TASK = {"a_number": "+15550000000", "b_number": "+15550000001"}


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=4)
    yield engine
    await engine.dispose()


async def add_tasks(engine: AsyncEngine, queue: int, how_many: int) -> list[int]:
    new = validation.new_tasks([TASK] * how_many)
    async with transaction(engine) as conn:
        rows = await api_repository.insert_tasks(conn, "acme", queue, new)
    return [int(row.id) for row in rows]


async def counters(engine: AsyncEngine, queue: int) -> tuple[int, int]:
    async with transaction(engine) as conn:
        row = await api_repository.select_queue(conn, "acme", queue)
    assert row is not None
    return int(row.task_count), int(row.sched_task_count)


async def truth(engine: AsyncEngine, queue: int) -> tuple[int, int]:
    async with transaction(engine) as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE status <> 'finished') "
                    "FROM tasks WHERE queue_id = :q"
                ),
                {"q": queue},
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_counters_follow_every_writer(engine: AsyncEngine) -> None:
    async with transaction(engine) as conn:
        queue, other = await add_queue(conn), await add_queue(conn)
    assert await counters(engine, queue) == (0, 0)  # no counter row before the first task
    async with transaction(engine) as conn:
        # The dialer's call-record transaction writes calls only: no trigger lengthens it.
        on_calls = (
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'calls'::regclass AND NOT tgisinternal"
        )
        assert (await conn.execute(text(on_calls))).scalar_one() == 0

    await add_tasks(engine, queue, 30)
    await add_tasks(engine, other, 5)
    assert await counters(engine, queue) == await truth(engine, queue) == (30, 30)

    # The claim: counts unchanged, the queue's last call set.
    async with transaction(engine) as conn:
        assert await repository.lock_queue(conn, queue) is not None
        claimed = await repository.claim_due_tasks(conn, queue, 10, 60.0)
        last_call = (
            await conn.execute(
                text("SELECT last_call_at, now() FROM queues WHERE id = :q"), {"q": queue}
            )
        ).one()
    assert len(claimed) == 10
    assert last_call[0] is not None and last_call[0] >= last_call[1]
    assert await counters(engine, queue) == (30, 30)

    # Ends of attempts of two queues in one statement: 6 finished, 4 delayed.
    ids = [int(row.id) for row in claimed]
    changes = [
        {"task_id": task_id, "status": "finished" if i < 6 else "delayed", "finish_result":
         "success" if i < 6 else "", "finish_comment": "", "retry_after": None if i < 6 else 60}
        for i, task_id in enumerate(ids)
    ]  # fmt: skip
    async with transaction(engine) as conn:
        await repository.end_attempts(conn, changes)
    assert await counters(engine, queue) == await truth(engine, queue) == (30, 24)

    # The api's delete of a task still to run, and of a finished one.
    async with transaction(engine) as conn:
        assert await api_repository.delete_task(conn, "acme", queue, ids[0])  # finished
        assert await api_repository.delete_task(conn, "acme", queue, ids[-1])  # delayed
    assert await counters(engine, queue) == await truth(engine, queue) == (28, 23)

    # The retention purge of finished tasks.
    async with transaction(engine) as conn:
        await conn.execute(
            text(
                "UPDATE tasks SET finished_at = now() - interval '100 days' "
                "WHERE status = 'finished'"
            )
        )
        await repository.purge_finished_tasks(conn, timedelta(days=90), 1000)
    assert await counters(engine, queue) == await truth(engine, queue) == (23, 23)
    assert await counters(engine, other) == await truth(engine, other) == (5, 5)

    # A queue's delete takes its counters with it.
    async with transaction(engine) as conn:
        assert await api_repository.delete_queue(conn, "acme", queue) is not None
        left = await conn.execute(
            text("SELECT count(*) FROM queue_task_counts WHERE queue_id = :q"), {"q": queue}
        )
        assert left.scalar_one() == 0


async def test_concurrent_bulk_adds_and_ends_stay_exact(engine: AsyncEngine) -> None:
    """Writers of one queue at once (bulk adds, and ends of attempts of two queues in
    opposite orders) neither lose an update nor deadlock."""
    async with transaction(engine) as conn:
        first, second = await add_queue(conn), await add_queue(conn)
    a = await add_tasks(engine, first, 50)
    b = await add_tasks(engine, second, 50)

    async def finish(ids: list[int]) -> None:
        changes = [
            {"task_id": i, "status": "finished", "finish_result": "failed",
             "finish_comment": "", "retry_after": None}
            for i in ids
        ]  # fmt: skip
        async with transaction(engine) as conn:
            await repository.end_attempts(conn, changes)

    await asyncio.gather(
        add_tasks(engine, first, 100),
        add_tasks(engine, first, 100),
        finish(a[:25] + b[:25]),
        finish(b[25:] + a[25:]),
    )
    assert await counters(engine, first) == await truth(engine, first) == (250, 200)
    assert await counters(engine, second) == await truth(engine, second) == (50, 0)


async def test_the_migration_backfills_existing_queues(empty_database: str) -> None:
    assert alembic(empty_database, "upgrade", "0016").returncode == 0
    engine = make_engine(empty_database, pool_size=1)
    try:
        async with transaction(engine) as conn:
            queue = await add_queue(conn)
            await conn.execute(
                text("""
                    INSERT INTO tasks (queue_id, client_id, name, status, a_number, b_number,
                                       extension_id, try_count, try_again_pause, url_before,
                                       url_before_again, url_success, url_after,
                                       start_time_utc, next_run_at, callback_params)
                    SELECT :queue, 'acme', '', s, '1', '2', 0, 1, 60, '', '', '', '', now(),
                           now(), '{}'
                    FROM unnest(ARRAY['scheduled', 'finished', 'finished', 'delayed']) s
                """),
                {"queue": queue},
            )
        upgrade = alembic(empty_database, "upgrade", "head")
        assert upgrade.returncode == 0, upgrade.stderr
        assert await counters(engine, queue) == (4, 2)
    finally:
        await engine.dispose()
