"""The calling window checked again just before a call starts (issue 20): a dial request
carries the moment its window closes, and the dialer does not start a call at or after it
(after any calls-per-second wait), reporting `outside_window` instead. The database is faked
at the repository's functions, as in test_dial_start."""

from __future__ import annotations

import time
from typing import Any

import pytest
from scheduler.v1 import events_pb2

from services.dialer.pacing import Pacer
from services.dialer.windows import outside_window_event, window_closed
from tests.unit.test_dial_start import RecordingBackend, dial, fake_database, new_dialer
from tests.unit.test_dial_timing import request


class Published:
    """Stands for the dialer's call event publisher."""

    def __init__(self) -> None:
        self.events: list[events_pb2.CallEvent] = []

    def publish_nowait(self, event: events_pb2.CallEvent) -> None:
        self.events.append(event)


def test_the_deadline_is_the_closing_itself_and_none_without_one() -> None:
    closing = request(1, window_closes_at_unix_ms=1_000_000)
    assert not window_closed(closing, 999.999)
    assert window_closed(closing, 1000.0)  # closed at the closing: not dialed
    assert window_closed(closing, 1000.5)
    assert not window_closed(request(1), 10**10)  # no window: no deadline


def test_the_report_names_the_closing_and_carries_it_back() -> None:
    event = outside_window_event(request(4, window_closes_at_unix_ms=1_796_493_600_000))
    assert (event.kind, event.task_id, event.attempt, event.call_uuid) == (
        events_pb2.CallEvent.KIND_ENDED,
        4,
        1,
        "uuid-4",
    )
    assert event.outcome == events_pb2.CALL_OUTCOME_OUTSIDE_WINDOW
    assert event.window_closes_at_unix_ms == 1_796_493_600_000
    assert event.comment == (
        "not dialed: the calling window closed at 2026-12-05 18:00:00 UTC, before the call "
        "could start"
    )


def dialer_with(steps: list[str], pacer: Pacer) -> tuple[Any, Published]:
    dialer = new_dialer(RecordingBackend(steps, pacer))
    published = Published()
    dialer._events = published  # type: ignore[assignment]
    return dialer, published


async def test_a_call_paced_past_its_windows_closing_is_not_dialed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two calls due together, 1 call per second: the second starts a second later, after
    its window closed (half a second after the due time). It is not marked, not started,
    its prepared call is forgotten, and its end is reported as outside_window."""
    steps: list[str] = []
    fake_database(monkeypatch, steps, marked={"uuid-1", "uuid-2"})
    dialer, published = dialer_with(steps, Pacer(1))
    due = int((time.time() + 0.3) * 1000)
    closes = due + 500

    msg = await dial(
        dialer,
        request(1, due, window_closes_at_unix_ms=closes),
        request(2, due, window_closes_at_unix_ms=closes),
    )

    assert [s for s in steps if s.startswith("mark")] == ["mark ['uuid-1']"]
    assert "place uuid-1" in steps and "start uuid-1" in steps
    assert "start uuid-2" not in steps and "place uuid-2" not in steps
    assert "forget uuid-2" in steps
    [event] = published.events
    assert (event.call_uuid, event.outcome, event.window_closes_at_unix_ms) == (
        "uuid-2",
        events_pb2.CALL_OUTCOME_OUTSIDE_WINDOW,
        closes,
    )
    assert msg.verdicts == ["ack"]  # settled: the dispatcher decides from the report


async def test_an_overdue_request_whose_window_closed_is_not_dialed_with_its_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request that waited in NATS past its window's closing: its call is not marked in
    the record's transaction, nor later; a call without a window goes as before."""
    steps: list[str] = []
    fake_database(monkeypatch, steps, marked={"uuid-1", "uuid-2"})
    dialer, published = dialer_with(steps, Pacer(0))
    closed = int((time.time() - 1) * 1000)

    await dial(dialer, request(1, window_closes_at_unix_ms=closed), request(2))

    assert [s for s in steps if s.startswith("mark")] == ["mark ['uuid-2']"]
    assert "start uuid-2" in steps and "start uuid-1" not in steps
    assert "place uuid-1" not in steps
    assert [(e.call_uuid, e.outcome) for e in published.events] == [
        ("uuid-1", events_pb2.CALL_OUTCOME_OUTSIDE_WINDOW)
    ]


async def test_a_call_within_its_window_is_dialed_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []
    fake_database(monkeypatch, steps, marked={"uuid-1"})
    dialer, published = dialer_with(steps, Pacer(0))
    later = int((time.time() + 3600) * 1000)

    await dial(dialer, request(1, window_closes_at_unix_ms=later))

    assert "start uuid-1" in steps and published.events == []
