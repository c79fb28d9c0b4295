"""Carrying out a transition plan (services/dispatcher/transitions.py) in the caller's
transaction: the only place the dispatcher writes the end of an attempt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common import call_records
from services.dispatcher import repository
from services.dispatcher.lifecycle import Resolution
from services.dispatcher.messages import dial_requests, has_webhook, webhook_events
from services.dispatcher.transitions import Announcement, Plan
from services.dispatcher.windows import Claimed, closings


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
    """A row of repository.end_attempts."""
    return {
        "task_id": task_id,
        "status": resolution.status,
        "finish_result": resolution.finish_result,
        "finish_comment": resolution.finish_comment,
        "retry_after": resolution.retry_after,
        "caller_failed": resolution.caller_failed,
        "unspent": resolution.unspent,
        "run_at": resolution.run_at,
    }


@dataclass(frozen=True)
class Written:
    webhooks: int  # webhook events put in the outbox
    redialed: int  # attempts dialed again


async def write_plan(
    conn: AsyncConnection,
    plan: Plan,
    tasks: Mapping[int, Any],
    *,
    whole_rows: bool,
    lease_seconds: float = 0.0,
) -> Written:
    """Make the plan's writes and queue its announcements (webhook events, dial requests).
    `tasks`: the locked rows the plan was made from; `whole_rows` if they have every column
    a webhook shows (else those are read, only for the tasks that have a URL for one)."""
    messages = await _webhooks(conn, tasks, plan.announcements, whole_rows)
    if plan.calls_lost:
        await repository.mark_calls_lost(conn, plan.calls_lost)
    if plan.calls_forgotten:
        await repository.forget_undialed_calls(conn, plan.calls_forgotten)
    redialed = [await repository.redial(conn, task_id, lease_seconds) for task_id in plan.redials]
    if redialed:
        messages.append(dial_requests(redialed, await _window_closings(conn, redialed)))
    await repository.add_to_outbox(conn, messages)
    await call_records.note_calls_connected(conn, plan.calls_connected)
    await repository.end_attempts(
        conn, [end_attempt_params(task_id, resolution) for task_id, resolution in plan.ends]
    )
    if plan.wake:
        await repository.notify_wake(conn)
    return Written(len(messages) - bool(redialed), len(redialed))


async def _window_closings(conn: AsyncConnection, rows: Sequence[Any]) -> dict[int, datetime]:
    """When the calling windows of attempts dialed again close (their first request's
    closing may have passed, or the window changed since), by task id."""
    found: dict[int, datetime] = {}
    windows_of = await repository.dial_windows(conn, [row.queue_id for row in rows])
    for queue_id, (now, window) in windows_of.items():
        claimed = [
            Claimed(row.id, row.timezone, row.next_run_at)
            for row in rows
            if row.queue_id == queue_id
        ]
        found.update(closings(window, now, claimed))
    return found


async def _webhooks(
    conn: AsyncConnection,
    tasks: Mapping[int, Any],
    announcements: Sequence[Announcement],
    whole_rows: bool,
) -> list[repository.Message]:
    """The webhook events to publish, with the task as it is at each. Whole rows are read
    (before any write) only for the tasks that have a URL for them."""
    wanted = [a for a in announcements if has_webhook(tasks[a.task_id], a.events)]
    if not wanted:
        return []
    whole: Mapping[int, Row[Any]] = tasks
    if not whole_rows:
        rows = await repository.tasks_by_id(conn, [a.task_id for a in wanted])
        whole = {row.id: row for row in rows}
    return [
        message
        for a in wanted
        for message in webhook_events(
            whole[a.task_id]
            if a.resolution is None
            else resolved_view(whole[a.task_id], a.resolution),
            a.events,
        )
    ]
