"""Every SQL statement the dialer runs, one function each."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.models import Call

calls = cast(Table, Call.__table__)

_ATTEMPT_IS_CURRENT = text("""
    SELECT 1 FROM tasks
    WHERE id = :task_id AND status = 'executed' AND attempts = :attempt
    FOR SHARE
""")


async def start_call(
    conn: AsyncConnection,
    *,
    call_uuid: str,
    client_id: str,
    queue_id: int,
    task_id: int,
    attempt: int,
    backend: str,
) -> bool:
    """Record the call of an attempt just before dialing it; False means "do not dial".

    The share lock on the task makes a concurrent DELETE (of the task or its queue) or a
    lease expiry wait for this transaction, and makes this one see theirs if they came
    first: a deleted task or a resolved attempt is never dialed. The unique
    (task_id, attempt) makes a second call for one attempt impossible.
    """
    current = await conn.execute(_ATTEMPT_IS_CURRENT, {"task_id": task_id, "attempt": attempt})
    if current.first() is None:
        return False
    stmt = (
        pg_insert(calls)
        .values(
            call_uuid=call_uuid,
            client_id=client_id,
            queue_id=queue_id,
            task_id=task_id,
            attempt=attempt,
            backend=backend,
        )
        .on_conflict_do_nothing()
        .returning(calls.c.call_uuid)
    )
    return (await conn.execute(stmt)).first() is not None


async def finish_call(
    conn: AsyncConnection,
    call_uuid: str,
    *,
    result: str,
    comment: str,
    ended_at: datetime,
    record: dict[str, Any],
) -> None:
    """Store how the call went (its legs, times and result)."""
    stmt = (
        update(calls)
        .where(calls.c.call_uuid == call_uuid, calls.c.result == "in_progress")
        .values(result=result, comment=comment, ended_at=ended_at, record=record)
    )
    await conn.execute(stmt)
