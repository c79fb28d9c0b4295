"""Every SQL statement the api service runs, one function each.

Every statement filters on client_id: a tenant can only ever touch its own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import TypeAdapter
from sqlalchemy import Row, Select, Table, delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api.policy import TenantPolicy
from services.api.task_status import shown_status, status_filter
from services.api.validation import (
    IntervalChanges,
    NewInterval,
    NewQueue,
    NewTask,
    Page,
    QueueChanges,
    TaskChanges,
    TaskFilter,
)
from services.common.models import Call, IdempotencyKey, Interval, Queue, QueueTaskCount, Task
from services.common.tenancy import DestinationRule

queues = cast(Table, Queue.__table__)
tasks = cast(Table, Task.__table__)
calls = cast(Table, Call.__table__)
idempotency_keys = cast(Table, IdempotencyKey.__table__)
intervals = cast(Table, Interval.__table__)
queue_counts = cast(Table, QueueTaskCount.__table__)

# A queue with its counters (one primary-key lookup per queue; no row before its first task).
_QUEUE_WITH_COUNTS = select(
    queues,
    func.coalesce(queue_counts.c.task_count, 0).label("task_count"),
    func.coalesce(queue_counts.c.sched_task_count, 0).label("sched_task_count"),
).select_from(queues.outerjoin(queue_counts, queue_counts.c.queue_id == queues.c.id))


def _no_interval_as_null(values: dict[str, Any]) -> dict[str, Any]:
    """interval_id 0 (the API's "none") is stored as NULL."""
    if values.get("interval_id") == 0:
        values["interval_id"] = None
    return values


async def insert_queue(conn: AsyncConnection, client_id: str, queue: NewQueue) -> Row[Any]:
    """Create a queue and return it."""
    values = _no_interval_as_null(queue.model_dump())
    stmt = insert(queues).values(client_id=client_id, **values).returning(queues)
    row: Row[Any] = (await conn.execute(stmt)).one()
    return row


async def select_queues(conn: AsyncConnection, client_id: str, page: Page) -> Sequence[Row[Any]]:
    """One page of a client's queues, by id."""
    stmt = (
        _QUEUE_WITH_COUNTS.where(queues.c.client_id == client_id, queues.c.id > page.after_id)
        .order_by(queues.c.id)
        .limit(page.limit)
    )
    return (await conn.execute(stmt)).all()


async def select_queue(conn: AsyncConnection, client_id: str, queue_id: int) -> Row[Any] | None:
    """One of a client's queues."""
    stmt = _QUEUE_WITH_COUNTS.where(queues.c.client_id == client_id, queues.c.id == queue_id)
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
    values = _no_interval_as_null(changes.model_dump(exclude_none=True))
    if not values:
        return await select_queue(conn, client_id, queue_id)
    stmt = (
        update(queues)
        .where(queues.c.client_id == client_id, queues.c.id == queue_id)
        .values(**values)
        .returning(queues.c.id)
    )
    if (await conn.execute(stmt)).one_or_none() is None:
        return None
    return await select_queue(conn, client_id, queue_id)  # with its counters


_LOCK_QUEUE_FOR_DELETE = text("""
    SELECT (SELECT count(*) FROM tasks t WHERE t.queue_id = q.id) AS tasks
    FROM queues q WHERE q.client_id = :client_id AND q.id = :queue_id
    FOR UPDATE
""")

# A DELETE does not hang up: the calls of the queue's tasks still going on keep their place
# in the tenant's in-progress quota until they end (see the dispatcher's count).
_MARK_CALLS_OF_DELETED_QUEUE = text("""
    UPDATE calls SET task_deleted = true WHERE queue_id = :queue_id AND result = 'in_progress'
""")


async def delete_queue(conn: AsyncConnection, client_id: str, queue_id: int) -> int | None:
    """Delete a queue; its tasks go with it (ON DELETE CASCADE). Returns how many tasks it
    had (None: no such queue), counted under the queue's lock: a concurrent bulk add holds
    it FOR SHARE, so none is added between the count and the delete."""
    params = {"client_id": client_id, "queue_id": queue_id}
    tasks_of_queue = (await conn.execute(_LOCK_QUEUE_FOR_DELETE, params)).scalar_one_or_none()
    if tasks_of_queue is None:
        return None
    await conn.execute(delete(queues).where(queues.c.id == queue_id))
    await conn.execute(_MARK_CALLS_OF_DELETED_QUEUE, {"queue_id": queue_id})
    return int(tasks_of_queue)


# --- calling windows (intervals) -----------------------------------------------------------------


def _interval_values(interval: NewInterval | IntervalChanges) -> dict[str, Any]:
    values = interval.model_dump(exclude_none=True)
    if "conditions" in values:
        # Stored as the API shows them; the rules read them with window_from_fields.
        values["conditions"] = [c.model_dump() for c in interval.conditions or ()]
    return values


# Transaction-scoped, on a key of the client's own: a client's interval creations run one at
# a time, so that its count cannot pass the limit between the count and the insert (other
# clients, and everything else of this client, do not wait).
_LOCK_INTERVALS_OF_CLIENT = text("""
    SELECT pg_advisory_xact_lock(hashtextextended('intervals:' || :client_id, 0))
""")


async def lock_intervals_of_client(conn: AsyncConnection, client_id: str) -> None:
    """Hold the client's interval-creation lock until the transaction ends."""
    await conn.execute(_LOCK_INTERVALS_OF_CLIENT, {"client_id": client_id})


async def count_intervals(conn: AsyncConnection, client_id: str) -> int:
    """How many intervals the client has."""
    stmt = select(func.count()).select_from(intervals).where(intervals.c.client_id == client_id)
    return int((await conn.execute(stmt)).scalar_one())


async def insert_interval(conn: AsyncConnection, client_id: str, interval: NewInterval) -> Row[Any]:
    """Create an interval and return it."""
    stmt = (
        insert(intervals)
        .values(client_id=client_id, **_interval_values(interval))
        .returning(intervals)
    )
    row: Row[Any] = (await conn.execute(stmt)).one()
    return row


async def select_intervals(conn: AsyncConnection, client_id: str, page: Page) -> Sequence[Row[Any]]:
    """One page of a client's intervals, by id."""
    stmt = (
        select(intervals)
        .where(intervals.c.client_id == client_id, intervals.c.id > page.after_id)
        .order_by(intervals.c.id)
        .limit(page.limit)
    )
    return (await conn.execute(stmt)).all()


async def select_interval(
    conn: AsyncConnection, client_id: str, interval_id: int
) -> Row[Any] | None:
    """One of a client's intervals."""
    stmt = select(intervals).where(
        intervals.c.client_id == client_id, intervals.c.id == interval_id
    )
    return (await conn.execute(stmt)).one_or_none()


async def update_interval(
    conn: AsyncConnection, client_id: str, interval_id: int, changes: IntervalChanges
) -> Row[Any] | None:
    """Apply a partial update and return the interval as it is now."""
    values = _interval_values(changes)
    if not values:
        return await select_interval(conn, client_id, interval_id)
    stmt = (
        update(intervals)
        .where(intervals.c.client_id == client_id, intervals.c.id == interval_id)
        .values(**values)
        .returning(intervals)
    )
    updated: Row[Any] | None = (await conn.execute(stmt)).one_or_none()
    return updated


# Tasks held until their calling window opens (delayed_interval) wait as they did before the
# hold, due now: the dispatcher decides again with the window as it is after the change.
_RELEASE_HELD = """
    WITH released AS (
        UPDATE tasks t
        SET status = CASE WHEN t.attempts = 0 THEN 'scheduled' ELSE 'delayed' END,
            next_run_at = CASE WHEN CAST(:keep_due AS boolean) THEN t.next_run_at
                               ELSE least(t.next_run_at, now()) END
        WHERE t.client_id = :client_id AND t.status = 'delayed_interval' AND {which}
        RETURNING 1)
    SELECT count(*) AS released,
           pg_notify('callback_scheduler_wake', 'dispatcher')
    FROM released HAVING count(*) > 0
"""
_RELEASE_OF_QUEUE = text(_RELEASE_HELD.format(which="t.queue_id = :queue_id"))
_RELEASE_OF_INTERVAL = text(
    _RELEASE_HELD.format(
        which="t.queue_id IN (SELECT q.id FROM queues q "
        "WHERE q.client_id = :client_id AND q.interval_id = :interval_id)"
    )
)
_RELEASE_TASK = text(_RELEASE_HELD.format(which="t.id = :task_id"))


async def release_held_tasks(
    conn: AsyncConnection,
    client_id: str,
    *,
    queue_id: int | None = None,
    interval_id: int | None = None,
    task_id: int | None = None,
    keep_due: bool = False,
) -> int:
    """After a change of a calling window (an interval, a queue's interval_id, a task's start
    time or zone): its held tasks wait again, and the dispatchers are woken; how many. With
    `keep_due`, at their next_run_at (a task just given a new start time), else now."""
    params: dict[str, object]
    if queue_id is not None:
        stmt, params = _RELEASE_OF_QUEUE, {"queue_id": queue_id}
    elif interval_id is not None:
        stmt, params = _RELEASE_OF_INTERVAL, {"interval_id": interval_id}
    elif task_id is not None:
        stmt, params = _RELEASE_TASK, {"task_id": task_id}
    else:
        raise ValueError("release which tasks?")
    params |= {"client_id": client_id, "keep_due": keep_due}
    row = (await conn.execute(stmt, params)).one_or_none()
    return 0 if row is None else int(row.released)


async def lock_interval_for_queue(conn: AsyncConnection, client_id: str, interval_id: int) -> bool:
    """Whether the client has this interval, which then stays until the transaction ends (a
    key-share lock: a concurrent DELETE of it waits, then sees the queue that names it)."""
    stmt = (
        select(intervals.c.id)
        .where(intervals.c.client_id == client_id, intervals.c.id == interval_id)
        .with_for_update(key_share=True)
    )
    return (await conn.execute(stmt)).one_or_none() is not None


async def lock_interval_for_delete(conn: AsyncConnection, client_id: str, interval_id: int) -> bool:
    """Whether the client has this interval, locked FOR UPDATE: a queue that would name it
    meanwhile waits for the DELETE, then finds it gone."""
    stmt = (
        select(intervals.c.id)
        .where(intervals.c.client_id == client_id, intervals.c.id == interval_id)
        .with_for_update()
    )
    return (await conn.execute(stmt)).one_or_none() is not None


async def select_queues_of_interval(
    conn: AsyncConnection, client_id: str, interval_id: int, limit: int
) -> Sequence[int]:
    """Ids of (at most `limit` of) the client's queues that name this interval."""
    stmt = (
        select(queues.c.id)
        .where(queues.c.client_id == client_id, queues.c.interval_id == interval_id)
        .order_by(queues.c.id)
        .limit(limit)
    )
    return [int(queue_id) for queue_id in (await conn.execute(stmt)).scalars()]


async def delete_interval(conn: AsyncConnection, client_id: str, interval_id: int) -> bool:
    """Delete an interval that no queue names (the foreign key refuses one in use)."""
    stmt = delete(intervals).where(
        intervals.c.client_id == client_id, intervals.c.id == interval_id
    )
    return bool((await conn.execute(stmt)).rowcount)


_ENSURE_TENANT = text("""
    INSERT INTO tenants (client_id) VALUES (:client_id) ON CONFLICT (client_id) DO NOTHING
""")


async def ensure_tenant(conn: AsyncConnection, client_id: str) -> None:
    """Give a client its tenants row (the dispatcher claims its tasks under that row's lock)."""
    await conn.execute(_ENSURE_TENANT, {"client_id": client_id})


# A plain read: it never waits for the dispatcher's lock on the row.
_SELECT_TOKENS_NOT_BEFORE = text("""
    SELECT tokens_not_before FROM tenants WHERE client_id = :client_id
""")


async def select_tokens_not_before(conn: AsyncConnection, client_id: str) -> datetime | None:
    """When a client's tokens were last revoked (None: never, or no tenants row)."""
    row = (await conn.execute(_SELECT_TOKENS_NOT_BEFORE, {"client_id": client_id})).one_or_none()
    return None if row is None else cast("datetime | None", row.tokens_not_before)


# Token times (iat) are whole seconds: a token issued in the second of the revocation cannot
# be told from one issued just before it, so that second is refused too (the next whole
# second is the first allowed). A later revocation never moves the time back.
_REVOKE_TOKENS = text("""
    UPDATE tenants
    SET tokens_not_before = greatest(
        tokens_not_before, date_trunc('second', now()) + interval '1 second')
    WHERE client_id = :client_id
    RETURNING tokens_not_before
""")


async def revoke_tokens(conn: AsyncConnection, client_id: str) -> datetime:
    """Refuse every token of a client issued until now; the first issue time allowed."""
    await ensure_tenant(conn, client_id)
    return cast(
        "datetime", (await conn.execute(_REVOKE_TOKENS, {"client_id": client_id})).scalar_one()
    )


_TENANT_POLICY = text("""
    SELECT
        ARRAY(SELECT extension_id FROM tenant_sip_accounts
              WHERE client_id = :client_id) AS extensions,
        ARRAY(SELECT number FROM tenant_caller_ids
              WHERE client_id = :client_id AND number = ANY(:caller_ids)) AS caller_ids,
        ARRAY(SELECT prefix FROM tenant_destination_rules
              WHERE client_id = :client_id AND allow) AS allowed,
        ARRAY(SELECT prefix FROM tenant_destination_rules
              WHERE client_id = :client_id AND NOT allow) AS denied
""")


async def select_tenant_policy(
    conn: AsyncConnection, client_id: str, caller_ids: set[str]
) -> TenantPolicy:
    """The client's own extensions, which of `caller_ids` it owns, and its destination rules
    (one round trip)."""
    params = {"client_id": client_id, "caller_ids": sorted(caller_ids)}
    row = (await conn.execute(_TENANT_POLICY, params)).one()
    rules = [DestinationRule(p, True) for p in row.allowed]
    rules += [DestinationRule(p, False) for p in row.denied]
    return TenantPolicy(frozenset(row.extensions), frozenset(row.caller_ids), tuple(rules))


# Run last in a bulk add's transaction: the counter row stays locked until the commit, and
# concurrent bulk adds of one tenant wait for each other only that long.
_COUNT_NEW_TASKS = text("""
    INSERT INTO tenant_usage AS u (client_id, stored_tasks) VALUES (:client_id, :how_many)
    ON CONFLICT (client_id) DO UPDATE SET stored_tasks = u.stored_tasks + :how_many
    RETURNING u.stored_tasks,
              coalesce((SELECT max_stored_tasks FROM tenants WHERE client_id = :client_id),
                       :default_max) AS quota
""")


async def count_new_tasks(
    conn: AsyncConnection, client_id: str, how_many: int, default_max: int
) -> tuple[int, int]:
    """Add new tasks to the client's stored count; (stored now, its quota). The caller rolls
    back when the quota is exceeded."""
    params = {"client_id": client_id, "how_many": how_many, "default_max": default_max}
    stored, quota = (await conn.execute(_COUNT_NEW_TASKS, params)).one()
    return int(stored), int(quota)


_UNCOUNT_TASKS = text("""
    UPDATE tenant_usage SET stored_tasks = greatest(stored_tasks - :how_many, 0)
    WHERE client_id = :client_id
""")


async def uncount_tasks(conn: AsyncConnection, client_id: str, how_many: int) -> None:
    """Take deleted tasks off the client's stored count."""
    if how_many:
        await conn.execute(_UNCOUNT_TASKS, {"client_id": client_id, "how_many": how_many})


_NEW_TASKS = TypeAdapter(list[NewTask])

# The whole batch travels as one JSON parameter and PostgreSQL unpacks it: a bulk of 1,000
# tasks as 15,000 bind parameters cost more CPU in the driver (splitting and converting the
# query) than the database spent inserting them.
_INSERT_TASKS = text("""
    INSERT INTO tasks (queue_id, client_id, name, a_number, b_number, extension_id,
                       try_count, try_again_pause, url_before, url_before_again,
                       url_success, url_after, start_time_utc, next_run_at, callback_params,
                       try_count_caller, try_again_pause_caller)
    SELECT :queue_id, :client_id, r.name, r.a_number, r.b_number, r.extension_id,
           r.try_count, r.try_again_pause, r.url_before, r.url_before_again,
           r.url_success, r.url_after,
           -- A missing start time means "now" by the database clock, the dispatcher's.
           coalesce(r.start_time_utc, now()), coalesce(r.start_time_utc, now()),
           r.callback_params, r.try_count_caller, r.try_again_pause_caller
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


def _shown_tasks() -> Select[tuple[Any, ...]]:
    """Tasks with their status as the api shows it (task_status.py)."""
    columns = [c for c in tasks.c if c.name != "status"]
    return select(*columns, shown_status(tasks, queues))


async def select_tasks(
    conn: AsyncConnection, client_id: str, queue_id: int, page: Page, filters: TaskFilter
) -> Sequence[Row[Any]]:
    """One page of a queue's tasks, by id, optionally of one status, one number (A or B; two
    indexes, (queue_id, a_number) and (queue_id, b_number)) and a created-time range."""
    stmt = _shown_tasks().where(
        tasks.c.client_id == client_id,
        tasks.c.queue_id == queue_id,
        tasks.c.id > page.after_id,
    )
    if filters.status is not None:
        stmt = stmt.where(status_filter(tasks, queues, filters.status))
    if filters.number is not None:
        stmt = stmt.where(
            or_(tasks.c.a_number == filters.number, tasks.c.b_number == filters.number)
        )
    if filters.created_from_utc is not None:
        stmt = stmt.where(tasks.c.create_date_utc >= filters.created_from_utc)
    if filters.created_to_utc is not None:
        stmt = stmt.where(tasks.c.create_date_utc < filters.created_to_utc)
    stmt = stmt.order_by(tasks.c.id).limit(page.limit)
    rows: Sequence[Row[Any]] = (await conn.execute(stmt)).all()
    return rows


async def select_task(
    conn: AsyncConnection, client_id: str, queue_id: int, task_id: int
) -> Row[Any] | None:
    """One task of one of the client's queues."""
    stmt = _shown_tasks().where(
        tasks.c.client_id == client_id, tasks.c.queue_id == queue_id, tasks.c.id == task_id
    )
    row: Row[Any] | None = (await conn.execute(stmt)).one_or_none()
    return row


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


# Waits, if another transaction has just inserted the same key, until that one ends: after
# its commit the key is taken (nothing returned: the caller replays); after its rollback
# this insert goes ahead. A key older than its lifetime is taken over in place.
_CLAIM_IDEMPOTENCY_KEY = text("""
    INSERT INTO idempotency_keys AS k (client_id, key, request_hash)
    VALUES (:client_id, :key, :request_hash)
    ON CONFLICT (client_id, key) DO UPDATE
        SET request_hash = excluded.request_hash, response = NULL, created_at = now()
        WHERE k.created_at < now() - :lifetime
    RETURNING true
""")


async def claim_idempotency_key(
    conn: AsyncConnection, client_id: str, key: str, request_hash: bytes, lifetime: timedelta
) -> bool:
    """Take a client's key for this request; False if it is already taken (and unexpired)."""
    params = {
        "client_id": client_id,
        "key": key,
        "request_hash": request_hash,
        "lifetime": lifetime,
    }
    return (await conn.execute(_CLAIM_IDEMPOTENCY_KEY, params)).one_or_none() is not None


async def select_idempotency_key(
    conn: AsyncConnection, client_id: str, key: str
) -> Row[Any] | None:
    """The request hash and stored response of a client's key."""
    stmt = select(idempotency_keys).where(
        idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key
    )
    return (await conn.execute(stmt)).one_or_none()


async def store_idempotent_response(
    conn: AsyncConnection, client_id: str, key: str, response: bytes
) -> None:
    """Remember the response of the request that took the key (same transaction)."""
    stmt = (
        update(idempotency_keys)
        .where(idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key)
        .values(response=response)
    )
    await conn.execute(stmt)


async def lock_task(
    conn: AsyncConnection, client_id: str, queue_id: int, task_id: int
) -> Row[Any] | None:
    """One task of the client, locked until the end of the transaction: a dispatcher's claim
    (FOR UPDATE SKIP LOCKED) passes it by meanwhile, and a claim already under way makes this
    wait until it commits (and then see the task `executed`)."""
    stmt = (
        select(tasks)
        .where(tasks.c.client_id == client_id, tasks.c.queue_id == queue_id, tasks.c.id == task_id)
        .with_for_update()
    )
    return (await conn.execute(stmt)).one_or_none()


async def update_task(conn: AsyncConnection, task_id: int, changes: TaskChanges) -> Row[Any]:
    """Apply a reschedule to a locked task and return it; a new start time is also when its
    next attempt falls due."""
    values: dict[str, Any] = {
        name: getattr(changes, name)
        for name in changes.model_fields_set
        if getattr(changes, name) is not None
    }
    if changes.callback_params is not None:
        values["callback_params"] = changes.callback_params.model_dump()
    if changes.start_time_utc is not None:
        values["next_run_at"] = changes.start_time_utc
    if not values:  # an empty PUT: the task as it is
        current: Row[Any] = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).one()
        return current
    stmt = update(tasks).where(tasks.c.id == task_id).values(**values).returning(tasks)
    row: Row[Any] = (await conn.execute(stmt)).one()
    return row


# As the INSERT trigger on tasks does for new tasks (migration 0007): only a switched-on
# queue's task is worth a wake-up, and `due_in:` lets a dispatcher with an earlier timer sleep on.
_WAKE_FOR_TASK = text("""
    SELECT pg_notify('callback_scheduler_wake',
                     'due_in:' || EXTRACT(EPOCH FROM CAST(:due AS timestamptz) - now()))
    FROM queues WHERE id = :queue_id AND status = 'on'
""")


async def wake_for_task(conn: AsyncConnection, queue_id: int, due: datetime) -> None:
    """Tell the dispatchers (at commit) when a rescheduled task falls due."""
    await conn.execute(_WAKE_FOR_TASK, {"queue_id": queue_id, "due": due})


async def select_task_calls(
    conn: AsyncConnection, client_id: str, queue_id: int, task_id: int
) -> Sequence[Row[Any]]:
    """The call records of every attempt of one task, newest first."""
    stmt = (
        select(calls)
        .where(
            calls.c.client_id == client_id,
            calls.c.queue_id == queue_id,
            calls.c.task_id == task_id,
        )
        .order_by(calls.c.attempt.desc())  # (task_id, attempt) is unique and indexed
    )
    return (await conn.execute(stmt)).all()
