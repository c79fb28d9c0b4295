"""The transition planner (services/dispatcher/transitions.py): locked tasks + events in, the
writes and announcements out. Pure, no database: every transition the life cycle has."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from services.common.vocabulary import (
    CALL_IN_PROGRESS,
    CallOutcome,
    FinishResult,
    TaskStatus,
    WebhookEvent,
)
from services.dispatcher.lifecycle import LOST_AFTER_CONNECTED, resolve_attempt
from services.dispatcher.transitions import (
    Announcement,
    Connected,
    Decision,
    Ended,
    LeaseExpired,
    Plan,
    RecordedCall,
    plan,
)


@dataclass(frozen=True)
class Task:
    id: int = 7
    status: str = TaskStatus.EXECUTED
    attempts: int = 1
    try_count: int = 3
    try_again_pause: int = 60
    try_count_caller: int = 0
    try_again_pause_caller: int = 0
    caller_failures: int = 0


def tasks(*rows: Task) -> dict[int, Task]:
    return {row.id: row for row in rows}


def call(
    result: str = CALL_IN_PROGRESS,
    *,
    connected: bool = False,
    dialed: bool = True,
    comment: str = "",
) -> RecordedCall:
    return RecordedCall("c-7", result, comment, connected, dialed)


def expired(task: Task, recorded: RecordedCall | None, redials: int = 0) -> LeaseExpired:
    return LeaseExpired(task.id, task.attempts, redials, recorded)


# --- call events --------------------------------------------------------------------------------


def test_a_connected_call_announces_success_and_notes_the_call() -> None:
    event = Connected(7, 1, "c-7")
    assert plan(tasks(Task()), [event]) == Plan(
        calls_connected=("c-7",),
        announcements=(Announcement(7, None, (WebhookEvent.SUCCESS,)),),
        decisions=(Decision(event),),
        wake=False,
    )


def test_a_connected_call_that_ends_in_the_same_batch_is_not_noted() -> None:
    """Its end decides the attempt; connected_at only matters to an end never reported."""
    result = plan(
        tasks(Task()),
        [Connected(7, 1, "c-7"), Ended(7, 1, "c-7", CallOutcome.CONNECTED)],
    )
    assert result.calls_connected == ()
    assert [a.events for a in result.announcements] == [
        (WebhookEvent.SUCCESS,),
        (WebhookEvent.SUCCESS, WebhookEvent.AFTER),
    ]
    assert [a.resolution is None for a in result.announcements] == [True, False]


def test_connected_ends_the_task_with_success() -> None:
    event = Ended(7, 1, "c-7", CallOutcome.CONNECTED)
    resolution = resolve_attempt(
        outcome=CallOutcome.CONNECTED, comment="", attempt=1, try_count=3, try_again_pause=60
    )
    assert plan(tasks(Task()), [event]) == Plan(
        ends=((7, resolution),),
        announcements=(Announcement(7, resolution, (WebhookEvent.SUCCESS, WebhookEvent.AFTER)),),
        decisions=(Decision(event, CallOutcome.CONNECTED, resolution),),
        wake=True,
    )
    assert (resolution.status, resolution.finish_result) == (
        TaskStatus.FINISHED,
        FinishResult.SUCCESS,
    )


NOT_FAILURES = (CallOutcome.CONNECTED, CallOutcome.LOST, CallOutcome.OUTSIDE_WINDOW)


@pytest.mark.parametrize("outcome", [o for o in CallOutcome if o not in NOT_FAILURES])
def test_a_failed_call_with_tries_left_delays_the_task_and_announces_nothing(
    outcome: CallOutcome,
) -> None:
    result = plan(tasks(Task(try_again_pause=90)), [Ended(7, 1, "c-7", outcome, "why")])
    [(task_id, resolution)] = result.ends
    assert task_id == 7
    assert (resolution.status, resolution.retry_after) == (TaskStatus.DELAYED, 90)
    assert resolution.finish_comment.startswith("why (attempt 1 of 3)")
    assert result.announcements == (Announcement(7, resolution, ()),)
    assert result.wake


@pytest.mark.parametrize("try_count_caller", [0, 1])
def test_a_call_not_dialed_outside_its_window_spends_no_try_and_waits_for_the_window(
    try_count_caller: int,
) -> None:
    """Even on the last try (of try_count and of try_count_caller): no phone rang. The
    task waits as delayed_interval, due at the closing the dialer saw pass (the claim then
    holds it until the window opens), its attempt given back, its call record forgotten,
    no webhook."""
    closed_at = datetime(2026, 12, 5, 18, tzinfo=UTC)
    task = Task(attempts=3, try_count=3, try_count_caller=try_count_caller)
    comment = "not dialed: the calling window closed at 2026-12-05 18:00:00 UTC"
    event = Ended(7, 3, "c-7", CallOutcome.OUTSIDE_WINDOW, comment, closed_at)

    result = plan(tasks(task), [event])

    [(task_id, resolution)] = result.ends
    assert task_id == 7
    assert resolution.status == TaskStatus.DELAYED_INTERVAL
    assert resolution.finish_result == FinishResult.NONE
    assert (resolution.unspent, resolution.run_at, resolution.retry_after) == (
        True,
        closed_at,
        None,
    )
    assert not resolution.caller_failed
    assert resolution.finish_comment == (
        f"{comment}; attempt 3 spent no try and waits for the window to open"
    )
    assert result.calls_forgotten == ("c-7",)
    assert result.announcements == (Announcement(7, resolution, ()),)
    assert result.decisions == (Decision(event, CallOutcome.OUTSIDE_WINDOW, resolution),)
    assert result.wake


def test_an_outside_window_report_for_an_attempt_already_resolved_is_stale() -> None:
    event = Ended(7, 1, "c-7", CallOutcome.OUTSIDE_WINDOW)
    result = plan(tasks(Task(attempts=2)), [event])
    assert (result.ends, result.calls_forgotten, result.stale) == ((), (), (event,))


def test_a_failed_last_try_finishes_the_task_failed_and_announces_after() -> None:
    result = plan(tasks(Task(attempts=3)), [Ended(7, 3, "c-7", CallOutcome.B_BUSY)])
    [(_, resolution)] = result.ends
    assert (resolution.status, resolution.finish_result) == (
        TaskStatus.FINISHED,
        FinishResult.FAILED,
    )
    assert result.announcements[0].events == (WebhookEvent.AFTER,)


@pytest.mark.parametrize(
    ("task", "event"),
    [
        (None, Ended(7, 1, "c-7", CallOutcome.A_BUSY)),  # task deleted
        (Task(status=TaskStatus.DELAYED), Ended(7, 1, "c-7", CallOutcome.A_BUSY)),
        (Task(status=TaskStatus.FINISHED), Connected(7, 1, "c-7")),
        (Task(attempts=2), Ended(7, 1, "c-7", CallOutcome.CONNECTED)),  # an older attempt
    ],
)
def test_a_stale_event_changes_nothing(task: Task | None, event: Connected | Ended) -> None:
    result = plan(tasks(task) if task else {}, [event])
    assert result == Plan(stale=(event,), wake=isinstance(event, Ended))


def test_a_second_end_of_one_attempt_in_a_batch_is_stale() -> None:
    first = Ended(7, 1, "c-7", CallOutcome.A_BUSY)
    second = Ended(7, 1, "c-7", CallOutcome.CONNECTED)
    result = plan(tasks(Task()), [first, second])
    assert len(result.ends) == 1
    assert result.stale == (second,)
    assert [d.event for d in result.decisions] == [first]


def test_events_of_several_tasks_are_planned_in_order() -> None:
    result = plan(
        tasks(Task(id=1), Task(id=2, attempts=3)),
        [Ended(2, 3, "c-2", CallOutcome.ERROR), Ended(1, 1, "c-1", CallOutcome.A_BUSY)],
    )
    assert [task_id for task_id, _ in result.ends] == [2, 1]
    assert [r.status for _, r in result.ends] == [TaskStatus.FINISHED, TaskStatus.DELAYED]


# --- a lease that ran out -----------------------------------------------------------------------


def test_a_lost_lease_with_a_saved_result_is_decided_by_it() -> None:
    result = plan(tasks(Task()), [expired(Task(), call(CallOutcome.A_REJECTED, comment="603"))])
    [(_, resolution)] = result.ends
    assert resolution.finish_comment.startswith("603 (attempt 1 of 3)")
    assert result.calls_lost == ()
    assert result.decisions[0].outcome == CallOutcome.A_REJECTED
    assert result.wake


def test_a_lost_lease_of_a_connected_call_is_a_success_and_the_call_is_lost() -> None:
    result = plan(tasks(Task()), [expired(Task(), call(connected=True))])
    [(_, resolution)] = result.ends
    assert (resolution.status, resolution.finish_result) == (
        TaskStatus.FINISHED,
        FinishResult.SUCCESS,
    )
    assert resolution.finish_comment == LOST_AFTER_CONNECTED
    assert result.calls_lost == ("c-7",)
    assert result.announcements[0].events == (WebhookEvent.SUCCESS, WebhookEvent.AFTER)


def test_a_lost_lease_of_a_dialed_call_spends_a_try() -> None:
    result = plan(tasks(Task()), [expired(Task(), call())])
    [(_, resolution)] = result.ends
    assert resolution.status == TaskStatus.DELAYED
    assert "lost" in resolution.finish_comment
    assert result.calls_lost == ("c-7",)
    assert result.decisions[0].outcome == CallOutcome.LOST


def test_a_lost_lease_of_a_dialed_last_try_finishes_failed() -> None:
    last = Task(attempts=3)
    result = plan(tasks(last), [expired(last, call())])
    assert result.ends[0][1].finish_result == FinishResult.FAILED
    assert result.announcements[0].events == (WebhookEvent.AFTER,)


@pytest.mark.parametrize("recorded", [None, call(dialed=False)])
def test_an_undialed_attempt_is_dialed_again_without_spending_a_try(
    recorded: RecordedCall | None,
) -> None:
    event = expired(Task(), recorded)
    result = plan(tasks(Task()), [event], max_redials=2)
    assert result == Plan(
        calls_forgotten=("c-7",) if recorded else (),
        redials=(7,),
        decisions=(Decision(event, "redial"),),
        wake=True,
    )


def test_an_undialed_attempt_out_of_redials_finishes_failed_saying_so() -> None:
    event = expired(Task(), call(dialed=False), redials=2)
    result = plan(tasks(Task()), [event], max_redials=2)
    [(_, resolution)] = result.ends
    assert (resolution.status, resolution.finish_result) == (
        TaskStatus.FINISHED,
        FinishResult.FAILED,
    )
    assert resolution.finish_comment.startswith("not dialed: no call was placed for attempt 1")
    assert result.calls_forgotten == ("c-7",)
    assert result.redials == ()
    assert result.decisions[0].outcome == "not_dialed"
    assert result.announcements[0].events == (WebhookEvent.AFTER,)


# --- retries of the A leg -----------------------------------------------------------------------


def test_the_planner_hands_the_a_leg_counter_to_the_rule() -> None:
    """The locked task's A-leg failures so far decide: the last A-leg try ends the task."""
    task = Task(attempts=2, try_count=5, try_count_caller=2, caller_failures=1)
    result = plan(tasks(task), [Ended(7, 2, "c-7", CallOutcome.A_NO_ANSWER)])
    [(_, resolution)] = result.ends
    assert (resolution.status, resolution.caller_failed) == (TaskStatus.FINISHED, True)
    assert "try_count_caller" in resolution.finish_comment
    assert result.announcements[0].events == (WebhookEvent.AFTER,)


def test_a_lost_dialed_call_spends_an_a_leg_try() -> None:
    task = Task(try_count_caller=3, try_again_pause_caller=5)
    result = plan(tasks(task), [expired(task, call())])
    [(_, resolution)] = result.ends
    assert (resolution.status, resolution.retry_after, resolution.caller_failed) == (
        TaskStatus.DELAYED,
        5,
        True,
    )
