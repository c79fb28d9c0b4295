"""Outgoing messages of the dispatcher, built from task rows (protobuf, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler.v1 import events_pb2

from services.common.bus import SUBJECT_DIAL, SUBJECT_EVENTS
from services.common.task_view import task_to_proto
from services.common.timefmt import format_utc
from services.dispatcher.lifecycle import EVENT_URL_FIELDS, event_id
from services.dispatcher.repository import Message


def dial_requests(
    tasks: Sequence[Any], window_closings: Mapping[int, datetime] | None = None
) -> Message:
    """Ask a dialer to place the calls of the tasks' current attempts (claimed together);
    `window_closings`: when the calling window of each task that has one closes (by id)."""
    first = tasks[0]
    closings = window_closings or {}
    batch = events_pb2.DialRequests()
    for task in tasks:  # built in place: a request made apart is copied into the batch
        batch.requests.add(**dial_request_fields(task, closings.get(task.id)))
    # Named by the call: an attempt dialed again (no call was placed) has a new call_uuid,
    # which JetStream's duplicate window must not take for the first request.
    return Message(SUBJECT_DIAL, f"dial:{first.cdr}", batch.SerializeToString())


def dial_request_fields(task: Any, window_closes_at: datetime | None = None) -> dict[str, Any]:
    """The DialRequest of a task's current attempt, as keyword arguments (from a claimed
    row: its callback_params already taken apart, see claim_due_tasks). Fields at their
    default are left out: setting them, an empty list above all, was much of the time
    spent on a request (README, Benchmarks)."""
    fields = dict(
        task_id=task.id,
        attempt=task.attempts,
        call_uuid=task.cdr,
        client_id=task.client_id,
        queue_id=task.queue_id,
        a_number=task.a_number,
        b_number=task.b_number,
        due_at_unix_ms=int(task.next_run_at.timestamp() * 1000),
        skip_connected_event=not task.url_success,
    )
    if task.extended_a_numbers:
        fields["extended_a_numbers"] = task.extended_a_numbers
    if task.caller_id_name:
        fields["caller_id_name"] = task.caller_id_name
    if task.caller_id_number:
        fields["caller_id_number"] = task.caller_id_number
    if task.extension_id:
        fields["extension_id"] = task.extension_id
    # NULL for tasks stored before these limits existed: the dialer's own limits.
    if task.ring_timeout:
        fields["ring_timeout"] = task.ring_timeout
    if task.call_duration:
        fields["call_duration"] = task.call_duration
    if window_closes_at is not None:
        fields["window_closes_at_unix_ms"] = int(window_closes_at.timestamp() * 1000)
    return fields


def has_webhook(task: Any, events: Iterable[str]) -> bool:
    """Whether the task has a URL for any of these events."""
    return any(getattr(task, EVENT_URL_FIELDS[event]) for event in events)


def webhook_events(task: Any, events: Iterable[str]) -> list[Message]:
    """The task's events that have a URL to go to. The others are not published: the
    notifier only has webhooks to deliver, and a task without URLs then costs one message
    (its dial request) per attempt instead of up to four."""
    return [task_event(task, event) for event in events if getattr(task, EVENT_URL_FIELDS[event])]


def task_event(task: Any, event: str) -> Message:
    """A webhook event for the notifier, carrying the task as the API shows it now."""
    ident = event_id(task.id, task.attempts, event)
    payload = events_pb2.TaskEvent(
        event_id=ident,
        event=event,
        attempt=task.attempts,
        occurred_at=format_utc(datetime.now(UTC)),
        client_id=task.client_id,
        url=getattr(task, EVENT_URL_FIELDS[event]),
        task=task_to_proto(task),
    )
    return Message(f"{SUBJECT_EVENTS}.{event}", ident, payload.SerializeToString())
