"""Every SQL statement the dispatcher runs, one function each.

The claim is the heart of the system. It runs in one transaction per tenant:

0. `lock_tenant` takes the tenant's row FOR UPDATE SKIP LOCKED, and `count_tenant_in_flight`
   counts its callbacks in progress after that (exact, for the same reason as step 2):
   `max_in_progress - in_flight` more may start, and no more than its token bucket holds
   (calls per second; `spend_tokens` takes what the claim used). Then, for each of the
   tenant's queues with due work, within what is left:
1. `lock_queue` takes the queue row FOR UPDATE SKIP LOCKED. Only one dispatcher at a time
   claims for a queue; the others skip it (they do not wait) and serve other queues.
2. `count_in_flight` runs *after* the lock, so its snapshot includes every claim committed
   by the dispatcher that held the lock before: the count is exact, and
   `limit - in_flight` tasks can be started without ever exceeding the limit.
3. `claim_due_tasks` moves up to that many due tasks to `executed` (FOR UPDATE SKIP LOCKED
   on the task rows, so a task being deleted or resolved concurrently is left alone).

Due-ness is always decided by the database clock (`now()`), never by a dispatcher's clock.
A task is claimed up to `lookahead_seconds` before it is due, so that its dial request waits
at the dialer, which dials at the due time (DialRequest.due_at_unix_ms): claim, outbox and
NATS take tens of milliseconds for a second's worth of tasks, and they come out of the
lateness that way.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import Row, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.calling_windows import CallingWindow, window_from_fields
from services.common.models import Call, OutboxMessage
from services.common.tenancy import TenantDefaults
from services.common.vocabulary import CALL_IN_PROGRESS, WAITING, CallOutcome, TaskStatus
from services.dispatcher.windows import Hold

WAKE_CHANNEL = "callback_scheduler_wake"

# Statuses go into the statements below as SQL literals (spelled by the vocabulary), not as
# bound parameters: the partial indexes of tasks (ix_tasks_waiting, ix_tasks_leases, ...)
# are used only when a query's predicate matches theirs as written, which a parameter does
# not once psycopg prepares the statement and PostgreSQL picks a generic plan.
_WAITING = ", ".join(f"'{status}'" for status in WAITING)
_EXECUTED = f"'{TaskStatus.EXECUTED}'"
_FINISHED = f"'{TaskStatus.FINISHED}'"
_DELAYED_INTERVAL = f"'{TaskStatus.DELAYED_INTERVAL}'"
_IN_PROGRESS = f"'{CALL_IN_PROGRESS}'"

calls = cast(Table, Call.__table__)
outbox = cast(Table, OutboxMessage.__table__)


@dataclass(frozen=True)
class Message:
    subject: str
    msg_id: str
    payload: bytes


_DUE = "next_run_at <= now() + make_interval(secs => :lookahead_seconds)"

_TENANTS_WITH_DUE_WORK = text(f"""
    SELECT q.client_id, array_agg(q.id) AS queue_ids
    FROM queues q
    WHERE q.status = 'on'
      AND EXISTS (SELECT 1 FROM tasks t
                  WHERE t.queue_id = q.id
                    AND t.status IN ({_WAITING})
                    AND t.{_DUE})
    GROUP BY q.client_id
""")  # noqa: S608 - constant SQL


async def tenants_with_due_work(
    conn: AsyncConnection, lookahead_seconds: float
) -> dict[str, list[int]]:
    """Clients with switched-on queues that have a due task, and those queues (no locks)."""
    params = {"lookahead_seconds": lookahead_seconds}
    rows = await conn.execute(_TENANTS_WITH_DUE_WORK, params)
    return {row.client_id: list(row.queue_ids) for row in rows}


_IN_PROGRESS_BY_TENANT = text(f"""
    SELECT client_id, count(*) AS in_progress FROM tasks
    WHERE status = {_EXECUTED} GROUP BY client_id
