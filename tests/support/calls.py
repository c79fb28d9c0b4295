"""Audits of the `calls` table of a stack, read as another client, and how many calls
overlapped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from deploy.local.stack import Stack


@dataclass(frozen=True)
class CallRow:
    call_uuid: str
    client_id: str
    queue_id: int
    task_id: int
    attempt: int
    result: str
    comment: str
    started_at: datetime
    ended_at: datetime | None
    record: dict[str, Any]


_CALL_COLUMNS = (
    "call_uuid, client_id, queue_id, task_id, attempt, result, comment, started_at, ended_at, "
    "record"
)


def _calls(stack: Stack, where: str, params: Sequence[Any]) -> list[CallRow]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE {where} ORDER BY started_at, attempt",
            params,
        ).fetchall()
    return [CallRow(*row) for row in rows]


def calls_of_task(stack: Stack, task_id: int) -> list[CallRow]:
    """Every call placed for a task, oldest first (the rows outlive a deleted task)."""
    return _calls(stack, "task_id = %s", (task_id,))


def calls_of_queue(stack: Stack, queue_id: int) -> list[CallRow]:
    return _calls(stack, "queue_id = %s", (queue_id,))


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The most intervals in progress at one moment (an end and a start at the same moment
    do not overlap)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:  # at equal times, ends (-1) sort before starts (+1)
        running += step
        peak = max(peak, running)
    return peak


def call_intervals(calls: Iterable[CallRow]) -> list[tuple[datetime, datetime]]:
    ended = []
    for call in calls:
        assert call.ended_at is not None, f"call {call.call_uuid} has not ended"
        ended.append((call.started_at, call.ended_at))
    return ended
