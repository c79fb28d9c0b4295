"""The task life cycle after creation, as pure rules (no I/O).

    scheduled --claim--> executed --connected--> finished (success)
                            |
                            +--failed, tries left--> delayed --claim--> executed ...
                            +--failed, none left---> finished (failed)

With `try_count_caller` on (> 0), attempts that fail at the A leg are counted as well
(tasks.caller_failures): when they reach try_count_caller the task finishes `failed`, however
many tries of try_count are left, and the pause after one is try_again_pause_caller. An
attempt where A answered and B did not leaves that count as it is.

An attempt whose lease runs out without a result counts as a failed attempt if a call was
dialed for it. If none was (its dial request was lost, came too late, or its dialer died
before dialing), the same attempt is dialed again and no try is spent: at most
`max_redials` times, then the task finishes `failed`, saying so.

A dial request that reaches the moment of its call after its calling window closed is not
dialed (the dialer reports `outside_window`): no try is spent (the attempt is given back),
no webhook goes out, and the task waits as `delayed_interval`, due at that closing. The
claim then holds it until the window opens, by the one rule that holds tasks outside
their window (services/dispatcher/windows.py) and by the database's clock:

    executed --outside_window--> delayed_interval --claim: window closed--> (held until
                                                    the opening) --claim--> executed ...
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
    CallOutcome.OUTSIDE_WINDOW: "not dialed: the calling window had closed",
    CallOutcome.LOST: "no result from the dialer before the attempt's deadline (the call was lost)",
}

# Outcomes that count against try_count_caller. A call that could not be placed (`error`)
# or whose result never came (`lost`) counts too: A was never known to answer, and an
# operator limiting the tries of A means "stop calling this caller", which these are as
# much as a busy line is. An unknown word a backend might report counts as neither leg.
A_LEG_FAILURES = frozenset(
    (
        CallOutcome.A_BUSY,
        CallOutcome.A_NO_ANSWER,
        CallOutcome.A_REJECTED,
        CallOutcome.ERROR,
        CallOutcome.LOST,
    )
)

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
    # The attempt failed at the A leg: tasks.caller_failures goes up by one. Counted whether
    # or not try_count_caller is on, so that a limit set later (a reschedule) counts the
    # failures before it.
    caller_failed: bool = False
    # No call was placed: the attempt is given back (tasks.attempts goes down by one), so
    # the next claim makes the same attempt again.
    unspent: bool = False
    # The next attempt is due at this moment (instead of `retry_after` from now).
    run_at: datetime | None = None


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


def resolve_outside_window(*, attempt: int, comment: str, closed_at: datetime | None) -> Resolution:
    """A task whose attempt `attempt` was not dialed because its calling window closed at
    `closed_at` (as the dialer saw it) before the call could start. The task waits outside
    its window, due at the closing: the claim, reading the window by the database's clock,
    holds it from then until the window opens (a dialer whose clock runs ahead cannot
    make the task come straight back). No try spent, no webhook: `after` is for the end
    of a task; the claim that makes the attempt announces its `before` again, with the
    same event id, which the notifier delivers once."""
    reason = comment or OUTCOME_COMMENTS[CallOutcome.OUTSIDE_WINDOW]
    text = f"{reason}; attempt {attempt} spent no try and waits for the window to open"
    return Resolution(
        TaskStatus.DELAYED_INTERVAL,
        FinishResult.NONE,
        text,
        None,
        (),
        unspent=True,
        run_at=closed_at,
    )


def start_event(attempt: int) -> WebhookEvent:
    """The webhook event announcing an attempt."""
    return EVENT_BEFORE if attempt == 1 else EVENT_BEFORE_AGAIN


def describe(outcome: str, comment: str = "") -> str:
    return comment or OUTCOME_COMMENTS.get(outcome, outcome.replace("_", " "))


def _attempts(count: int) -> str:
    return "1 attempt" if count == 1 else f"{count} attempts"


def resolve_attempt(
    *,
    outcome: str,
    comment: str,
    attempt: int,
    try_count: int,
    try_again_pause: int,
    try_count_caller: int = 0,
    try_again_pause_caller: int = 0,
    caller_failures: int = 0,
) -> Resolution:
    """The task's next state after attempt `attempt` ended with `outcome`, with
    `caller_failures` attempts failed at the A leg before this one. try_count_caller 0
    (off) is the vendor's first revision exactly: only try_count counts, comments unchanged."""
    reason = describe(outcome, comment)
    if outcome == CONNECTED:
        return Resolution(
            TaskStatus.FINISHED, FinishResult.SUCCESS, reason, None, (EVENT_SUCCESS, EVENT_AFTER)
        )
    a_leg = outcome in A_LEG_FAILURES
    limited = try_count_caller > 0
    failures = caller_failures + a_leg  # A-leg failures, this attempt's included
    if limited and a_leg and failures >= try_count_caller:
        comment = f"{reason} ({failures} of {try_count_caller} A-leg tries, try_count_caller)"
        return Resolution(
            TaskStatus.FINISHED, FinishResult.FAILED, comment, None, (EVENT_AFTER,), a_leg
        )
    if attempt < try_count:
        if not limited:
            tries, pause, named = f"attempt {attempt} of {try_count}", try_again_pause, ""
        elif a_leg:
            tries = (
                f"attempt {attempt} of {try_count}, try_count; "
                f"A-leg try {failures} of {try_count_caller}, try_count_caller"
            )
            pause, named = try_again_pause_caller, " (try_again_pause_caller)"
        else:
            tries = f"attempt {attempt} of {try_count}, try_count"
            pause, named = try_again_pause, " (try_again_pause)"
        comment = f"{reason} ({tries}); next attempt in {pause} s{named}"
        return Resolution(TaskStatus.DELAYED, FinishResult.NONE, comment, pause, (), a_leg)
    counter = ", try_count" if limited else ""
    comment = f"{reason} ({_attempts(try_count)} made{counter})"
    return Resolution(
        TaskStatus.FINISHED, FinishResult.FAILED, comment, None, (EVENT_AFTER,), a_leg
    )


def event_id(task_id: int, attempt: int, event: str) -> str:
    return f"{task_id}:{attempt}:{event}"