""")  # noqa: S608 - constant SQL


async def in_progress_by_tenant(conn: AsyncConnection) -> dict[str, int]:
    """Callbacks in progress per client, all of them (for the dialers' fair share: a
    snapshot, not under any lock)."""
    return {
        row.client_id: int(row.in_progress) for row in await conn.execute(_IN_PROGRESS_BY_TENANT)
    }


class TenantLock(NamedTuple):
    """A tenant locked for claiming: its quotas (defaults filled in) and the new calls its
    token bucket allows now."""

    max_in_progress: int
    calls_per_second: float
    tokens: float


# The bucket holds up to a second's worth of calls (at least one); NULL tokens: full.
# Computed by the database clock, like due times. now() is the transaction's start, so the
# spend_tokens of the same transaction refills from the same moment.
_TENANT_LOCK_COLUMNS = """
    coalesce(max_in_progress, :default_max_in_progress) AS max_in_progress,
    coalesce(calls_per_second, :default_calls_per_second) AS calls_per_second,
    least(greatest(coalesce(calls_per_second, :default_calls_per_second), 1.0),
          coalesce(rate_tokens + EXTRACT(EPOCH FROM now() - rate_refilled_at)
                                 * coalesce(calls_per_second, :default_calls_per_second),
                   'Infinity'::float8)) AS tokens
"""

_LOCK_TENANT = text(f"""
    SELECT {_TENANT_LOCK_COLUMNS} FROM tenants WHERE client_id = :client_id
    FOR UPDATE SKIP LOCKED
""")  # noqa: S608 - constant SQL

_CREATE_TENANT = text(f"""
    INSERT INTO tenants (client_id) VALUES (:client_id) ON CONFLICT (client_id) DO NOTHING
    RETURNING {_TENANT_LOCK_COLUMNS}
""")  # noqa: S608 - constant SQL


async def lock_tenant(
    conn: AsyncConnection, client_id: str, defaults: TenantDefaults
) -> TenantLock | None:
    """Step 0: lock a tenant for claiming; None if another dispatcher holds it. Only one
    dispatcher at a time claims for a tenant, so its in-progress count is exact (as a
    queue's is under the queue's lock). A client without a row (its queues written
    before it had one) gets one, locked by this transaction until it commits."""
    params = {
        "client_id": client_id,
        "default_max_in_progress": defaults.max_in_progress,
        "default_calls_per_second": defaults.calls_per_second,
    }
    row = (await conn.execute(_LOCK_TENANT, params)).one_or_none()
    if row is None:
        row = (await conn.execute(_CREATE_TENANT, params)).one_or_none()
    if row is None:
        return None
    return TenantLock(int(row.max_in_progress), float(row.calls_per_second), float(row.tokens))


_SPEND_TOKENS = text("""
    UPDATE tenants SET rate_tokens = :tokens, rate_refilled_at = now()
    WHERE client_id = :client_id
""")


async def spend_tokens(conn: AsyncConnection, client_id: str, tokens_left: float) -> None:
    """Leave the tenant's bucket with `tokens_left` as of now (after a claim)."""
    await conn.execute(_SPEND_TOKENS, {"client_id": client_id, "tokens": tokens_left})


# A tenant's callbacks in progress: its executed tasks, plus calls still going on for tasks
# (or queues) deleted mid-call, as for a queue (_IN_FLIGHT).
_COUNT_TENANT_IN_FLIGHT = text(f"""
    SELECT (SELECT count(*) FROM tasks e WHERE e.client_id = :client_id AND e.status = {_EXECUTED})
         + (SELECT count(*) FROM calls c
            WHERE c.client_id = :client_id AND c.task_deleted AND c.result = {_IN_PROGRESS}
              AND c.started_at > now() - make_interval(secs => :lease_seconds))
""")  # noqa: S608 - constant SQL


async def count_tenant_in_flight(
    conn: AsyncConnection, client_id: str, lease_seconds: float
) -> int:
    """Callbacks of the tenant in progress now, across its queues (run after lock_tenant)."""
    params = {"client_id": client_id, "lease_seconds": lease_seconds}
    return int((await conn.execute(_COUNT_TENANT_IN_FLIGHT, params)).scalar_one())


