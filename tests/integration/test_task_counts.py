"""The tasks-by-status gauge's numbers, on a database of its own: counted in a small table,
estimated from PostgreSQL's statistics in a big one (but `executed`, always counted)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import make_engine, transaction
from services.dispatcher import repository
from tests.support.seed import add_queue, add_tasks

STATUSES = {"scheduled": 3000, "delayed": 1000, "executed": 400, "finished": 5600}


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=1)
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        for status, count in STATUSES.items():
            await add_tasks(conn, queue, count, status=status)
    yield engine
    await engine.dispose()


async def counts(engine: AsyncEngine, exact_up_to: int) -> dict[str, int]:
    async with transaction(engine) as conn:
        return await repository.count_tasks_by_status(conn, exact_up_to)


async def test_a_big_table_is_estimated_from_its_statistics_but_executed_counted(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE tasks"))  # samples every row of a table this small
        await conn.commit()
    async with transaction(engine) as conn:  # 50 more executed, after the statistics
        await conn.execute(
            text(
                "UPDATE tasks SET status = 'executed' WHERE id IN "
                "(SELECT id FROM tasks WHERE status = 'scheduled' LIMIT 50)"
            )
        )

    estimated = await counts(engine, exact_up_to=1000)

    assert estimated == STATUSES | {"executed": 450}
    assert await counts(engine, exact_up_to=100_000) == STATUSES | {
        "scheduled": 2950,
        "executed": 450,
    }
