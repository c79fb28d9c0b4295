"""Which due tasks a queue's calling window holds back, as pure rules (no I/O).

A claim takes a queue's tasks due within the lookahead. Before it does, the tasks of a queue
with an interval whose window is closed when they would be dialed are held: status
`delayed_interval`, next_run_at at the window's next opening (they are claimed then, like
any waiting task). Tasks are grouped by the zone their window is read in: the interval's own,
or the callee's (`callback_params.timezone`). Within a zone, one window state holds for every
task due at the same moment, so a hold is a range of due times, not a list of tasks.

Each task claimed in a queue with a window also gets the moment its window closes
(`closings`): its dial request carries it, and the dialer does not start the call at or
after it (the request may wait at a dialer, for its calls-per-second pacing or a backlog,
or in NATS, past the closing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from services.common.calling_windows import CallingWindow, is_open, next_closing, next_opening

# A window that never opens again (no matching date ahead): its tasks wait until the interval
# or the queue's interval_id changes (the api then releases them). A finite time, not
# PostgreSQL's 'infinity', which Python's datetime cannot hold.
NEVER = datetime(9999, 12, 31, tzinfo=UTC)


class Hold(NamedTuple):
    """Hold the due tasks of one zone whose next_run_at is in [due_from, due_before) (None:
    unbounded) until `until`."""

    timezone: str | None  # the callee's zone; None: tasks read in the interval's own zone
    due_from: datetime | None
    due_before: datetime | None
    until: datetime


def _first_closed_second(
    window: CallingWindow, after: datetime, end: datetime, timezone: str | None
) -> datetime | None:
    """The first whole second in (after, end] at which the window is closed. Conditions,
    and the UTC offsets of the zones in use, change only on whole seconds, so a window's
    state is constant between two: checking each of the (at most 6) seconds of the
    lookahead is exact."""
    second = datetime.fromtimestamp(math.floor(after.timestamp()) + 1, UTC)
    while second <= end:
        if not is_open(window, second, timezone):
            return second
        second += timedelta(seconds=1)
    return None


def hold_for_zone(
    window: CallingWindow, timezone: str | None, now: datetime, lookahead: timedelta
) -> Hold | None:
    """The hold of the tasks read in `timezone` that are due by now + lookahead; None when the
    window is open for all of them."""
    if not is_open(window, now, timezone):
        opening = next_opening(window, now, timezone) or NEVER
        return Hold(timezone, None, opening, opening)
    closing = _first_closed_second(window, now, now + lookahead, timezone)
    if closing is None:
        return None
    return Hold(timezone, closing, None, next_opening(window, closing, timezone) or NEVER)


class Claimed(NamedTuple):
    """What `closings` reads of a claimed task."""

    task_id: int
    timezone: str | None  # the callee's zone; None: the interval's own
    due: datetime  # next_run_at


def closings(
    window: CallingWindow, now: datetime, claimed: Iterable[Claimed]
) -> dict[int, datetime]:
    """The moment each claimed task's window closes after it is dialed (at its due time, or
    now if that is later), by task id; a window that stays open for days gives none (a
    dial request is never dialed after its attempt's lease anyway), and so does a zone
    the tz database no longer has (the hold skipped it too, and logged it: a deadline
    would send the task back and forth). The window is open from the dial moment until
    its closing, so tasks of one zone whose dial moments fall in that span share it: one
    evaluation per zone for a claim, not one per task."""
    found: dict[int, datetime] = {}
    spans: dict[str | None, tuple[datetime, datetime | None]] = {}
    for task in claimed:
        dial_at = max(task.due, now)
        span = spans.get(task.timezone)
        if span is None or not (span[0] <= dial_at and (span[1] is None or dial_at < span[1])):
            try:
                span = spans[task.timezone] = (
                    dial_at,
                    next_closing(window, dial_at, task.timezone),
                )
            except (ValueError, KeyError):
                continue
        if span[1] is not None:
            found[task.task_id] = span[1]
    return found
