"""Rows that integration tests write in SQL, on a database of their own."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def add_queue(conn: AsyncConnection) -> int:
    """A switched-on queue of tenant `acme` (limit 10), for tests that write tasks in SQL."""
    queue = await conn.execute(
        text("""
            INSERT INTO queues (client_id, name, comment, status, concurrent_task_limit)
            VALUES ('acme', 'q', '', 'on', 10) RETURNING id
        """)
    )
    return int(queue.scalar_one())


# What a task written by add_tasks holds unless told otherwise: due now, one try.
TASK_DEFAULTS: dict[str, Any] = {
    "client_id": "acme",
    "name": "n",
    "a_number": "+15550000000",
    "b_number": "+15550000001",
    "extension_id": 0,
    "try_count": 1,
    "try_again_pause": 60,
    "url_before": "",
    "url_before_again": "",
    "url_success": "",
    "url_after": "",
    "callback_params": {},
}


async def add_tasks(conn: AsyncConnection, queue: int, count: int = 1, **columns: Any) -> list[int]:
    """`count` tasks of `queue` due now (start_time_utc and next_run_at: now()), with
    TASK_DEFAULTS and `columns` (values, bound as parameters; callback_params a dict, a
    datetime for a timestamp column); their ids."""
    values = {**TASK_DEFAULTS, **columns}
    values["callback_params"] = json.dumps(values["callback_params"])
    names = ", ".join(values)
    placeholders = ", ".join(
        "CAST(:callback_params AS jsonb)" if name == "callback_params" else f":{name}"
        for name in values
    )
    inserted = await conn.execute(
        text(f"""
            INSERT INTO tasks (queue_id, start_time_utc, next_run_at, {names})
            SELECT :queue, now(), now(), {placeholders}
            FROM generate_series(1, :count)
            RETURNING id
        """),  # column names come from test code; values are bound
        {**values, "queue": queue, "count": count},
    )
    return [int(row.id) for row in inserted]
