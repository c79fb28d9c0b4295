"""Calling windows (the API's intervals): when a queue may start calls, as wall-clock
conditions in a time zone. Pure rules, shared by the api (which validates them) and the
dispatcher (which will hold tasks outside their window): no grpc, sqlalchemy or nats here.

A window is open at a moment when its first matching condition matches the wall clock of
that moment in the window's time zone (or in a callee's own zone, when given); with no
condition matching, it is closed. A condition is either

- a datetime range, `start_datetime` ≤ wall clock < `end_datetime` (either end may be left
  out); it overrides every other part of the condition; or
- a time of day range, `start_time` ≤ time < `end_time` (absent: 00:00:00 and 24:00:00), on
  the dates that match its `month` and its inclusive ranges of days of the week
  (`start_dow`..`end_dow`, 1 = Sunday … 7 = Saturday) and of the month
  (`start_mday`..`end_mday`); an absent part matches every date, an absent end of a range is
  its start (one day). Ranges wrap: days of the week 6 → 2 are Friday to Monday, days of the
  month 25 → 5 run into the next month, and times 22:00:00 → 06:00:00 run past midnight.
  A time range that runs past midnight belongs to the date it starts on: Friday 22:00 → 06:00
  is open from Friday 22:00 to Saturday 06:00 (the date parts are checked against Friday).

Wall-clock semantics across DST: the window is open whenever the local clock reads a time it
allows. On a spring-forward night a window opening at 02:30 (a time that does not exist) opens
at the jump (03:00 local); on a fall-back night the repeated hour is open (or closed) both
times round.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

SECONDS_PER_DAY = 86_400
# How far ahead next_opening looks: a window that opens only on 29 February of a given day of
# the week opens at least once in 28 years (40 around 2100).
HORIZON_DAYS = 366 * 41

_TIME_OF_DAY = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})")
_WALL_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Condition:
    """One condition; None means the part is absent. Times are seconds since local midnight
    (end_time may be 86400, the end of the day); datetimes are naive wall-clock times."""

    start_time: int | None = None
    end_time: int | None = None
    start_dow: int | None = None
    end_dow: int | None = None
    start_mday: int | None = None
    end_mday: int | None = None
    month: int | None = None
    start_datetime: datetime | None = None
    end_datetime: datetime | None = None

    @property
    def is_datetime_range(self) -> bool:
        return self.start_datetime is not None or self.end_datetime is not None


@dataclass(frozen=True)
class CallingWindow:
    """An interval: its IANA time zone and its conditions, in order (the first match wins)."""

    timezone: str
    conditions: tuple[Condition, ...]


# --- parsing (the api's validation uses these, so that it accepts exactly what runs) ----------


def parse_time_of_day(text: str, *, end: bool = False) -> int:
    """`HH:MM:SS` as seconds since midnight; `24:00:00` only as an end. ValueError if not."""
    match = _TIME_OF_DAY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day HH:MM:SS")
    hours, minutes, seconds = (int(part) for part in match.groups())
    if end and (hours, minutes, seconds) == (24, 0, 0):
        return SECONDS_PER_DAY
    if hours > 23 or minutes > 59 or seconds > 59:
        limit = "00:00:00 to 23:59:59, or 24:00:00 as an end" if end else "00:00:00 to 23:59:59"
        raise ValueError(f"{text!r} is not a time of day: from {limit}")
    return hours * 3600 + minutes * 60 + seconds


def format_time_of_day(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def parse_wall_datetime(text: str) -> datetime:
    """`YYYY-MM-DD HH:MM[:SS]` as a naive wall-clock datetime. ValueError if not."""
    for fmt in _WALL_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a date and time YYYY-MM-DD HH:MM:SS")


def format_wall_datetime(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment:%m-%d %H:%M:%S}"


def condition_from_fields(fields: Mapping[str, Any]) -> Condition:
    """A condition as the API shows and stores it ("" and 0 are absent parts; validated when
    it was written) as the rules evaluate it."""

    def text(name: str) -> str:
        return str(fields.get(name) or "")

    def number(name: str) -> int | None:
        return int(fields.get(name) or 0) or None

    return Condition(
        start_time=parse_time_of_day(text("start_time")) if text("start_time") else None,
        end_time=parse_time_of_day(text("end_time"), end=True) if text("end_time") else None,
        start_dow=number("start_dow"),
        end_dow=number("end_dow"),
        start_mday=number("start_mday"),
        end_mday=number("end_mday"),
        month=number("month"),
        start_datetime=(
            parse_wall_datetime(text("start_datetime")) if text("start_datetime") else None
        ),
        end_datetime=parse_wall_datetime(text("end_datetime")) if text("end_datetime") else None,
    )


def window_from_fields(timezone: str, conditions: Iterable[Mapping[str, Any]]) -> CallingWindow:
    """A stored interval (its timezone and conditions column) as the rules evaluate it."""
    return CallingWindow(timezone, tuple(condition_from_fields(c) for c in conditions))


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_known_timezone(name: str) -> bool:
    """An IANA time zone name that this machine's time zone database has (case matters)."""
    return name in _known_timezones()


