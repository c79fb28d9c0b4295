"""Task transitions planned in one place, as pure rules (no I/O).

An attempt ends in one of two ways: a dialer reports its call (`Connected`, then `Ended`), or
its lease runs out first (`LeaseExpired`, with the call the dialer recorded, if any). The
dispatcher's edges (the call-event consumer and the lease check) lock the tasks, read what
the events need, hand both to `plan`, and write the `Plan` it returns: the writes to make and
the webhook events to announce. What becomes of a task is decided here and in `lifecycle`
(the rules of one attempt), nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from services.common.vocabulary import CALL_IN_PROGRESS, CallOutcome, TaskStatus, WebhookEvent
from services.dispatcher.lifecycle import (
    LOST_AFTER_CONNECTED,
    Redial,
    Resolution,
    resolve_attempt,
    resolve_outside_window,
    resolve_undialed,
)


class LockedTask(Protocol):
    """What the planner reads of a task, locked by the caller for the transaction."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def try_count(self) -> int: ...
    @property
    def try_again_pause(self) -> int: ...
    @property
    def try_count_caller(self) -> int: ...
    @property
    def try_again_pause_caller(self) -> int: ...
    @property
    def caller_failures(self) -> int: ...


class Connected(NamedTuple):
    """A dialer connected A and B on the attempt's call."""

    task_id: int
    attempt: int
    call_uuid: str


class Ended(NamedTuple):
    """A dialer reports how the attempt's call ended."""

    task_id: int
    attempt: int
    call_uuid: str
    outcome: CallOutcome
    comment: str = ""
    # With `outside_window`: when the window closed, as the dial request said.
    closed_at: datetime | None = None


class RecordedCall(NamedTuple):
    """The call a dialer recorded for an attempt, as its row is when the lease runs out."""

    call_uuid: str
    result: str  # a CallOutcome once the call ended, CALL_IN_PROGRESS until then
    comment: str
    connected: bool  # A and B were known to be connected (calls.connected_at)
    dialed: bool  # handed to a backend: it counts as a try


class LeaseExpired(NamedTuple):
    """The attempt's lease ran out before its end was reported."""

    task_id: int
    attempt: int
    redials: int  # dial requests of this attempt beyond the first
    call: RecordedCall | None


# NamedTuples, not frozen dataclasses: one is built per call event, and a NamedTuple is
# several times cheaper to build (README, Benchmarks: call plans, legs and reports).
Event = Connected | Ended | LeaseExpired


class Announcement(NamedTuple):
    """Webhook events of a task, with the task as it is once `resolution` is applied (None:
    as it is now, still executed)."""

    task_id: int
    resolution: Resolution | None
    events: tuple[WebhookEvent, ...]


class Decision(NamedTuple):
    """What an event did to its task, for the logs and metrics. `outcome` is the call's
    outcome; for an expired lease also "redial" or "not_dialed"; "" for `Connected`."""

    event: Event
    outcome: str = ""
    resolution: Resolution | None = None


@dataclass(frozen=True)
class Plan:
    """The writes and announcements that carry out a batch of events, in this order of
    concern: each list is written with one statement (the redials one each)."""

    # Attempts that ended: the task moves on (delayed or finished), with this resolution.
    ends: tuple[tuple[int, Resolution], ...] = ()
    # Calls known to have connected A and B, whose end is not in this batch.
    calls_connected: tuple[str, ...] = ()
    # Dialed calls given up as lost (their lease ran out without a result).
    calls_lost: tuple[str, ...] = ()
    # Recorded calls never dialed (their lease ran out, or their window closed first): they
    # were no call, and are forgotten.
    calls_forgotten: tuple[str, ...] = ()
    # Tasks whose current attempt is dialed again (a new call and lease, no try spent).
    redials: tuple[int, ...] = ()
    announcements: tuple[Announcement, ...] = ()
    decisions: tuple[Decision, ...] = ()
    # Events that changed nothing: the attempt was already resolved, or the task deleted.
    stale: tuple[Event, ...] = ()
    # Wake the dispatchers (a call ended, so a place in its queue may be free, or a task
    # may be due again).
    wake: bool = False


