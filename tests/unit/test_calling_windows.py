"""Calling windows (services/common/calling_windows.py): wall-clock conditions, wrapping
ranges, DST nights, and next_opening and next_closing checked against a brute-force scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.calling_windows import (
    CallingWindow,
    Condition,
    day_of_week,
    format_time_of_day,
    is_open,
    matching_condition,
    next_closing,
    next_opening,
    parse_time_of_day,
    parse_wall_datetime,
    window_from_fields,
    zone,
)

H = 3600


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(tz: str, *conditions: Condition) -> CallingWindow:
    return CallingWindow(tz, conditions)


# --- parsing ------------------------------------------------------------------------------------


def test_times_of_day_parse_strictly() -> None:
    assert parse_time_of_day("00:00:00") == 0
    assert parse_time_of_day("23:59:59") == 86_399
    assert parse_time_of_day("24:00:00", end=True) == 86_400
    assert format_time_of_day(9 * H + 5 * 60 + 7) == "09:05:07"
    for bad in ("24:00:00", "9:00:00", "09:00", "09:60:00", "09:00:60", " 09:00:00", "x"):
        with pytest.raises(ValueError):
            parse_time_of_day(bad)


def test_wall_datetimes_and_zones() -> None:
    assert parse_wall_datetime("2030-01-02 03:04:05") == datetime(2030, 1, 2, 3, 4, 5)
    assert parse_wall_datetime("2030-01-02 03:04") == datetime(2030, 1, 2, 3, 4)
    with pytest.raises(ValueError):
        parse_wall_datetime("2030-02-30 00:00:00")
    assert zone("Europe/Berlin") is zone("Europe/Berlin")
    for bad in ("Mars/Olympus", "europe/berlin", "../etc/passwd", "", "/usr/share/zoneinfo/UTC"):
        with pytest.raises(ValueError):
            zone(bad)


def test_days_of_week_start_on_sunday() -> None:
    assert day_of_week(datetime(2026, 12, 6).date()) == 1  # a Sunday
    assert day_of_week(datetime(2026, 12, 5).date()) == 7  # a Saturday


# --- evaluation ---------------------------------------------------------------------------------


def test_office_hours_in_the_windows_zone_and_in_the_callees() -> None:
    office = window("Europe/Berlin", Condition(start_time=9 * H, end_time=18 * H))
    # 08:30 UTC is 09:30 in Berlin (winter, UTC+1)
    assert is_open(office, utc(2026, 12, 7, 8, 30))
    assert not is_open(office, utc(2026, 12, 7, 7, 59))
    assert is_open(office, utc(2026, 12, 7, 16, 59, 59))
    assert not is_open(office, utc(2026, 12, 7, 17, 0))  # 18:00: the end is excluded
    # The callee's zone: 08:30 UTC is 03:30 in New York.
    assert not is_open(office, utc(2026, 12, 7, 8, 30), "America/New_York")
    assert is_open(office, utc(2026, 12, 7, 14, 0), "America/New_York")


def test_first_matching_condition_wins_and_none_is_closed() -> None:
    w = window(
        "UTC",
        Condition(start_dow=2, end_dow=6, start_time=9 * H, end_time=17 * H),
        Condition(start_time=10 * H, end_time=12 * H),
    )
    assert matching_condition(w, utc(2026, 12, 7, 10, 0)) == 0  # a Monday
    assert matching_condition(w, utc(2026, 12, 6, 10, 0)) == 1  # a Sunday
    assert matching_condition(w, utc(2026, 12, 6, 13, 0)) is None


def test_days_of_week_wrap() -> None:
    weekend = window("UTC", Condition(start_dow=6, end_dow=2))  # Friday to Monday
    days = {d: is_open(weekend, utc(2026, 12, d, 12)) for d in range(6, 13)}  # Sun 6 .. Sat 12
    assert days == {6: True, 7: True, 8: False, 9: False, 10: False, 11: True, 12: True}


def test_days_of_the_month_wrap_and_month() -> None:
    turn = window("UTC", Condition(start_mday=30, end_mday=2))
    assert [is_open(turn, utc(2026, 12, d, 12)) for d in (1, 2, 3, 29, 30, 31)] == [
        True,
        True,
        False,
        False,
        True,
        True,
    ]
    december = window("UTC", Condition(month=12, start_mday=24))  # one day: the 24th
    assert is_open(december, utc(2026, 12, 24, 23, 59))
    assert not is_open(december, utc(2026, 11, 24, 12))
    assert not is_open(december, utc(2026, 12, 25, 0))


def test_times_past_midnight_belong_to_the_date_they_start_on() -> None:
    friday_night = window("UTC", Condition(start_dow=6, start_time=22 * H, end_time=6 * H))
    assert is_open(friday_night, utc(2026, 12, 11, 22, 0))  # Friday 22:00
    assert is_open(friday_night, utc(2026, 12, 12, 5, 59, 59))  # Saturday 05:59:59
    assert not is_open(friday_night, utc(2026, 12, 12, 6, 0))
    assert not is_open(friday_night, utc(2026, 12, 11, 5, 0))  # Friday early: Thursday's night
    assert not is_open(friday_night, utc(2026, 12, 12, 22, 0))  # Saturday evening
    nightly = window("UTC", Condition(start_time=22 * H, end_time=6 * H))
    assert next_opening(nightly, utc(2026, 12, 7, 6, 0)) == utc(2026, 12, 7, 22, 0)


def test_datetime_ranges_override_the_rest() -> None:
    once = window(
        "Asia/Tokyo",
        Condition(
            start_dow=1,  # ignored: the datetime range decides
            start_datetime=datetime(2026, 12, 24, 9, 0),
            end_datetime=datetime(2026, 12, 24, 12, 0),
        ),
    )
    assert is_open(once, utc(2026, 12, 24, 0, 0))  # 09:00 in Tokyo, a Thursday
    assert not is_open(once, utc(2026, 12, 24, 3, 0))
    assert next_opening(once, utc(2026, 12, 1)) == utc(2026, 12, 24, 0, 0)
    assert next_opening(once, utc(2026, 12, 24, 3, 0)) is None  # over for good
    since = window("UTC", Condition(start_datetime=datetime(2030, 1, 1)))
    assert next_opening(since, utc(2026, 1, 1)) == utc(2030, 1, 1)
    assert is_open(since, utc(2999, 1, 1))


def test_a_zone_without_dst() -> None:
    kolkata = window("Asia/Kolkata", Condition(start_time=9 * H, end_time=21 * H))  # UTC+5:30
    for month in range(1, 13):
        assert next_opening(kolkata, utc(2026, month, 10, 0, 0)) == utc(2026, month, 10, 3, 30)
        assert not is_open(kolkata, utc(2026, month, 10, 15, 30))


def test_spring_forward_night() -> None:
    # New York, 2026-03-08: 02:00 EST (07:00 UTC) jumps to 03:00 EDT.
    at_0230 = window("America/New_York", Condition(start_time=2 * H + 30 * 60, end_time=4 * H))
    # 02:30 never shows on the clock that night: the window opens at the jump.
    assert next_opening(at_0230, utc(2026, 3, 8, 5, 0)) == utc(2026, 3, 8, 7, 0)
    assert not is_open(at_0230, utc(2026, 3, 8, 6, 59, 59))  # 01:59:59 EST
    assert is_open(at_0230, utc(2026, 3, 8, 7, 0))  # 03:00 EDT
    assert not is_open(at_0230, utc(2026, 3, 8, 8, 0))  # 04:00 EDT: one hour of calls, not two
    # The day after, 02:30 EDT is 06:30 UTC.
    assert next_opening(at_0230, utc(2026, 3, 8, 9, 0)) == utc(2026, 3, 9, 6, 30)
    nine = window("America/New_York", Condition(start_time=9 * H, end_time=17 * H))
    assert next_opening(nine, utc(2026, 3, 7, 23, 0)) == utc(2026, 3, 8, 13, 0)  # 09:00 EDT


def test_fall_back_night() -> None:
    # New York, 2026-11-01: 02:00 EDT (06:00 UTC) goes back to 01:00 EST.
    at_0130 = window("America/New_York", Condition(start_time=H + 30 * 60, end_time=2 * H))
    # 01:30 shows twice: open both times round.
    assert next_opening(at_0130, utc(2026, 11, 1, 4, 0)) == utc(2026, 11, 1, 5, 30)
    assert not is_open(at_0130, utc(2026, 11, 1, 6, 0))  # 01:00 EST
    assert next_opening(at_0130, utc(2026, 11, 1, 6, 0)) == utc(2026, 11, 1, 6, 30)
    assert is_open(at_0130, utc(2026, 11, 1, 6, 59, 59))
    # A window the clock goes back into opens at the change itself.
    early = window("America/New_York", Condition(start_time=30 * 60, end_time=H + 30 * 60))
    assert not is_open(early, utc(2026, 11, 1, 5, 45))  # 01:45 EDT
    assert next_opening(early, utc(2026, 11, 1, 5, 45)) == utc(2026, 11, 1, 6, 0)  # 01:00 EST
    nine = window("America/New_York", Condition(start_time=9 * H, end_time=17 * H))
    assert next_opening(nine, utc(2026, 10, 31, 22, 0)) == utc(2026, 11, 1, 14, 0)  # 09:00 EST


def test_never_opening_windows() -> None:
    assert next_opening(window("UTC"), utc(2026, 1, 1)) is None
    april_31 = window("UTC", Condition(month=4, start_mday=31))
    assert next_opening(april_31, utc(2026, 1, 1)) is None


def test_next_closing() -> None:
    office = window(
        "Europe/Berlin", Condition(start_time=9 * H, end_time=18 * H, start_dow=2, end_dow=6)
    )
    # Friday 2026-12-04 10:00 CET: closes at 18:00 CET (17:00 UTC).
    assert next_closing(office, utc(2026, 12, 4, 9)) == utc(2026, 12, 4, 17)
    # Closed already: the moment itself.
    assert next_closing(office, utc(2026, 12, 5, 9)) == utc(2026, 12, 5, 9)
    # Past midnight: Friday 22:00 -> 06:00 closes on Saturday at 06:00.
    night = window("UTC", Condition(start_time=22 * H, end_time=6 * H, start_dow=6))
    assert next_closing(night, utc(2026, 12, 5, 1)) == utc(2026, 12, 5, 6)
    # Two conditions back to back: the window stays open across the seam.
    seam = window(
        "UTC",
        Condition(start_time=8 * H, end_time=12 * H),
        Condition(start_time=12 * H, end_time=14 * H),
    )
    assert next_closing(seam, utc(2026, 12, 4, 9)) == utc(2026, 12, 4, 14)
    # Whole days: Monday to Friday closes at Saturday's midnight.
    weekdays = window("UTC", Condition(start_dow=2, end_dow=6))
    assert next_closing(weekdays, utc(2026, 12, 1, 12)) == utc(2026, 12, 5)
    # A datetime range ends at its end; always open: no closing within the horizon.
    ranged = window("UTC", Condition(end_datetime=datetime(2026, 12, 4, 12, 30)))
    assert next_closing(ranged, utc(2026, 12, 4, 12)) == utc(2026, 12, 4, 12, 30)
    assert next_closing(window("UTC", Condition()), utc(2026, 12, 4)) is None
    # The callee's zone: 18:00 in Tokyo is 09:00 UTC.
    assert next_closing(office, utc(2026, 12, 4, 1), "Asia/Tokyo") == utc(2026, 12, 4, 9)


def test_next_closing_across_dst() -> None:
    # New York, 2026-03-08: 02:00 EST (07:00 UTC) jumps to 03:00 EDT; a window until 02:30
    # closes at the jump.
    until_0230 = window("America/New_York", Condition(start_time=H, end_time=2 * H + 30 * 60))
    assert next_closing(until_0230, utc(2026, 3, 8, 6, 30)) == utc(2026, 3, 8, 7, 0)
    # 2026-11-01: 02:00 EDT (06:00 UTC) goes back to 01:00 EST; a window until 01:30 closes
    # at its first 01:30 (05:30 UTC).
    until_0130 = window("America/New_York", Condition(start_time=H, end_time=H + 30 * 60))
    assert next_closing(until_0130, utc(2026, 11, 1, 5, 10)) == utc(2026, 11, 1, 5, 30)


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError):
        is_open(window("UTC", Condition()), datetime(2026, 1, 1))


# --- next_opening against a brute-force scan ----------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
MINUTE = 60


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    """Conditions on whole minutes (the scan below steps by minutes)."""
    maybe = draw
    start = maybe(st.none() | st.integers(0, 24 * 60 - 1).map(lambda m: m * MINUTE))
    end = maybe(st.none() | st.integers(1, 24 * 60).map(lambda m: m * MINUTE))
    if start is not None and end is not None and start == end:
        end = None
    return Condition(
        start_time=start,
        end_time=end,
        start_dow=maybe(st.none() | st.integers(1, 7)),
        end_dow=maybe(st.none() | st.integers(1, 7)),
        start_mday=maybe(st.none() | st.integers(1, 31)),
        end_mday=maybe(st.none() | st.integers(1, 31)),
    )


@st.composite
def datetime_ranges(draw: st.DrawFn) -> Condition:
    """A wall-clock range on whole minutes, around the DST changes the scan starts near."""
    start = draw(
        st.sampled_from([datetime(2026, 3, 8), datetime(2026, 3, 29), datetime(2026, 11, 1)])
    )
    start += timedelta(minutes=draw(st.integers(-3 * 24 * 60, 3 * 24 * 60)))
    length = timedelta(minutes=draw(st.integers(1, 3 * 24 * 60)))
    return Condition(
        start_datetime=draw(st.none() | st.just(start)),
        end_datetime=draw(st.none() | st.just(start + length)),
    )


@settings(max_examples=60, deadline=None)
@given(
    conds=st.lists(conditions() | datetime_ranges(), min_size=1, max_size=3),
    tz=st.sampled_from(ZONES),
    override=st.none() | st.sampled_from(ZONES),
    # Around the 2026 DST changes of these zones, and elsewhere.
    start=st.sampled_from(
        [utc(2026, 3, 7), utc(2026, 3, 28), utc(2026, 4, 4), utc(2026, 10, 24), utc(2026, 10, 31)]
    ),
    offset_minutes=st.integers(0, 2 * 24 * 60),
)
def test_next_opening_is_open_and_nothing_earlier_is(
    conds: list[Condition], tz: str, override: str | None, start: datetime, offset_minutes: int
) -> None:
    w = window(tz, *conds)
    after = start + timedelta(minutes=offset_minutes)
    found = next_opening(w, after, override, horizon_days=70)
    # Brute force, minute by minute (every boundary and DST change falls on a whole minute).
    moment, limit = after, after + timedelta(days=4)
    while moment < limit and not is_open(w, moment, override):
        moment += timedelta(minutes=1)
    if moment < limit:
        assert found == moment
    else:
        assert found is None or found >= limit
        if found is not None:
            assert is_open(w, found, override)
            assert not is_open(w, found - timedelta(seconds=1), override)


def test_stored_conditions_as_the_rules_see_them() -> None:
    stored = [
        {"start_time": "22:00:00", "end_time": "24:00:00", "start_dow": 6, "end_dow": 2},
        {"start_datetime": "2030-01-01 00:00:00", "end_time": "", "month": 0},
    ]
    w = window_from_fields("Europe/Berlin", stored)
    assert w.conditions == (
        Condition(start_time=22 * H, end_time=24 * H, start_dow=6, end_dow=2),
        Condition(start_datetime=datetime(2030, 1, 1)),
    )


@settings(max_examples=60, deadline=None)
@given(
    conds=st.lists(conditions() | datetime_ranges(), min_size=1, max_size=3),
    tz=st.sampled_from(ZONES),
    override=st.none() | st.sampled_from(ZONES),
    start=st.sampled_from(
        [utc(2026, 3, 7), utc(2026, 3, 28), utc(2026, 4, 4), utc(2026, 10, 24), utc(2026, 10, 31)]
    ),
    offset_minutes=st.integers(0, 2 * 24 * 60),
)
def test_next_closing_is_closed_and_open_until_then(
    conds: list[Condition], tz: str, override: str | None, start: datetime, offset_minutes: int
) -> None:
    w = window(tz, *conds)
    after = start + timedelta(minutes=offset_minutes)
    found = next_closing(w, after, override, horizon_days=8)
    moment, limit = after, after + timedelta(days=4)
    while moment < limit and is_open(w, moment, override):
        moment += timedelta(minutes=1)
    if moment < limit:
        assert found == moment
    else:
        assert found is None or found >= limit