_LOCK_QUEUE = text("""
    SELECT q.concurrent_task_limit, i.timezone, i.conditions
    FROM queues q LEFT JOIN intervals i ON i.client_id = q.client_id AND i.id = q.interval_id
    WHERE q.id = :queue_id AND q.status = 'on'
    FOR UPDATE OF q SKIP LOCKED
""")


class LockedQueue(NamedTuple):
    limit: int
    # Its calling window (the interval's zone and conditions); None: always open.
    window: CallingWindow | None


async def lock_queue(conn: AsyncConnection, queue_id: int) -> LockedQueue | None:
    """Step 1: lock a switched-on queue for claiming; its limit and calling window, or None
    if taken or off."""
    row = (await conn.execute(_LOCK_QUEUE, {"queue_id": queue_id})).one_or_none()
    if row is None:
        return None
    window = None if row.timezone is None else window_from_fields(row.timezone, row.conditions)
    return LockedQueue(int(row.concurrent_task_limit), window)


# The callees' zones of a queue's tasks due within the lookahead (NULL: the interval's own;
# stored callback_params hold "" for it).
_DUE_ZONES = text(f"""
    SELECT now() AS now,
           ARRAY(SELECT DISTINCT NULLIF(callback_params->>'timezone', '') FROM tasks
                 WHERE queue_id = :queue_id AND status IN ({_WAITING}) AND {_DUE}) AS zones
""")  # noqa: S608 - constant SQL


async def due_zones(
    conn: AsyncConnection, queue_id: int, lookahead_seconds: float
) -> tuple[datetime, list[str | None]]:
    """The database's now() (the transaction's start, as in every claim statement) and the
    zones the queue's due tasks are called in."""
    params = {"queue_id": queue_id, "lookahead_seconds": lookahead_seconds}
    row = (await conn.execute(_DUE_ZONES, params)).one()
    return row.now, list(row.zones)


_HOLD = text(f"""
    UPDATE tasks SET status = {_DELAYED_INTERVAL}, next_run_at = :until
    WHERE queue_id = :queue_id AND status IN ({_WAITING}) AND {_DUE}
      AND NULLIF(callback_params->>'timezone', '') IS NOT DISTINCT FROM CAST(:timezone AS text)
      AND next_run_at >= coalesce(CAST(:due_from AS timestamptz), '-infinity')
      AND next_run_at < coalesce(CAST(:due_before AS timestamptz), 'infinity')
""")  # noqa: S608 - constant SQL


async def hold_outside_window(
    conn: AsyncConnection, queue_id: int, hold: Hold, lookahead_seconds: float
) -> int:
    """Hold a zone's due tasks until their window opens (see windows.py); how many."""
    params = {
        "queue_id": queue_id,
        "lookahead_seconds": lookahead_seconds,
        "timezone": hold.timezone,
        "due_from": hold.due_from,
        "due_before": hold.due_before,
        "until": hold.until,
    }
    return int((await conn.execute(_HOLD, params)).rowcount)


_DIAL_WINDOWS = text("""
    SELECT now() AS now, q.id AS queue_id, i.timezone, i.conditions
    FROM queues q JOIN intervals i ON i.client_id = q.client_id AND i.id = q.interval_id
    WHERE q.id = ANY(:queue_ids)
""")


async def dial_windows(
    conn: AsyncConnection, queue_ids: Sequence[int]
) -> dict[int, tuple[datetime, CallingWindow]]:
    """The calling windows of those of these queues that have one, each with the
    database's now() (for the dial requests of attempts dialed again)."""
    rows = (await conn.execute(_DIAL_WINDOWS, {"queue_ids": sorted(set(queue_ids))})).all()
    return {
        row.queue_id: (row.now, window_from_fields(row.timezone, row.conditions)) for row in rows
    }


