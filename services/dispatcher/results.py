"""Applying the end of an attempt to its task, inside the caller's transaction."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatcher import repository
from services.dispatcher.lifecycle import Resolution
from services.dispatcher.messages import webhook_events


def resolved_view(task: Any, resolution: Resolution) -> SimpleNamespace:
    """The task as it is once the resolution is applied (for events, without a re-read)."""
    return SimpleNamespace(
        **{
            **task._mapping,
            "status": resolution.status,
            "finish_result": resolution.finish_result,
            "finish_comment": resolution.finish_comment,
            "lease_expires_at": None,
        }
    )


def end_attempt_params(task_id: int, resolution: Resolution) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "status": resolution.status,
        "finish_result": resolution.finish_result,
        "finish_comment": resolution.finish_comment,
        "retry_after": resolution.retry_after,
    }


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
    await repository.add_to_outbox(conn, webhook_events(updated, resolution.events))
    return updated
