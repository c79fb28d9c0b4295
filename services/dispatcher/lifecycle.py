"""The task life cycle after creation, as pure rules (no I/O).

    scheduled --claim--> executed --connected--> finished (success)
                            |
                            +--failed, tries left--> delayed --claim--> executed ...
                            +--failed, none left---> finished (failed)

An attempt whose lease runs out without a result counts as a failed attempt if a call was
dialed for it. If none was (its dial request was lost, came too late, or its dialer died
before dialing), the same attempt is dialed again and no try is spent: at most
`max_redials` times, then the task finishes `failed`, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.vocabulary import CallOutcome, FinishResult, TaskStatus, WebhookEvent

CONNECTED = CallOutcome.CONNECTED
# What each outcome of a call says in a task's finish_comment.
OUTCOME_COMMENTS: dict[str, str] = {
    CallOutcome.CONNECTED: "A and B were connected",
    CallOutcome.A_BUSY: "A was busy",
    CallOutcome.A_NO_ANSWER: "A did not answer",
    CallOutcome.A_REJECTED: "A rejected the call",
    CallOutcome.B_BUSY: "B was busy",
    CallOutcome.B_NO_ANSWER: "B did not answer",
    CallOutcome.B_REJECTED: "B rejected the call",
    CallOutcome.ERROR: "the call could not be placed",
    CallOutcome.LOST: "no result from the dialer before the attempt's deadline (the call was lost)",
}

# The comment of an attempt that connected A and B and whose end was never reported.
LOST_AFTER_CONNECTED = "A and B were connected; the end of the call was not reported"

# Short names for the webhook events (the vocabulary spells them).
EVENT_BEFORE = WebhookEvent.BEFORE
EVENT_BEFORE_AGAIN = WebhookEvent.BEFORE_AGAIN
EVENT_SUCCESS = WebhookEvent.SUCCESS
EVENT_AFTER = WebhookEvent.AFTER
EVENT_URL_FIELDS: dict[str, str] = {event: event.url_field for event in WebhookEvent}


@dataclass(frozen=True)
class Resolution:
    """What becomes of a task when one of its attempts ends."""

    status: str  # a TaskStatus
    finish_result: str  # a FinishResult
    finish_comment: str
    # Seconds until the next attempt, when there is one.
    retry_after: int | None
    events: tuple[WebhookEvent, ...]


@dataclass(frozen=True)
class Redial:
    """Dial the attempt again: no call was placed for it, so it spent no try."""


def resolve_undialed(*, attempt: int, redials: int, max_redials: int) -> Redial | Resolution:
    """What becomes of a task whose attempt `attempt` placed no call by the end of its lease,
    after `redials` dial requests beyond the first."""
    if redials < max_redials:
        return Redial()
    requests = redials + 1
    comment = (
        f"not dialed: no call was placed for attempt {attempt} after {requests} dial "
        f"request{'s' if requests != 1 else ''} (dialers unavailable or too late); "
        "the attempt spent no try"
    )
    return Resolution(TaskStatus.FINISHED, FinishResult.FAILED, comment, None, (EVENT_AFTER,))


def start_event(attempt: int) -> WebhookEvent:
    """The webhook event announcing an attempt."""
    return EVENT_BEFORE if attempt == 1 else EVENT_BEFORE_AGAIN


def describe(outcome: str, comment: str = "") -> str:
    return comment or OUTCOME_COMMENTS.get(outcome, outcome.replace("_", " "))


def resolve_attempt(
    *, outcome: str, comment: str, attempt: int, try_count: int, try_again_pause: int
) -> Resolution:
    """The task's next state after attempt `attempt` ended with `outcome`."""
    reason = describe(outcome, comment)
    if outcome == CONNECTED:
        return Resolution(
            TaskStatus.FINISHED, FinishResult.SUCCESS, reason, None, (EVENT_SUCCESS, EVENT_AFTER)
        )
    if attempt < try_count:
        comment = (
            f"{reason} (attempt {attempt} of {try_count}); next attempt in {try_again_pause} s"
        )
        return Resolution(TaskStatus.DELAYED, FinishResult.NONE, comment, try_again_pause, ())
    tries = "1 attempt" if try_count == 1 else f"{try_count} attempts"
    return Resolution(
        TaskStatus.FINISHED, FinishResult.FAILED, f"{reason} ({tries} made)", None, (EVENT_AFTER,)
    )


def event_id(task_id: int, attempt: int, event: str) -> str:
    return f"{task_id}:{attempt}:{event}"