# Callbacks of queue `q` in progress: its executed tasks, plus calls still going on for
# tasks deleted mid-call (a DELETE does not hang up; the call holds its slot until it ends,
# or at most for a lease if its dialer died). The API marks those calls as it deletes.
_IN_FLIGHT = f"""(
    (SELECT count(*) FROM tasks e WHERE e.queue_id = {{q}} AND e.status = {_EXECUTED})
  + (SELECT count(*) FROM calls c
     WHERE c.queue_id = {{q}} AND c.task_deleted AND c.result = {_IN_PROGRESS}
       AND c.started_at > now() - make_interval(secs => :lease_seconds)))"""  # noqa: S608

_COUNT_IN_FLIGHT = text("SELECT " + _IN_FLIGHT.format(q=":queue_id"))


async def count_in_flight(conn: AsyncConnection, queue_id: int, lease_seconds: float) -> int:
    """Step 2: callbacks of the queue in progress now (run after lock_queue)."""
    params = {"queue_id": queue_id, "lease_seconds": lease_seconds}
    return int((await conn.execute(_COUNT_IN_FLIGHT, params)).scalar_one())


# What a dial request and the choice of start webhooks need of a task just claimed.
_DIAL_COLUMNS = """t.id, t.queue_id, t.client_id, t.attempts, t.cdr, t.a_number, t.b_number,
              t.extension_id, t.next_run_at, t.url_before, t.url_before_again, t.url_success,
              NULLIF(t.callback_params->'extended_a_numbers', '[]') AS extended_a_numbers,
              t.callback_params->>'caller_id_name' AS caller_id_name,
              t.callback_params->>'caller_id_number' AS caller_id_number,
              (t.callback_params->>'ring_timeout')::int AS ring_timeout,
              (t.callback_params->>'call_duration')::int AS call_duration,
              NULLIF(t.callback_params->>'timezone', '') AS timezone"""

_CLAIM_DUE_TASKS = text(f"""
    WITH due AS (
        SELECT id FROM tasks
        WHERE queue_id = :queue_id
          AND status IN ({_WAITING})
          AND {_DUE}
        ORDER BY next_run_at, id
        LIMIT :how_many
        FOR UPDATE SKIP LOCKED
    )
    UPDATE tasks t
    SET status = {_EXECUTED},
        attempts = t.attempts + 1,
        redials = 0,
        cdr = gen_random_uuid()::text,
        lease_expires_at = now() + make_interval(secs => :lease_seconds)
    WHERE t.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING {_DIAL_COLUMNS}
""")  # noqa: S608 - constant SQL


async def claim_due_tasks(
    conn: AsyncConnection,
    queue_id: int,
    how_many: int,
    lease_seconds: float,
    lookahead_seconds: float = 0.0,
) -> Sequence[Row[Any]]:
    """Step 3: start the next attempt of up to `how_many` tasks due within the lookahead,
    earliest due first. Returns what their dial requests and the choice of their start
    webhooks need, not whole rows (parsing callback_params from JSON for every claimed task
    cost the client more than the claim); an empty list of extended A numbers comes as NULL
    (no json.loads of `[]` per task).

    The claimed rows are found by id (`= ANY(ARRAY(...))`, an index scan), not joined to
    the CTE: for a big batch the planner hashed the CTE and scanned the whole tasks table.
    Measured: README, Benchmarks."""
    params = {
        "queue_id": queue_id,
        "how_many": how_many,
        "lease_seconds": lease_seconds,
        "lookahead_seconds": lookahead_seconds,
    }
    rows: Sequence[Row[Any]] = (await conn.execute(_CLAIM_DUE_TASKS, params)).all()
    return rows


