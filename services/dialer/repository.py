"""Every SQL statement the dialer runs, one function each."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.models import Call

calls = cast(Table, Call.__table__)


@dataclass(frozen=True)
class NewCall:
    call_uuid: str
    client_id: str
    queue_id: int
    task_id: int
    attempt: int
    backend: str


_CURRENT_ATTEMPTS = text("""
    SELECT id, attempts FROM tasks
    WHERE id = ANY(:task_ids) AND status = 'executed'
    ORDER BY id
    FOR SHARE
""")


async def start_calls(conn: AsyncConnection, new_calls: Sequence[NewCall]) -> set[str]:
    """Record calls just before dialing them; returns the call_uuids that may be dialed.

    The share locks on the tasks make a concurrent DELETE (of a task or its queue) or a
    lease expiry wait for this transaction, and make this one see theirs if they came
    first: a deleted task or a resolved attempt is never dialed. The unique
    (task_id, attempt) makes a second call for one attempt impossible, whatever redelivers.
    Locks are taken in id order, so two dialers never deadlock.
    """
    if not new_calls:
        return set()
    params = {"task_ids": sorted({c.task_id for c in new_calls})}
    current = {(row.id, row.attempts) for row in await conn.execute(_CURRENT_ATTEMPTS, params)}
    rows = [asdict(c) for c in new_calls if (c.task_id, c.attempt) in current]
    if not rows:
        return set()
    stmt = pg_insert(calls).on_conflict_do_nothing().returning(calls.c.call_uuid)
    return {row.call_uuid for row in await conn.execute(stmt, rows)}


_FINISH_CALL = text("""
    UPDATE calls
    SET result = :result, comment = :comment, ended_at = :ended_at,
        record = CAST(:record AS jsonb)
    WHERE call_uuid = :call_uuid AND result = 'in_progress'
""")


async def finish_calls(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Store how calls went (legs, times, result); one round trip for many (executemany)."""
    params = [{**row, "record": json.dumps(row["record"])} for row in rows]
    await conn.execute(_FINISH_CALL, params)