@dataclass
class _Planner:
    tasks: Mapping[int, LockedTask]
    max_redials: int
    ends: list[tuple[int, Resolution]] = field(default_factory=list)
    connected: list[str] = field(default_factory=list)
    ended_calls: set[str] = field(default_factory=set)
    lost: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    redials: list[int] = field(default_factory=list)
    announcements: list[Announcement] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    stale: list[Event] = field(default_factory=list)
    resolved: set[int] = field(default_factory=set)  # a second end of one attempt is stale

    def current(self, event: Event) -> LockedTask | None:
        task = self.tasks.get(event.task_id)
        if (
            task is None
            or task.id in self.resolved
            or task.status != TaskStatus.EXECUTED
            or task.attempts != event.attempt
        ):
            return None
        return task

    def end(self, event: Event, task: LockedTask, outcome: str, comment: str) -> None:
        resolution = resolve_attempt(
            outcome=outcome,
            comment=comment,
            attempt=task.attempts,
            try_count=task.try_count,
            try_again_pause=task.try_again_pause,
            try_count_caller=task.try_count_caller,
            try_again_pause_caller=task.try_again_pause_caller,
            caller_failures=task.caller_failures,
        )
        self.resolve(event, task, outcome, resolution)

    def resolve(self, event: Event, task: LockedTask, outcome: str, resolution: Resolution) -> None:
        self.resolved.add(task.id)
        self.ends.append((task.id, resolution))
        self.announcements.append(Announcement(task.id, resolution, resolution.events))
        self.decisions.append(Decision(event, outcome, resolution))

    def expire(self, event: LeaseExpired, task: LockedTask) -> None:
        """An attempt whose lease ran out: decided by the call's result if the dialer saved
        one, as connected if A and B were known to be connected, as lost if the call was
        dialed; an attempt that placed no call is dialed again (see lifecycle)."""
        call = event.call
        if call is not None and call.result != CALL_IN_PROGRESS:
            self.end(event, task, call.result, call.comment)
        elif call is not None and call.connected:
            # A and B talked (and `success` went out, if the task has its URL), however the
            # call ended.
            self.lost.append(call.call_uuid)
            self.end(event, task, CallOutcome.CONNECTED, LOST_AFTER_CONNECTED)
        elif call is not None and call.dialed:
            self.lost.append(call.call_uuid)
            self.end(event, task, CallOutcome.LOST, "")
        else:
            if call is not None:
                self.forgotten.append(call.call_uuid)
            step = resolve_undialed(
                attempt=task.attempts, redials=event.redials, max_redials=self.max_redials
            )
            if isinstance(step, Redial):
                self.redials.append(task.id)
                self.decisions.append(Decision(event, "redial"))
            else:
                self.resolve(event, task, "not_dialed", step)

    def apply(self, event: Event) -> None:
        task = self.current(event)
        if task is None:
            self.stale.append(event)
        elif isinstance(event, Connected):
            self.connected.append(event.call_uuid)
            self.announcements.append(Announcement(task.id, None, (WebhookEvent.SUCCESS,)))
            self.decisions.append(Decision(event))
        elif isinstance(event, Ended) and event.outcome == CallOutcome.OUTSIDE_WINDOW:
            # Not dialed: its record goes (the same attempt is made again, with a new call).
            self.ended_calls.add(event.call_uuid)
            self.forgotten.append(event.call_uuid)
            resolution = resolve_outside_window(
                attempt=task.attempts, comment=event.comment, closed_at=event.closed_at
            )
            self.resolve(event, task, event.outcome, resolution)
        elif isinstance(event, Ended):
            self.ended_calls.add(event.call_uuid)
            self.end(event, task, event.outcome, event.comment)
        else:
            self.expire(event, task)


def plan(tasks: Mapping[int, LockedTask], events: Iterable[Event], *, max_redials: int = 0) -> Plan:
    """The writes and announcements that apply `events`, in order, to the locked `tasks`
    (by id). An event whose task is missing, not executed, on another attempt, or already
    resolved by an earlier event of the batch is stale: it changes nothing."""
    planner = _Planner(tasks, max_redials)
    events = list(events)
    for event in events:
        planner.apply(event)
    return Plan(
        ends=tuple(planner.ends),
        # connected_at matters only to an attempt whose end never comes (lease expiry): one
        # that ends in this same transaction needs no such note.
        calls_connected=tuple(u for u in planner.connected if u not in planner.ended_calls),
        calls_lost=tuple(planner.lost),
        calls_forgotten=tuple(planner.forgotten),
        redials=tuple(planner.redials),
        announcements=tuple(planner.announcements),
        decisions=tuple(planner.decisions),
        stale=tuple(planner.stale),
        wake=any(not isinstance(event, Connected) for event in events),
    )