# The queues' next due tasks first (MATERIALIZED), so that in-flight callbacks are counted
# only for queues that have a task waiting: left to itself, the planner counted them for
# every switched-on queue, thousands of rows each during a burst. The next lease by index
# order, not min(): with fresh rows the planner scanned the whole index for the min.
_NEXT_WAKE = text(
    """
    WITH waiting AS MATERIALIZED (
        SELECT q.id, q.concurrent_task_limit, w.next_run_at
        FROM queues q
        CROSS JOIN LATERAL (
            SELECT t.next_run_at FROM tasks t
            WHERE t.queue_id = q.id AND t.status IN ({waiting})
            ORDER BY t.next_run_at LIMIT 1) w
        WHERE q.status = 'on' AND q.client_id <> ALL(CAST(:held_clients AS text[]))
    )
    SELECT
        EXTRACT(EPOCH FROM
            (SELECT min(q.next_run_at) - make_interval(secs => :lookahead_seconds)
             FROM waiting q
             WHERE {in_flight} < q.concurrent_task_limit) - now()) AS due_in,
        EXTRACT(EPOCH FROM
            (SELECT lease_expires_at FROM tasks WHERE status = {executed}
             ORDER BY lease_expires_at LIMIT 1) - now()) AS lease_in
""".format(in_flight=_IN_FLIGHT.format(q="q.id"), waiting=_WAITING, executed=_EXECUTED)  # noqa: S608 - constant SQL
)


class NextWake(NamedTuple):
    """Seconds (from now, by the database clock) until there is work; None: none waiting."""

    # A waiting task of a queue with free capacity is due (less the lookahead). Queues at
    # their limit, and the queues of tenants held by a quota, are left out: they wake the
    # dispatcher when a callback ends (notify_wake), not when their next task is due.
    due_in: float | None
    # The first lease of an attempt in progress runs out.
    lease_in: float | None


async def next_wake(
    conn: AsyncConnection,
    lease_seconds: float,
    lookahead_seconds: float,
    held_clients: Sequence[str] = (),
) -> NextWake:
    """When the dispatcher has work next: a task due (not counting the tenants in
    `held_clients`, whose quotas hold them), or a lease running out."""
    params = {
        "lease_seconds": lease_seconds,
        "lookahead_seconds": lookahead_seconds,
        "held_clients": list(held_clients),
    }
    due_in, lease_in = (await conn.execute(_NEXT_WAKE, params)).one()
    return NextWake(
        None if due_in is None else float(due_in), None if lease_in is None else float(lease_in)
    )


_LOCK_TASKS = text("""
    SELECT id, status, attempts, try_count, try_again_pause,
           try_count_caller, try_again_pause_caller, caller_failures,
           url_before, url_before_again, url_success, url_after
    FROM tasks WHERE id = ANY(:task_ids) ORDER BY id FOR UPDATE
""")


async def lock_tasks(conn: AsyncConnection, task_ids: Sequence[int]) -> Sequence[Row[Any]]:
    """Lock tasks to apply call results to them, in id order (so that two dispatchers
    never deadlock); waits for a concurrent claim, lease expiry or delete. The columns
    that decide a result: reading whole rows (callback_params is JSON) was most of the
    dispatcher's time applying results."""
    params = {"task_ids": sorted(set(task_ids))}
    rows: Sequence[Row[Any]] = (await conn.execute(_LOCK_TASKS, params)).all()
    return rows


async def tasks_by_id(conn: AsyncConnection, task_ids: Sequence[int]) -> Sequence[Row[Any]]:
    """Whole task rows (as the API shows them), for webhooks."""
    stmt = text("SELECT * FROM tasks WHERE id = ANY(:task_ids)")
    rows: Sequence[Row[Any]] = (await conn.execute(stmt, {"task_ids": list(set(task_ids))})).all()
    return rows


_EXPIRED_LEASES = text(f"""
    SELECT * FROM tasks
    WHERE status = {_EXECUTED} AND lease_expires_at <= now()
    ORDER BY lease_expires_at
    LIMIT :how_many
    FOR UPDATE SKIP LOCKED
""")  # noqa: S608 - constant SQL


async def lock_expired_leases(conn: AsyncConnection, how_many: int) -> Sequence[Row[Any]]:
    """Executed tasks whose attempt ran out of time, locked (a dialer holding one is skipped)."""
    rows: Sequence[Row[Any]] = (await conn.execute(_EXPIRED_LEASES, {"how_many": how_many})).all()
    return rows


