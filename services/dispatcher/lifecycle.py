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

# Outcomes of one call, as stored in calls.result and carried (as an enum) by CallEvent.
CONNECTED = "connected"
OUTCOME_COMMENTS = {
    CONNECTED: "A and B were connected",
    "a_busy": "A was busy",
    "a_no_answer": "A did not answer",
    "a_rejected": "A rejected the call",
    "b_busy": "B was busy",
    "b_no_answer": "B did not answer",
    "b_rejected": "B rejected the call",
    "error": "the call could not be placed",
    "lost": "no result from the dialer before the attempt's deadline (the call was lost)",
}

# The comment of an attempt that connected A and B and whose end was never reported.
LOST_AFTER_CONNECTED = "A and B were connected; the end of the call was not reported"

EVENT_BEFORE = "before"
EVENT_BEFORE_AGAIN = "before_again"
EVENT_SUCCESS = "success"
EVENT_AFTER = "after"
EVENT_URL_FIELDS = {
    EVENT_BEFORE: "url_before",
    EVENT_BEFORE_AGAIN: "url_before_again",
    EVENT_SUCCESS: "url_success",
    EVENT_AFTER: "url_after",
}


@dataclass(frozen=True)
class Resolution:
    """What becomes of a task when one of its attempts ends."""

    status: str
    finish_result: str
    finish_comment: str
    # Seconds until the next attempt, when there is one.
    retry_after: int | None
    events: tuple[str, ...]


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
    return Resolution("finished", "failed", comment, None, (EVENT_AFTER,))


def start_event(attempt: int) -> str:
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
        return Resolution("finished", "success", reason, None, (EVENT_SUCCESS, EVENT_AFTER))
    if attempt < try_count:
        comment = (
            f"{reason} (attempt {attempt} of {try_count}); next attempt in {try_again_pause} s"
        )
        return Resolution("delayed", "", comment, try_again_pause, ())
    tries = "1 attempt" if try_count == 1 else f"{try_count} attempts"
    return Resolution("finished", "failed", f"{reason} ({tries} made)", None, (EVENT_AFTER,))


def event_id(task_id: int, attempt: int, event: str) -> str:
    return f"{task_id}:{attempt}:{event}"
