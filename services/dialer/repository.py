"""Every SQL statement the dialer runs, one function each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.vocabulary import CALL_IN_PROGRESS, TaskStatus


@dataclass(frozen=True)
class NewCall:
    call_uuid: str
    client_id: str
    queue_id: int
    task_id: int
    attempt: int
    backend: str


# The status is checked on the rows found by id, not in the scan: `status = 'executed'` in
# the WHERE let the planner scan the partial index of every executed task and filter it by
# id (tens of ms for a batch during a burst). The call_uuid must be the attempt's current one: a
# request the dispatcher replaced (it dials an attempt again when no call was placed) is
# stale.
_CURRENT_ATTEMPTS = text(f"""
    SELECT id, attempts, cdr, status = '{TaskStatus.EXECUTED}' AS executed,
           EXTRACT(EPOCH FROM lease_expires_at - now()) - :longest_call_seconds
               AS dial_within
    FROM tasks
    WHERE id = ANY(:task_ids)
    ORDER BY id
    FOR SHARE
""")  # noqa: S608 - constant SQL


class Recorded(NamedTuple):
    """A call recorded for this dialer to dial."""

    # Seconds (from before the statement ran) within which to dial it, if at all.
    within: float
    # Its deadline by the database's clock: only the dialer that recorded it may mark it
    # dialed, and only until then (a redelivery may take it over after).
    dial_by: datetime


@dataclass(frozen=True)
class Started:
    """What record_calls decided: the calls to dial, and those refused for want of time."""

    may_dial: dict[str, Recorded]
    # Current attempts whose lease ends before the longest call could: dialing them would
    # let the lease expire mid-call. Not recorded: the lease expiry dials them again.
    too_late: set[str]


async def record_calls(
    conn: AsyncConnection,
    new_calls: Sequence[NewCall],
    longest_call_seconds: float,
    hold_seconds: float,
    grace_seconds: float,
) -> Started:
    """Record calls due within `hold_seconds`, before dialing them; returns those this
    dialer must dial (within the seconds given for each) or never.

    The share locks on the tasks make a concurrent DELETE (of a task or its queue) or a
    lease expiry wait for this transaction, and make this one see theirs if they came
    first: a deleted task or a resolved attempt is never dialed. The unique
    (task_id, attempt) makes a second call for one attempt impossible, whatever redelivers;
    a recorded row is taken over only once its deadline (the hold plus `grace_seconds`)
    passed without a dial (its dialer died between recording and dialing). An attempt
    whose lease ends before the hold plus the longest call is not dialed (the request came
    late: dialers or NATS were down); its lease expiry dials it again. Locks are taken in
    id order, so two dialers never deadlock.
    """
    if not new_calls:
        return Started({}, set())
    params = {
        "task_ids": sorted({c.task_id for c in new_calls}),
        "longest_call_seconds": longest_call_seconds,
    }
    found = {
        (row.id, row.attempts, row.cdr): float(row.dial_within)
        for row in await conn.execute(_CURRENT_ATTEMPTS, params)
        if row.executed
    }
    within = {c.call_uuid: found.get((c.task_id, c.attempt, c.call_uuid)) for c in new_calls}
    in_time = {uuid: w for uuid, w in within.items() if w is not None and w >= hold_seconds}
    too_late = {uuid for uuid, w in within.items() if w is not None and w < hold_seconds}
    dial = [c for c in new_calls if c.call_uuid in in_time]
    if not dial:
        return Started({}, too_late)
    deadline = hold_seconds + grace_seconds
    params = {"calls": orjson.dumps(dial).decode(), "dial_within_seconds": deadline}
    inserted = await conn.execute(_INSERT_CALLS, params)
    may_dial = {
        row.call_uuid: Recorded(min(deadline, in_time[row.call_uuid]), row.dial_by)
        for row in inserted
    }
    return Started(may_dial, too_late)


# Set-based statements, one per batch, their rows passed as one JSON document: executemany
# ran one statement per call (the per-statement cost was most of the database's share of a
# callback), and arrays cost the dialer more than the database (psycopg escapes each
# element of a text array with a regular expression). Encoded by orjson, an order of
# magnitude faster than json.dumps (README, Benchmarks), and it takes datetimes as they are.
_INSERT_CALLS = text(f"""
    INSERT INTO calls (call_uuid, client_id, queue_id, task_id, attempt, backend, dial_by)
    SELECT call_uuid, client_id, queue_id, task_id, attempt, backend,
           now() + make_interval(secs => :dial_within_seconds)
    FROM json_populate_recordset(NULL::calls, CAST(:calls AS json))
    ON CONFLICT (call_uuid) DO UPDATE SET dial_by = EXCLUDED.dial_by
        WHERE calls.dialed_at IS NULL AND calls.result = '{CALL_IN_PROGRESS}'
          AND calls.dial_by < now()
    RETURNING call_uuid, dial_by
""")  # noqa: S608 - constant SQL


# A later deadline for records whose calls the calls-per-second cap starts later than their
# deadline allowed. Only the dialer that recorded a row may move its deadline, and only
# before it passed (after that a redelivery may have taken the row over). Never past the
# moment the attempt's lease still covers the longest call: the lease expiry must find the
# row's deadline passed, or it would dial the attempt again while this dialer may still.
_EXTEND_DEADLINES = text("""
    UPDATE calls c
    SET dial_by = LEAST(now() + make_interval(secs => j.seconds),
                        t.lease_expires_at - make_interval(secs => :longest_call_seconds))
    FROM json_to_recordset(CAST(:calls AS json))
             AS j(call_uuid text, dial_by timestamptz, seconds float8),
         tasks t
    WHERE c.call_uuid = j.call_uuid AND c.dial_by = j.dial_by AND t.id = c.task_id
      AND c.dialed_at IS NULL AND now() <= c.dial_by
      AND t.lease_expires_at - make_interval(secs => :longest_call_seconds) > c.dial_by
    RETURNING c.call_uuid, c.dial_by, EXTRACT(EPOCH FROM c.dial_by - now()) AS seconds_left