async def call_of_attempt(conn: AsyncConnection, task_id: int, attempt: int) -> Row[Any] | None:
    """The call placed for an attempt, if the dialer placed one."""
    stmt = select(calls).where(calls.c.task_id == task_id, calls.c.attempt == attempt)
    return (await conn.execute(stmt)).one_or_none()


_REDIAL = text(f"""
    UPDATE tasks t
    SET redials = t.redials + 1,
        cdr = gen_random_uuid()::text,
        lease_expires_at = now() + make_interval(secs => :lease_seconds)
    WHERE t.id = :task_id
    RETURNING {_DIAL_COLUMNS}
""")  # noqa: S608 - constant SQL


async def redial(conn: AsyncConnection, task_id: int, lease_seconds: float) -> Row[Any]:
    """Give the current attempt (locked, executed) a new call and a new lease, without
    spending a try; returns what its dial request needs."""
    params = {"task_id": task_id, "lease_seconds": lease_seconds}
    row: Row[Any] = (await conn.execute(_REDIAL, params)).one()
    return row


async def forget_undialed_calls(conn: AsyncConnection, call_uuids: Sequence[str]) -> None:
    """Delete the records of calls that were never dialed: they were no calls."""
    stmt = text("""
        DELETE FROM calls
        WHERE call_uuid = ANY(:call_uuids) AND dialed_at IS NULL AND dial_by IS NOT NULL
    """)
    await conn.execute(stmt, {"call_uuids": list(call_uuids)})


async def mark_calls_lost(conn: AsyncConnection, call_uuids: Sequence[str]) -> None:
    """Calls that never reported their end: record them as lost."""
    stmt = text(f"""
        UPDATE calls SET result = :lost, comment = :comment, ended_at = now()
        WHERE call_uuid = ANY(:call_uuids) AND result = {_IN_PROGRESS}
    """)  # noqa: S608 - constant SQL
    comment = "no result from the dialer before the attempt's deadline"
    params = {"call_uuids": list(call_uuids), "comment": comment, "lost": CallOutcome.LOST.value}
    await conn.execute(stmt, params)


# Set-based statements, one per batch, their rows passed as one JSON document: executemany
# ran one statement per row (the per-statement cost was most of the database's share of a
# callback), and arrays cost more to send (psycopg escapes each element of a text array with
# a regular expression). Encoded by orjson, several times faster than json.dumps.
_END_ATTEMPTS = text("""
    UPDATE tasks t
    SET status = c.status,
        finish_result = c.finish_result,
        finish_comment = c.finish_comment,
        caller_failures = t.caller_failures + CASE WHEN c.caller_failed THEN 1 ELSE 0 END,
        attempts = t.attempts - CASE WHEN c.unspent THEN 1 ELSE 0 END,
        finished_at = CASE WHEN c.status = :finished THEN now() END,
        lease_expires_at = NULL,
        next_run_at = CASE
            WHEN c.run_at IS NOT NULL THEN c.run_at
            WHEN c.retry_after IS NULL THEN t.next_run_at
            ELSE now() + make_interval(secs => c.retry_after)
        END
    FROM json_to_recordset(CAST(:changes AS json))
         AS c(task_id bigint, status text, finish_result text, finish_comment text,
              retry_after integer, caller_failed boolean, unspent boolean,
              run_at timestamptz)
    WHERE t.id = c.task_id
""")


async def end_attempts(conn: AsyncConnection, changes: Sequence[dict[str, Any]]) -> None:
    """Apply the resolutions of attempts (each task at most once), in one statement: each
    task is delayed until its next attempt (an unspent one given back), or finished."""
    if changes:
        params = {"changes": orjson.dumps(changes).decode(), "finished": TaskStatus.FINISHED.value}
        await conn.execute(_END_ATTEMPTS, params)


async def notify_wake(conn: AsyncConnection) -> None:
    """Tell every dispatcher (at commit) that capacity was freed or work became due."""
    await conn.execute(text("SELECT pg_notify(:channel, 'dispatcher')"), {"channel": WAKE_CHANNEL})


