"""The calling window, checked again just before a call starts (pure, no I/O).

The dispatcher claims a task while its window is open and puts on its dial request the
moment the window closes (DialRequest.window_closes_at_unix_ms; 0: no deadline). The request
may then wait, at a dialer (the backend's calls-per-second pacing, a backlog) or in NATS
(no dialer running), past that moment: a call that would start at or after it is not
dialed, and the dialer reports CALL_OUTCOME_OUTSIDE_WINDOW (not a failure: no phone rang).

Clocks: the closing is a moment of the window as the dispatcher reads it by the database's
clock; the dialer compares it with its own clock (time.time()), as it does a request's due
time. A dialer clock s seconds ahead refuses calls in the last s seconds of a window (their
tasks are due again at the closing, by the database's clock, so the claim holds them until
the window opens: they do not come straight back); one s seconds behind starts calls up to
s seconds after the closing. Both are as large as the skew NTP leaves, milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.v1 import events_pb2

from services.common.timefmt import format_utc


def window_closed(request: events_pb2.DialRequest, start: float) -> bool:
    """Whether the request's calling window has closed by `start` (time.time()), the moment
    its call would start."""
    closes_ms = request.window_closes_at_unix_ms
    return closes_ms > 0 and start * 1000 >= closes_ms


def outside_window_event(request: events_pb2.DialRequest) -> events_pb2.CallEvent:
    """The end event of a request not dialed because its window had closed. It carries the
    closing back, so that the dispatcher holds the task from that moment."""
    closes_ms = request.window_closes_at_unix_ms
    closed = format_utc(datetime.fromtimestamp(closes_ms / 1000, UTC))
    return events_pb2.CallEvent(
        kind=events_pb2.CallEvent.KIND_ENDED,
        task_id=request.task_id,
        attempt=request.attempt,
        call_uuid=request.call_uuid,
        outcome=events_pb2.CALL_OUTCOME_OUTSIDE_WINDOW,
        comment=f"not dialed: the calling window closed at {closed} UTC, before the call "
        "could start",
        window_closes_at_unix_ms=closes_ms,
    )
