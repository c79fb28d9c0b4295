"""Rows that integration tests write in SQL, on a database of their own."""

from __future__ import annotations

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