_ADD_TO_OUTBOX = text("""
    INSERT INTO outbox (subject, msg_id, payload)
    SELECT m.subject, m.msg_id, decode(m.payload, 'base64')
    FROM ROWS FROM (json_to_recordset(CAST(:messages AS json))
                    AS (subject text, msg_id text, payload text))
         WITH ORDINALITY AS m(subject, msg_id, payload, position)
    ORDER BY m.position
    ON CONFLICT (msg_id) DO NOTHING
""")


async def add_to_outbox(conn: AsyncConnection, messages: Sequence[Message]) -> None:
    """Queue messages for publishing, in order; a message already queued is not queued
    twice. One statement however many."""
    if not messages:
        return
    rows = [
        {"subject": m.subject, "msg_id": m.msg_id, "payload": b64encode(m.payload).decode()}
        for m in messages
    ]
    await conn.execute(_ADD_TO_OUTBOX, {"messages": orjson.dumps(rows).decode()})


async def take_outbox_batch(
    conn: AsyncConnection, how_many: int
) -> Sequence[Row[int, str, str, bytes]]:
    """The oldest unpublished messages, locked so another publisher takes the next ones."""
    stmt = (
        select(outbox.c.id, outbox.c.subject, outbox.c.msg_id, outbox.c.payload)
        .order_by(outbox.c.id)
        .limit(how_many)
        .with_for_update(skip_locked=True)
    )
    return (await conn.execute(stmt)).all()


