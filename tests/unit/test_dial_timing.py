"""The dialer holds requests that came before their due time (the dispatcher's lookahead)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from scheduler.v1 import events_pb2

from services.dialer.consumer import _by_due_time

NOW_MS = 1_800_000_000_000.0


def request(task_id: int, due_ms: int) -> Any:
    data = events_pb2.DialRequest(
        task_id=task_id,
        attempt=1,
        call_uuid=f"uuid-{task_id}",
        a_number="+1555",
        due_at_unix_ms=due_ms,
    ).SerializeToString()
    return SimpleNamespace(data=data, subject="callbacks.dial", task_id=task_id)


def test_due_and_overdue_go_now_later_ones_wait_by_due_time() -> None:
    messages = [
        request(1, int(NOW_MS) - 5_000),  # overdue
        request(2, int(NOW_MS) + 200),
        request(3, 0),  # no due time: now
        request(4, int(NOW_MS) + 200),
        request(5, int(NOW_MS) + 1_000),
    ]
    unreadable: Any = SimpleNamespace(data=b"\xff\xff", subject="callbacks.dial", task_id=None)

    groups: dict[float, list[Any]] = _by_due_time([*messages, unreadable], NOW_MS)

    assert {due: [m.task_id for m in group] for due, group in groups.items()} == {
        NOW_MS: [1, 3, None],
        NOW_MS + 200: [2, 4],
        NOW_MS + 1_000: [5],
    }
