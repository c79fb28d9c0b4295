"""Applying the end of an attempt to its task, inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatcher import repository
from services.dispatcher.lifecycle import Resolution
from services.dispatcher.messages import task_event


async def apply_resolution(conn: AsyncConnection, task: Any, resolution: Resolution) -> Any:
    """Move the task on and queue the webhook events this resolution announces."""
    updated = await repository.end_attempt(
        conn,
        task.id,
        status=resolution.status,
        finish_result=resolution.finish_result,
        finish_comment=resolution.finish_comment,
        retry_after=resolution.retry_after,
    )
    await repository.add_to_outbox(conn, [task_event(updated, e) for e in resolution.events])
    return updated