async def delete_outbox(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """Forget messages JetStream has stored."""
    await conn.execute(text("DELETE FROM outbox WHERE id = ANY(:ids)"), {"ids": list(ids)})


# Above this many tasks (by the planner's estimate), the statuses other than `executed` are
# estimated from PostgreSQL's statistics, not counted: a count is a scan of the whole table,
# by every dispatcher every stats interval (gigabytes each time at the README's scale run).
EXACT_COUNT_MAX_ROWS = 200_000

_TABLE_ROWS = text("SELECT reltuples::bigint FROM pg_class WHERE oid = 'tasks'::regclass")

_STATUS_FREQUENCIES = text("""
    SELECT most_common_vals::text::text[], most_common_freqs FROM pg_stats
    WHERE schemaname = current_schema() AND tablename = 'tasks' AND attname = 'status'
""")


async def count_tasks_by_status(
    conn: AsyncConnection, exact_up_to: int = EXACT_COUNT_MAX_ROWS
) -> dict[str, int]:
    """Tasks of all tenants by status (for the metrics): counted in a table of up to
    `exact_up_to` rows; in a bigger one, `executed` is counted (a small partial index) and
    the others are estimated from the statistics autovacuum keeps (as fresh as its last
    ANALYZE of tasks)."""
    rows = (await conn.execute(_TABLE_ROWS)).scalar_one()
    frequencies = (await conn.execute(_STATUS_FREQUENCIES)).one_or_none()
    if rows <= exact_up_to or frequencies is None:
        counted = await conn.execute(text("SELECT status, count(*) FROM tasks GROUP BY status"))
        return {str(status): int(count) for status, count in counted}
    statuses, shares = frequencies
    estimated = zip(statuses, shares, strict=True)
    counts = {str(status): round(rows * share) for status, share in estimated}
    executed = text(f"SELECT count(*) FROM tasks WHERE status = {_EXECUTED}")  # noqa: S608
    counts[TaskStatus.EXECUTED] = int((await conn.execute(executed)).scalar_one())
    return counts


# In bounded batches, so that one pass after a long outage does not hold a long transaction.
_DELETE_EXPIRED_IDEMPOTENCY_KEYS = text("""
    DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM idempotency_keys WHERE created_at < now() - :lifetime LIMIT :batch))
""")


async def delete_expired_idempotency_keys(
    conn: AsyncConnection, lifetime: timedelta, batch: int = 10_000
) -> int:
    """Forget Idempotency-Keys (of all tenants) older than their lifetime; how many."""
    params = {"lifetime": lifetime, "batch": batch}
    return int((await conn.execute(_DELETE_EXPIRED_IDEMPOTENCY_KEYS, params)).rowcount)


# The retention purge, in small batches (one transaction each) so that it never holds locks
# the claims or the API wait for long; rows another transaction holds are skipped.
_GIVE_FINISHED_AT = text(f"""
    UPDATE tasks SET finished_at = next_run_at
    WHERE id = ANY(ARRAY(
        SELECT id FROM tasks WHERE status = {_FINISHED} AND finished_at IS NULL
        LIMIT :batch FOR UPDATE SKIP LOCKED))
""")  # noqa: S608 - constant SQL


async def give_finished_at(conn: AsyncConnection, batch: int) -> int:
    """Give tasks finished before migration 0013 a finish time (their last due time); how
    many were given one."""
    return int((await conn.execute(_GIVE_FINISHED_AT, {"batch": batch})).rowcount)


_PURGE_FINISHED_TASKS = text(f"""
    DELETE FROM tasks WHERE id = ANY(ARRAY(
        SELECT id FROM tasks
        WHERE status = {_FINISHED} AND finished_at < now() - :age
        ORDER BY finished_at
        LIMIT :batch FOR UPDATE SKIP LOCKED))
    RETURNING id, client_id
""")  # noqa: S608 - constant SQL

_PURGE_CALLS_OF_TASKS = text("DELETE FROM calls WHERE task_id = ANY(:task_ids)")

# Deliveries still pending are left to the notifier (and its dead letters to the operator).
_PURGE_DELIVERIES_OF_TASKS = text("""
    DELETE FROM webhook_deliveries d
    USING json_to_recordset(CAST(:tasks AS json)) AS t(id bigint, client_id text)
    WHERE d.client_id = t.client_id AND d.task_id = t.id AND d.status <> 'pending'
""")


# The tenants' stored-task counters (their quota) count the purged tasks out, as the API's
# DELETE does.
_COUNT_OUT_PURGED = text("""
    UPDATE tenant_usage u SET stored_tasks = greatest(u.stored_tasks - p.purged, 0)
    FROM (SELECT client_id, count(*) AS purged
          FROM json_to_recordset(CAST(:tasks AS json)) AS t(id bigint, client_id text)
          GROUP BY client_id) p
    WHERE u.client_id = p.client_id
""")


class Purged(NamedTuple):
    tasks: int
    calls: int
    deliveries: int


async def purge_finished_tasks(conn: AsyncConnection, age: timedelta, batch: int) -> Purged:
    """Delete up to `batch` tasks finished more than `age` ago, oldest first, with their
    calls and settled webhook deliveries (their attempts go with them), and count them out
    of their tenants' stored tasks."""
    tasks = (await conn.execute(_PURGE_FINISHED_TASKS, {"age": age, "batch": batch})).all()
    if not tasks:
        return Purged(0, 0, 0)
    ids = [row.id for row in tasks]
    calls = await conn.execute(_PURGE_CALLS_OF_TASKS, {"task_ids": ids})
    owners = orjson.dumps([{"id": row.id, "client_id": row.client_id} for row in tasks])
    deliveries = await conn.execute(_PURGE_DELIVERIES_OF_TASKS, {"tasks": owners.decode()})
    await conn.execute(_COUNT_OUT_PURGED, {"tasks": owners.decode()})
    return Purged(len(tasks), int(calls.rowcount), int(deliveries.rowcount))


# Calls outlive a deleted task (its history, and its place in the queue while it runs);
# once ended and old, they go too.
_PURGE_CALLS_OF_DELETED_TASKS = text(f"""
    DELETE FROM calls WHERE call_uuid = ANY(ARRAY(
        SELECT call_uuid FROM calls
        WHERE task_deleted AND result <> {_IN_PROGRESS} AND started_at < now() - :age
        LIMIT :batch FOR UPDATE SKIP LOCKED))
""")  # noqa: S608 - constant SQL


async def purge_calls_of_deleted_tasks(conn: AsyncConnection, age: timedelta, batch: int) -> int:
    params = {"age": age, "batch": batch}
    return int((await conn.execute(_PURGE_CALLS_OF_DELETED_TASKS, params)).rowcount)
