"""services/dispatcher/windows.py: which due tasks a calling window holds, and until when;
when the window of each claimed task closes (its dial request's deadline)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.calling_windows import window_from_fields
from services.dispatcher.windows import NEVER, Claimed, Hold, closings, hold_for_zone

LOOKAHEAD = timedelta(seconds=0.25)
# Open 09:00-17:00 local time, every day.
OFFICE = window_from_fields("Europe/Berlin", [{"start_time": "09:00:00", "end_time": "17:00:00"}])


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_open_with_no_closing_in_the_lookahead_holds_nothing() -> None:
    assert hold_for_zone(OFFICE, None, utc("2026-12-07 10:00:00"), LOOKAHEAD) is None


def test_closed_holds_every_due_task_until_the_opening() -> None:
    # 07:30 UTC is 08:30 in Berlin (winter): opens at 09:00 local = 08:00 UTC.
    hold = hold_for_zone(OFFICE, None, utc("2026-12-07 07:30:00"), LOOKAHEAD)
    assert hold == Hold(None, None, utc("2026-12-07 08:00:00"), utc("2026-12-07 08:00:00"))


def test_an_opening_within_the_lookahead_holds_only_the_tasks_due_before_it() -> None:
    hold = hold_for_zone(OFFICE, None, utc("2026-12-07 07:59:59.9"), LOOKAHEAD)
    assert hold is not None
    assert hold.due_before == hold.until == utc("2026-12-07 08:00:00")


def test_a_closing_within_the_lookahead_holds_the_tasks_due_from_it_to_the_next_day() -> None:
    # 17:00 Berlin = 16:00 UTC; due at 15:59:59.9 is dialed in the window, at 16:00 it is not.
    hold = hold_for_zone(OFFICE, None, utc("2026-12-07 15:59:59.9"), LOOKAHEAD)
    assert hold == Hold(None, utc("2026-12-07 16:00:00"), None, utc("2026-12-08 08:00:00"))


def test_the_callee_zone_decides_for_its_tasks() -> None:
    moment = utc("2026-12-07 10:00:00")  # 11:00 Berlin (open), 05:00 in New York (closed)
    assert hold_for_zone(OFFICE, None, moment, LOOKAHEAD) is None
    hold = hold_for_zone(OFFICE, "America/New_York", moment, LOOKAHEAD)
    # 09:00 New York = 14:00 UTC.
    assert hold == Hold(
        "America/New_York", None, utc("2026-12-07 14:00:00"), utc("2026-12-07 14:00:00")
    )


def test_a_window_that_never_opens_again_holds_until_never() -> None:
    past = window_from_fields(
        "UTC", [{"start_datetime": "2020-01-01 00:00:00", "end_datetime": "2020-01-02 00:00:00"}]
    )
    hold = hold_for_zone(past, None, utc("2026-12-07 10:00:00"), LOOKAHEAD)
    assert hold is not None and hold.until == NEVER


def test_spring_forward_opening_in_the_skipped_hour_opens_at_the_jump() -> None:
    # Berlin, 2027-03-28: 02:00 local jumps to 03:00 (01:00 UTC). A window from 02:30 opens then.
    night = window_from_fields(
        "Europe/Berlin", [{"start_time": "02:30:00", "end_time": "04:00:00"}]
    )
    hold = hold_for_zone(night, None, utc("2027-03-28 00:30:00"), LOOKAHEAD)
    assert hold is not None and hold.until == utc("2027-03-28 01:00:00")


# --- the closing each claimed task's dial request carries -------------------------------------


def test_a_claimed_task_gets_the_closing_after_its_due_time_in_its_zone() -> None:
    now = utc("2026-12-07 10:00:00")  # 11:00 Berlin; 17:00 Berlin = 16:00 UTC
    found = closings(
        OFFICE,
        now,
        [
            Claimed(1, None, now + LOOKAHEAD),  # claimed ahead, dialed at its due time
            Claimed(2, None, utc("2026-12-07 09:00:00")),  # overdue: dialed now
            # 17:00 in Tokyo is 08:00 UTC: its window closed already (the hold would have
            # held it; were it claimed, the dialer would refuse it at once).
            Claimed(3, "Asia/Tokyo", now),
            Claimed(4, "America/New_York", utc("2026-12-07 15:00:00")),  # 10:00 there
        ],
    )
    assert found == {
        1: utc("2026-12-07 16:00:00"),
        2: utc("2026-12-07 16:00:00"),
        3: now,
        4: utc("2026-12-07 22:00:00"),  # 17:00 in New York
    }


def test_tasks_past_a_closing_get_the_next_one() -> None:
    """Tasks of one zone share a closing only while they are dialed before it."""
    now = utc("2026-12-07 10:00:00")
    found = closings(
        OFFICE,
        now,
        [Claimed(1, None, now), Claimed(2, None, utc("2026-12-08 09:00:00"))],
    )
    assert found == {1: utc("2026-12-07 16:00:00"), 2: utc("2026-12-08 16:00:00")}


def test_no_closing_for_a_window_that_stays_open_or_an_unknown_zone() -> None:
    always = window_from_fields("UTC", [{}])
    now = utc("2026-12-07 10:00:00")
    assert closings(always, now, [Claimed(1, None, now)]) == {}
    assert closings(OFFICE, now, [Claimed(1, "Mars/Olympus_Mons", now)]) == {}
