"""The claim step alone, against the same database: ours vs pgqueuer's dequeue, at equal
batch sizes (BATCHES: 100 and 1,000 for each).

Ours: the dispatcher's three claim statements (lock_queue, count_in_flight, claim_due_tasks:
the queue's limit enforced) in one transaction, in a loop, then the claimed tasks marked
finished; the outbox, NATS, dialers and results are left out. The stack's dispatchers must be
stopped first (they would claim the same tasks). The dispatcher itself claims CLAIM_BATCH
(1,000) at a time for a lone busy queue.
pgqueuer: Queries.dequeue, then log_jobs(successful) for the batch, in a loop, on asyncpg (the
driver its docs recommend), one connection.
Each repeat starts clean: ours on a new queue whose tasks are deleted afterwards, pgqueuer on
an emptied queue and log.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import psycopg
from sqlalchemy import text

from services.common.db import make_engine, transaction
from services.dispatcher import repository
from services.dispatcher.scheduler import claim_share
from services.dispatcher.settings import DispatcherSettings

CLIENT = "bench"
BATCHES = (100, 1000)
# The dispatcher's own settings (its defaults; the bench does not read its environment):
# the batch it claims a lone queue's due tasks in.
CLAIM_BATCH: int = claim_share(DispatcherSettings.model_construct(), due_queues=1)
LEASE_SECONDS: float = DispatcherSettings.model_fields["attempt_lease_seconds"].default


def _make_due_tasks(dsn: str, count: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        queue = conn.execute(
            "INSERT INTO queues (client_id, name, comment, status, concurrent_task_limit) "
            "VALUES (%s, 'claim', '', 'on', %s) RETURNING id",
            (CLIENT, count),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            """
            INSERT INTO tasks (queue_id, client_id, name, a_number, b_number, extension_id,
                               try_count, try_again_pause, url_before, url_before_again,
                               url_success, url_after, start_time_utc, next_run_at,
                               callback_params)
            SELECT %s, %s, '', '+15550000000', '+15550000001', 0, 1, 60, '', '', '', '',
                   now() - interval '1 second', now() - interval '1 second', '{}'::jsonb
            FROM generate_series(1, %s)
            """,
            (queue, CLIENT, count),
        )
        conn.execute("ANALYZE tasks")
    return int(queue)


_MARK_FINISHED = text(
    "UPDATE tasks SET status = 'finished', lease_expires_at = NULL WHERE id = ANY(:ids)"
)


async def _ours(dsn: str, queue: int, count: int, batch: int) -> float:
    lease = LEASE_SECONDS
    engine = make_engine(dsn, pool_size=2)
    done = 0
    started = time.perf_counter()
    try:
        while done < count:
            async with transaction(engine) as conn:
                locked = await repository.lock_queue(conn, queue)
                assert locked is not None
                free = locked.limit - await repository.count_in_flight(conn, queue, lease)
                rows = await repository.claim_due_tasks(conn, queue, min(free, batch), lease)
            if not rows:
                raise RuntimeError(f"claimed {done} of {count}, then nothing")
            async with transaction(engine) as conn:
                await conn.execute(_MARK_FINISHED, {"ids": [row.id for row in rows]})
            done += len(rows)
        return done / (time.perf_counter() - started)
    finally:
        await engine.dispose()


def ours(dsn: str, count: int, batch: int) -> float:
    """Claims/s of the dispatcher's claim step, `batch` tasks per transaction."""
    queue = _make_due_tasks(dsn, count)
    try:
        return asyncio.run(_ours(dsn, queue, count, batch))
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM tasks WHERE queue_id = %s", (queue,))
            conn.execute("DELETE FROM queues WHERE id = %s", (queue,))
            conn.execute("VACUUM ANALYZE tasks")


async def _pgqueuer(dsn: str, count: int, batch: int) -> float:
    import asyncpg
    from pgqueuer import Queries
    from pgqueuer.ports.repository import EntrypointExecutionParameter

    conn = await asyncpg.connect(dsn)
    queries = Queries.from_asyncpg_connection(conn)
    if not await queries.schema_is_installed():
        await queries.install()
    entrypoint = "claim"
    await queries.clear_queue()
    await queries.clear_queue_log()
    for offset in range(0, count, 10_000):
        size = min(10_000, count - offset)
        await queries.enqueue([entrypoint] * size, [None] * size, [0] * size)
    entrypoints = {entrypoint: EntrypointExecutionParameter(concurrency_limit=0)}
    manager_id = uuid.uuid4()
    done = 0
    started = time.perf_counter()
    while done < count:
        jobs = await queries.dequeue(
            batch_size=batch,
            entrypoints=entrypoints,
            queue_manager_id=manager_id,
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=30),
        )
        if not jobs:
            raise RuntimeError(f"dequeued {done} of {count}, then nothing")
        await queries.log_jobs([(job, "successful", None) for job in jobs])
        done += len(jobs)
    rate = done / (time.perf_counter() - started)
    await conn.close()
    return rate


def pgqueuer(dsn: str, count: int, batch: int) -> float:
    """Jobs/s of pgqueuer's dequeue + completion, `batch` jobs per dequeue, one connection."""
    return asyncio.run(_pgqueuer(dsn, count, batch))
