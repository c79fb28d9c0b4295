"""Every SQL statement the api service runs, one function each.

Every statement filters on client_id: a tenant can only ever touch its own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from pydantic import TypeAdapter
from sqlalchemy import Row, Table, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api.validation import NewQueue, NewTask, Page, QueueChanges
from services.common.models import Call, Queue, Task

queues = cast(Table, Queue.__table__)
tasks = cast(Table, Task.__table__)
calls = cast(Table, Call.__table__)


async def insert_queue(conn: AsyncConnection, client_id: str, queue: NewQueue) -> Row[Any]:
    """Create a queue and return it."""
    stmt = insert(queues).values(client_id=client_id, **queue.model_dump()).returning(queues)
    row: Row[Any] = (await conn.execute(stmt)).one()
    return row


async def select_queues(conn: AsyncConnection, client_id: str, page: Page) -> Sequence[Row[Any]]:
    """One page of a client's queues, by id."""
    stmt = (
        select(queues)
        .where(queues.c.client_id == client_id, queues.c.id > page.after_id)
        .order_by(queues.c.id)
        .limit(page.limit)
    )
    return (await conn.execute(stmt)).all()


async def select_queue(conn: AsyncConnection, client_id: str, queue_id: int) -> Row[Any] | None:
    """One of a client's queues."""
    stmt = select(queues).where(queues.c.client_id == client_id, queues.c.id == queue_id)
    return (await conn.execute(stmt)).one_or_none()


async def lock_queue_for_new_tasks(conn: AsyncConnection, client_id: str, queue_id: int) -> bool:
    """Hold a share lock on the queue so that a concurrent DELETE waits until tasks are in."""
    stmt = (
        select(queues.c.id)
        .where(queues.c.client_id == client_id, queues.c.id == queue_id)
        .with_for_update(read=True)
    )
    return (await conn.execute(stmt)).one_or_none() is not None


async def update_queue(
    conn: AsyncConnection, client_id: str, queue_id: int, changes: QueueChanges
) -> Row[Any] | None:
    """Apply a partial update and return the queue as it is now."""
    values = changes.model_dump(exclude_none=True)
    if not values:
        return await select_queue(conn, client_id, queue_id)
    stmt = (
        update(queues)
        .where(queues.c.client_id == client_id, queues.c.id == queue_id)
        .values(**values)
        .returning(queues)
    )
    updated: Row[Any] | None = (await conn.execute(stmt)).one_or_none()
    return updated


async def delete_queue(conn: AsyncConnection, client_id: str, queue_id: int) -> bool:
    """Delete a queue; its tasks go with it (ON DELETE CASCADE)."""
    stmt = delete(queues).where(queues.c.client_id == client_id, queues.c.id == queue_id)
    return (await conn.execute(stmt)).rowcount > 0


_NEW_TASKS = TypeAdapter(list[NewTask])

# The whole batch travels as one JSON parameter and PostgreSQL unpacks it: a bulk of 1,000
# tasks as 15,000 bind parameters cost more CPU in the driver (splitting and converting the
# query) than the database spent inserting them.
_INSERT_TASKS = text("""
    INSERT INTO tasks (queue_id, client_id, name, a_number, b_number, extension_id,
                       try_count, try_again_pause, url_before, url_before_again,
                       url_success, url_after, start_time_utc, next_run_at, callback_params)
    SELECT :queue_id, :client_id, r.name, r.a_number, r.b_number, r.extension_id,
           r.try_count, r.try_again_pause, r.url_before, r.url_before_again,
           r.url_success, r.url_after,
           -- A missing start time means "now" by the database clock, the dispatcher's.
           coalesce(r.start_time_utc, now()), coalesce(r.start_time_utc, now()),
           r.callback_params
    FROM json_populate_recordset(NULL::tasks, CAST(:tasks AS json)) WITH ORDINALITY AS r
    ORDER BY r.ordinality
    RETURNING *
""")


async def insert_tasks(
    conn: AsyncConnection, client_id: str, queue_id: int, new_tasks: Sequence[NewTask]
) -> Sequence[Row[Any]]:
    """Insert tasks in one statement and return them in the order they were given."""
    params = {
        "queue_id": queue_id,
        "client_id": client_id,
        "tasks": _NEW_TASKS.dump_json(list(new_tasks)).decode(),
    }
    inserted = (await conn.execute(_INSERT_TASKS, params)).all()
    # Ids are drawn in the SELECT's order (by ordinality): id order is the order given.
    return sorted(inserted, key=lambda row: int(row.id))


async def select_tasks(
    conn: AsyncConnection, client_id: str, queue_id: int, page: Page, status: str | None
) -> Sequence[Row[Any]]:
    """One page of a queue's tasks, by id, optionally of one status."""
    stmt = select(tasks).where(
        tasks.c.client_id == client_id,
        tasks.c.queue_id == queue_id,
        tasks.c.id > page.after_id,
    )
    if status is not None:
        stmt = stmt.where(tasks.c.status == status)
    stmt = stmt.order_by(tasks.c.id).limit(page.limit)
    return (await conn.execute(stmt)).all()


async def select_task(
    conn: AsyncConnection, client_id: str, queue_id: int, task_id: int
) -> Row[Any] | None:
    """One task of one of the client's queues."""
    stmt = select(tasks).where(
        tasks.c.client_id == client_id, tasks.c.queue_id == queue_id, tasks.c.id == task_id
    )
    return (await conn.execute(stmt)).one_or_none()


async def delete_task(conn: AsyncConnection, client_id: str, queue_id: int, task_id: int) -> bool:
    """Delete one task."""
    stmt = delete(tasks).where(
        tasks.c.client_id == client_id, tasks.c.queue_id == queue_id, tasks.c.id == task_id
    )
    if (await conn.execute(stmt)).rowcount == 0:
        return False
    # A statement of its own, after the DELETE: if a dialer was recording a call of the task
    # (it holds the task FOR SHARE), the DELETE waited for it, and only a new snapshot sees
    # that call. The call keeps its place in the queue until it ends (count_in_flight).
    await conn.execute(_MARK_CALLS_OF_DELETED_TASK, {"task_id": task_id})
    return True


_MARK_CALLS_OF_DELETED_TASK = text("""
    UPDATE calls SET task_deleted = true WHERE task_id = :task_id AND result = 'in_progress'
""")


async def select_call(conn: AsyncConnection, client_id: str, call_uuid: str) -> Row[Any] | None:
    """One call record of the client."""
    stmt = select(calls).where(calls.c.client_id == client_id, calls.c.call_uuid == call_uuid)
    return (await conn.execute(stmt)).one_or_none()
