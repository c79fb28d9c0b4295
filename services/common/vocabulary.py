"""The words the services share: task statuses, call outcomes, webhook events.

Each is spelled once, here. They are `StrEnum`s, so a member *is* its string: it goes into
SQL, JSON, log fields and proto string fields as it is, and compares equal to the string
read back from the database or a message. Call outcomes travel between the dialer and the
dispatcher as the proto enum `CallOutcome`; the maps below are the only translation, and a
unit test checks that they cover both enums one to one.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from scheduler.v1 import events_pb2


class TaskStatus(StrEnum):
    """tasks.status (the API shows it as is)."""

    SCHEDULED = "scheduled"
    EXECUTED = "executed"
    DELAYED = "delayed"
    FINISHED = "finished"
    # Due, but outside its queue's calling window: next_run_at is the window's opening.
    DELAYED_INTERVAL = "delayed_interval"
    # Never stored: how the api shows a waiting task that is due in a switched-on queue (held
    # by the queue's limit or a tenant quota), see services/api/task_status.py.
    DELAYED_CONCURRENT_TASK = "delayed_concurrent_task"


# Statuses of a task waiting for its next attempt (claimable once due).
WAITING: Final = (TaskStatus.SCHEDULED, TaskStatus.DELAYED, TaskStatus.DELAYED_INTERVAL)
# What tasks.status may hold.
STORED: Final = tuple(s for s in TaskStatus if s is not TaskStatus.DELAYED_CONCURRENT_TASK)


class FinishResult(StrEnum):
    """tasks.finish_result: empty until the task is finished."""

    NONE = ""
    SUCCESS = "success"
    FAILED = "failed"


class CallOutcome(StrEnum):
    """How one call ended, as stored in calls.result once it has ended."""

    CONNECTED = "connected"
    A_BUSY = "a_busy"
    A_NO_ANSWER = "a_no_answer"
    A_REJECTED = "a_rejected"
    B_BUSY = "b_busy"
    B_NO_ANSWER = "b_no_answer"
    B_REJECTED = "b_rejected"
    ERROR = "error"
    # The dialer did not start the call: the request's calling window had closed. No call
    # was placed (the dispatcher forgets its record), so it is never stored in calls.result.
    OUTSIDE_WINDOW = "outside_window"
    # Decided by the dispatcher when a dialed call's lease ran out without a result; no
    # dialer reports it, so it has no proto value.
    LOST = "lost"


# calls.result of a call that has not ended yet.
CALL_IN_PROGRESS: Final = "in_progress"

# Keyed by str: a CallOutcome is one, and so is the word a backend reports.
OUTCOME_TO_PROTO: Final[Mapping[str, events_pb2.CallOutcome.ValueType]] = MappingProxyType(
    {
        CallOutcome.CONNECTED: events_pb2.CALL_OUTCOME_CONNECTED,
        CallOutcome.A_BUSY: events_pb2.CALL_OUTCOME_A_BUSY,
        CallOutcome.A_NO_ANSWER: events_pb2.CALL_OUTCOME_A_NO_ANSWER,
        CallOutcome.A_REJECTED: events_pb2.CALL_OUTCOME_A_REJECTED,
        CallOutcome.B_BUSY: events_pb2.CALL_OUTCOME_B_BUSY,
        CallOutcome.B_NO_ANSWER: events_pb2.CALL_OUTCOME_B_NO_ANSWER,
        CallOutcome.B_REJECTED: events_pb2.CALL_OUTCOME_B_REJECTED,
        CallOutcome.ERROR: events_pb2.CALL_OUTCOME_ERROR,
        CallOutcome.OUTSIDE_WINDOW: events_pb2.CALL_OUTCOME_OUTSIDE_WINDOW,
    }
)
OUTCOME_FROM_PROTO: Final[Mapping[int, CallOutcome]] = MappingProxyType(
    {proto: CallOutcome(outcome) for outcome, proto in OUTCOME_TO_PROTO.items()}
)


class WebhookEvent(StrEnum):
    """A task's webhook events (TaskEvent.event, the NATS subject's last token)."""

    BEFORE = "before"
    BEFORE_AGAIN = "before_again"
    SUCCESS = "success"
    AFTER = "after"

    @property
    def url_field(self) -> str:
        """The task's column (and API field) holding this event's URL."""
        return f"url_{self.value}"

    @property
    def rank(self) -> int:
        """Order of the event within one attempt: an attempt starts (`before` on the first,
        `before_again` on the others), may connect (`success`), and the last one ends the
        task (`after`). The notifier delivers a task's events in this order."""
        return _RANK[self]


_RANK: Final = MappingProxyType(
    {
        WebhookEvent.BEFORE: 0,
        WebhookEvent.BEFORE_AGAIN: 0,
        WebhookEvent.SUCCESS: 1,
        WebhookEvent.AFTER: 2,
    }
)