@functools.lru_cache(maxsize=512)
def zone(name: str) -> tzinfo:
    """The time zone of an IANA name; ValueError for a name the database does not have."""
    if not is_known_timezone(name):
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Europe/Berlin)")
    return zoneinfo.ZoneInfo(name)


# --- evaluation --------------------------------------------------------------------------------


def _in_range(value: int, start: int | None, end: int | None) -> bool:
    """start..end inclusive, wrapping when end < start; an absent end is the start."""
    low = start if start is not None else end
    high = end if end is not None else start
    if low is None or high is None:
        return True
    if low <= high:
        return low <= value <= high
    return value >= low or value <= high


def day_of_week(day: date) -> int:
    """1 = Sunday … 7 = Saturday."""
    return day.isoweekday() % 7 + 1


def _date_matches(condition: Condition, day: date) -> bool:
    if condition.month is not None and day.month != condition.month:
        return False
    if not _in_range(day_of_week(day), condition.start_dow, condition.end_dow):
        return False
    return _in_range(day.day, condition.start_mday, condition.end_mday)


def _time_bounds(condition: Condition) -> tuple[int, int]:
    start = condition.start_time if condition.start_time is not None else 0
    end = condition.end_time if condition.end_time is not None else SECONDS_PER_DAY
    return start, end


def condition_matches(condition: Condition, wall: datetime) -> bool:
    """Whether the condition allows this wall-clock time (naive)."""
    if condition.is_datetime_range:
        if condition.start_datetime is not None and wall < condition.start_datetime:
            return False
        return condition.end_datetime is None or wall < condition.end_datetime
    start, end = _time_bounds(condition)
    seconds = wall.hour * 3600 + wall.minute * 60 + wall.second
    if start < end:
        return start <= seconds < end and _date_matches(condition, wall.date())
    # Past midnight: the range belongs to the date it starts on.
    if seconds >= start:
        return _date_matches(condition, wall.date())
    if seconds < end:
        return _date_matches(condition, wall.date() - _DAY)
    return False