""")


async def extend_deadlines(
    conn: AsyncConnection,
    calls: dict[str, tuple[Recorded, float]],
    longest_call_seconds: float,
) -> dict[str, tuple[datetime, float]]:
    """Give recorded calls (with the seconds from now each needs) a later deadline; the new
    deadline and the seconds it leaves, for those whose deadline moved."""
    if not calls:
        return {}
    rows = [
        {"call_uuid": uuid, "dial_by": recorded.dial_by, "seconds": seconds}
        for uuid, (recorded, seconds) in calls.items()
    ]
    params = {"calls": orjson.dumps(rows).decode(), "longest_call_seconds": longest_call_seconds}
    return {
        row.call_uuid: (row.dial_by, float(row.seconds_left))
        for row in await conn.execute(_EXTEND_DEADLINES, params)
    }


async def release_calls(conn: AsyncConnection, call_uuids: Sequence[str]) -> None:
    """Forget recorded calls this dialer will not dial after all (it is stopping): another
    dialer takes their requests at once instead of waiting for their deadline."""
    if call_uuids:
        stmt = text("DELETE FROM calls WHERE call_uuid = ANY(:uuids) AND dialed_at IS NULL")
        await conn.execute(stmt, {"uuids": list(call_uuids)})


# The row's deadline must be the one this dialer recorded, and not passed: a dialer held up
# past it may have lost the row to a redelivery, which dials it. The call starts when it is
# due, or now if that is later (a mark may start a little before the due time).
_MARK_CALLS_DIALED = text("""
    UPDATE calls c SET dialed_at = r.at, started_at = r.at
    FROM (SELECT call_uuid, dial_by, GREATEST(clock_timestamp(), :due_at) AS at
          FROM json_to_recordset(CAST(:calls AS json))
               AS j(call_uuid text, dial_by timestamptz)) r
    WHERE c.call_uuid = r.call_uuid AND c.dial_by = r.dial_by
      AND c.dialed_at IS NULL AND now() <= c.dial_by
    RETURNING c.call_uuid
""")


async def mark_calls_dialed(
    conn: AsyncConnection, calls: dict[str, Recorded], due_at: datetime
) -> set[str]:
    """Mark recorded calls due at `due_at` dialed, just before dialing them; the ones that
    may be dialed (the others missed their deadline). Committed before the dial: from then
    on the call counts as a try, and its attempt is never dialed again."""
    if not calls:
        return set()
    rows = [{"call_uuid": uuid, "dial_by": r.dial_by} for uuid, r in calls.items()]
    params = {"calls": orjson.dumps(rows).decode(), "due_at": due_at}
    return {row.call_uuid for row in await conn.execute(_MARK_CALLS_DIALED, params)}


# Columns named, not json_populate_recordset(NULL::calls, ...): filling every column of the
# row type took longer. The record is read as json and cast: read as jsonb straight from
# the recordset, it took twice as long to parse (README, Benchmarks). `c.result = r.open`
# ('in_progress' in every row) is a join condition, not a filter by a constant, for the
# planner: the statistics of a young calls table say that no call is in progress, and with
# the constant it scanned calls in the outer loop and the JSON rows once per call (README,
# Benchmarks).
_FINISH_CALLS = text("""
    UPDATE calls c
    SET result = r.result, comment = r.comment, ended_at = r.ended_at,
        record = CAST(r.record AS jsonb),
        connected_at = COALESCE(c.connected_at, r.connected_at)
    FROM json_to_recordset(CAST(:calls AS json))
         AS r(call_uuid text, open text, result text, comment text, ended_at timestamptz,
              connected_at timestamptz, record json)
    WHERE c.call_uuid = r.call_uuid AND c.result = r.open
""")


async def finish_calls(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Store how calls went (legs, times, result), in one statement for many; a call no
    longer in progress (the dispatcher gave it up as lost) is left as it is."""
    if rows:
        calls = [{**row, "open": CALL_IN_PROGRESS} for row in rows]
        await conn.execute(_FINISH_CALLS, {"calls": orjson.dumps(calls).decode()})


_TENANT_ACCOUNTS = text("""
    SELECT a.client_id, a.extension_id, a.username, a.password
    FROM tenant_sip_accounts a
    JOIN json_to_recordset(CAST(:pairs AS json)) AS p(client_id text, extension_id integer)
      ON a.client_id = p.client_id AND a.extension_id = p.extension_id
""")


async def tenant_accounts(
    conn: AsyncConnection, pairs: set[tuple[str, int]]
) -> dict[tuple[str, int], tuple[str, str]]:
    """The SIP accounts of these (client_id, extension_id): (username, password) each. A
    pair without a row has no account of the tenant's own."""
    if not pairs:
        return {}
    rows = [{"client_id": c, "extension_id": e} for c, e in sorted(pairs)]
    found = await conn.execute(_TENANT_ACCOUNTS, {"pairs": orjson.dumps(rows).decode()})
    return {(r.client_id, r.extension_id): (r.username, r.password) for r in found}