def _wall(moment: datetime, tz: tzinfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def _aware_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a calling window is evaluated at an aware datetime (UTC)")
    return moment.astimezone(UTC)


def _zone_of(window: CallingWindow, timezone_override: str | None) -> tzinfo:
    return zone(timezone_override or window.timezone)


def matching_condition(
    window: CallingWindow, at_utc: datetime, timezone_override: str | None = None
) -> int | None:
    """The index of the first condition that matches at this moment; None: closed."""
    wall = _wall(_aware_utc(at_utc), _zone_of(window, timezone_override))
    return next(
        (i for i, c in enumerate(window.conditions) if condition_matches(c, wall)),
        None,
    )


def is_open(window: CallingWindow, at_utc: datetime, timezone_override: str | None = None) -> bool:
    """Whether calls may start at this moment: some condition matches its wall-clock time in
    the window's time zone, or in `timezone_override` (the callee's zone) when given."""
    return matching_condition(window, at_utc, timezone_override) is not None


def _open_at(window: CallingWindow, tz: tzinfo, moment: datetime) -> bool:
    wall = _wall(moment, tz)
    return any(condition_matches(c, wall) for c in window.conditions)


def _offset(tz: tzinfo, moment: datetime) -> timedelta | None:
    return moment.astimezone(tz).utcoffset()


def _transition(tz: tzinfo, low: datetime, high: datetime) -> datetime:
    """The first whole second in (low, high] with high's UTC offset (low's differs)."""
    target = _offset(tz, high)
    low_s, high_s = int(low.timestamp()), int(high.timestamp())
    while high_s - low_s > 1:
        middle = (low_s + high_s) // 2
        if _offset(tz, datetime.fromtimestamp(middle, UTC)) == target:
            high_s = middle
        else:
            low_s = middle
    return datetime.fromtimestamp(high_s, UTC)


def _instants(wall: datetime, tz: tzinfo) -> list[datetime]:
    """The UTC moments at which the local clock first reads `wall`: one, two when the clock
    goes back over it (fall-back), or, when the clock jumps over it (spring-forward), the
    moment of the jump."""
    early = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    late = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    found = sorted({u for u in (early, late) if _wall(u, tz) == wall})
    if found:
        return found
    low, high = min(early, late), max(early, late)
    return [_transition(tz, low, high)]


def _date_relevant(condition: Condition, day: date) -> bool:
    """Whether the condition can match at some time whose wall-clock date is `day`."""
    if condition.is_datetime_range:
        start, end = condition.start_datetime, condition.end_datetime
        return (start is None or start.date() <= day) and (end is None or day <= end.date())
    return _date_matches(condition, day) or _date_matches(condition, day - _DAY)


def _candidates(window: CallingWindow, tz: tzinfo, day: date) -> Iterator[datetime]:
    """Moments of `day` (local) at which the window may open: where a condition's range
    starts on the wall clock, and where the clock jumps (a DST change)."""
    relevant = False
    for condition in window.conditions:
        if _date_relevant(condition, day):
            relevant = True
        if condition.is_datetime_range:
            if condition.start_datetime is not None and condition.start_datetime.date() == day:
                yield from _instants(condition.start_datetime, tz)
        elif _date_matches(condition, day):
            start, _ = _time_bounds(condition)
            yield from _instants(datetime.combine(day, time()) + timedelta(seconds=start), tz)
    if relevant:
        midnight = datetime.combine(day, time())
        begin = _instants(midnight, tz)[0]
        end = _instants(midnight + _DAY, tz)[0]
        if _offset(tz, begin) != _offset(tz, end):
            yield _transition(tz, begin, end)


def next_opening(
    window: CallingWindow,
    after_utc: datetime,
    timezone_override: str | None = None,
    *,
    horizon_days: int = HORIZON_DAYS,
) -> datetime | None:
    """The first moment at or after `after_utc` at which the window is open (`after_utc`
    itself when it is open then), in UTC; None when it does not open within `horizon_days`
    (no datetime range ahead, a 31 April, …)."""
    after = _aware_utc(after_utc)
    tz = _zone_of(window, timezone_override)
    if _open_at(window, tz, after):
        return after
    last = _wall(after + timedelta(days=horizon_days), tz).date()
    return _first_change(window, tz, after, last, _candidates, to_open=True)


def _closing_candidates(window: CallingWindow, tz: tzinfo, day: date) -> Iterator[datetime]:
    """Moments at which the window may close that fall on `day` (local) or just after its
    time ranges: where a condition's range ends on the wall clock (a time range past
    midnight ends the next day; 24:00:00 is the next midnight), every midnight (the date
    parts change), and where the clock jumps (a DST change)."""
    midnight = datetime.combine(day, time())
    yield from _instants(midnight, tz)
    for condition in window.conditions:
        if condition.is_datetime_range:
            if condition.end_datetime is not None and condition.end_datetime.date() == day:
                yield from _instants(condition.end_datetime, tz)
        elif _date_matches(condition, day):
            start, end = _time_bounds(condition)
            ends_on = midnight if start < end else midnight + _DAY
            yield from _instants(ends_on + timedelta(seconds=end), tz)
    begin = _instants(midnight, tz)[0]
    end_of_day = _instants(midnight + _DAY, tz)[0]
    if _offset(tz, begin) != _offset(tz, end_of_day):
        yield _transition(tz, begin, end_of_day)


def next_closing(
    window: CallingWindow,
    after_utc: datetime,
    timezone_override: str | None = None,
    *,
    horizon_days: int = 8,
) -> datetime | None:
    """The first moment at or after `after_utc` at which the window is closed (`after_utc`
    itself when it is closed then), in UTC; None when it stays open for `horizon_days`.

    The window's state changes only at the candidates above (range ends, midnights, DST
    changes; openings only open it), so the first candidate at which no condition matches
    is where it closes. The horizon is short by default: the dispatcher needs the closing
    only for a dial request, which is never dialed after its attempt's lease anyway."""
    after = _aware_utc(after_utc)
    tz = _zone_of(window, timezone_override)
    if not _open_at(window, tz, after):
        return after
    try:
        last = _wall(after + timedelta(days=horizon_days), tz).date()
    except OverflowError:  # the end of the calendar (year 9999)
        return None
    return _first_change(window, tz, after, last, _closing_candidates, to_open=False)


def _first_change(
    window: CallingWindow,
    tz: tzinfo,
    after: datetime,
    last: date,
    candidates: Callable[[CallingWindow, tzinfo, date], Iterator[datetime]],
    *,
    to_open: bool,
) -> datetime | None:
    """The earliest of the days' `candidates` after `after`, up to the local day `last`, at
    which the window is open (`to_open`) or closed; None if none is."""
    best: datetime | None = None
    found_on: date | None = None
    day = _wall(after, tz).date() - _DAY  # a range that started yesterday may change today
    try:
        while day <= last:
            # The clock may go back over midnight, and a range past midnight ends the day
            # after its own: look one day past the first find.
            if found_on is not None and day > found_on + _DAY:
                break
            for candidate in candidates(window, tz, day):
                if candidate > after and (best is None or candidate < best):
                    if _open_at(window, tz, candidate) == to_open:
                        best = candidate
            if best is not None and found_on is None:
                found_on = day
            day += _DAY
    except OverflowError:  # the end of the calendar (year 9999)
        pass
    return best
